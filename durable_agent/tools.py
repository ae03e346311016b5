"""The agent's tools: pure functions, each registered with one decorator.

Primitive 2 (managed side effects): the workflow never calls these functions itself; it asks the
`execute_tool` activity to, so every call is recorded in the event history and retried on failure.

A tool raises `ToolInputError` for input it rejects (the message goes back to the model as the tool's
result, so the model can explain it); any other exception is a bug, which Temporal retries until the code
is fixed.
"""

from __future__ import annotations

import ast
import hashlib
import math
import operator
from dataclasses import dataclass
from typing import Any, Callable


class ToolInputError(ValueError):
    """The tool understood the request and refuses it (bad or hostile input)."""


class UnknownToolError(LookupError):
    """The model asked for a tool that is not registered."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the keyword arguments
    fn: Callable[..., str]
    examples: tuple[str, ...] = ()  # questions a user might ask that need this tool (shown by chat UIs)

    def spec(self) -> dict[str, Any]:
        """The OpenAI-style function description given to the model."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


TOOLS: dict[str, Tool] = {}


def tool(description: str, *, examples: tuple[str, ...] | list[str] = (),
         **properties: str) -> Callable[[Callable[..., str]], Callable[..., str]]:
    """Register a function as a tool. Each keyword names a required string argument and describes it;
    `examples` (optional) are questions a user might ask that need the tool.

    >>> @tool("Shout a word.", examples=["Shout 'hello'"], word="the word to shout")
    ... def shout(word: str) -> str:
    ...     return word.upper()
    """
    if isinstance(examples, str):
        raise TypeError("examples is a list of questions, not one string: examples=['What is 2 + 2?']")

    def register(fn: Callable[..., str]) -> Callable[..., str]:
        schema = {
            "type": "object",
            "properties": {name: {"type": "string", "description": text} for name, text in properties.items()},
            "required": list(properties),
        }
        TOOLS[fn.__name__] = Tool(fn.__name__, description, schema, fn, tuple(examples))
        return fn

    return register


def tool_specs() -> list[dict[str, Any]]:
    return [t.spec() for t in TOOLS.values()]


def run_tool(name: str, arguments: dict[str, Any]) -> str:
    """Run a registered tool. Raises UnknownToolError, ToolInputError, or whatever a buggy tool raises."""
    if name not in TOOLS:
        raise UnknownToolError(f"unknown tool {name!r}; available tools: {', '.join(sorted(TOOLS))}")
    found = TOOLS[name]
    expected = list(found.parameters["properties"])
    if not isinstance(arguments, dict) or not set(expected) <= set(arguments):
        raise ToolInputError(f"{name} takes the arguments {expected}, got {arguments!r}")
    return found.fn(**{key: str(arguments[key]) for key in expected})  # extra arguments are ignored


# --- calculator: arithmetic with Python's `ast`, never `eval` ---------------------------------------------

MAX_EXPRESSION_LENGTH = 200
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 10**100

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_SYMBOLS = {"×": "*", "÷": "/", "−": "-", "^": "**"}


def _check_size(value: float | int) -> float | int:
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolInputError("the result is not a finite number")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolInputError("the result is too large (limit 1e100)")
    return value


def _power(base: float | int, exponent: float | int) -> float | int:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolInputError(f"the exponent {exponent} is too large (limit {MAX_EXPONENT})")
    if abs(base) > 1 and exponent > 0 and exponent * math.log10(abs(base)) > 100:
        raise ToolInputError("the result is too large (limit 1e100)")
    if base == 0 and exponent < 0:
        raise ToolInputError("zero cannot be raised to a negative power")
    result = base**exponent
    if isinstance(result, complex):
        raise ToolInputError("the result is not a real number")
    return result


def _evaluate(node: ast.AST) -> float | int:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _check_size(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            return _check_size(_power(left, right))
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise ToolInputError("division by zero")
        return _check_size(_BINARY[type(node.op)](left, right))
    raise ToolInputError(f"only numbers and + - * / // % ** ( ) are allowed, not {type(node).__name__}")


def format_number(value: float | int) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


@tool("Evaluate an arithmetic expression such as '25 + 17' or '(2 ** 10) / 4'.",
      examples=["What is 25 + 17?", "What is (2 ** 10) / 4?"],
      expression="the arithmetic expression, using numbers, + - * / // % ** and parentheses")
def calculator(expression: str) -> str:
    text = expression.strip()
    for symbol, python in _SYMBOLS.items():
        text = text.replace(symbol, python)
    if not text:
        raise ToolInputError("the expression is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ToolInputError(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise ToolInputError(f"{expression!r} is not an arithmetic expression") from None
    return format_number(_evaluate(tree))


# --- weather: deterministic, simulated data (no network) ---------------------------------------------------

_CONDITIONS = ["sunny", "partly cloudy", "cloudy", "light rain", "heavy rain", "windy", "foggy", "snow"]


@tool("Get the current weather for a city (simulated offline data).",
      examples=["What's the weather in Seattle?", "What's the weather in Paris and what is 12 * 3?"], city="the city name, e.g. 'Seattle'")
def weather(city: str) -> str:
    name = " ".join(city.split()).strip(" ?.!,")
    if not name:
        raise ToolInputError("the city name is empty")
    if len(name) > 80:
        raise ToolInputError("the city name is longer than 80 characters")
    # The same city always gets the same report: a hash, not a web service. Documented as simulated.
    digest = hashlib.sha256(name.lower().encode()).digest()
    condition = _CONDITIONS[digest[0] % len(_CONDITIONS)]
    temp_c = digest[1] % 36 - 5
    if condition == "snow":
        temp_c = min(temp_c, 0)
    return f"{name.title()}: {condition}, {temp_c}°C (simulated)"
