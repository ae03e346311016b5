"""The course's two tools as plain functions a framework can wrap: the same code as `durable_agent/tools.py`.

A tool that rejects its input (`ToolInputError`) answers "Error: ..." instead of raising, as the course's
`execute_tool` activity does, so the model reads the reason and explains it; any other exception is a bug,
and the framework's retry policy retries it. Each framework wraps these as it likes (an activity, a tool).
"""

from __future__ import annotations

from durable_agent.tools import ToolInputError, run_tool

INSTRUCTIONS = "You are a helpful assistant. Use the calculator for arithmetic and the weather tool for weather."


def call_tool(name: str, **arguments: str) -> str:
    try:
        return run_tool(name, arguments)
    except ToolInputError as err:
        return f"Error: {err}"


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression such as '25 + 17' or '(2 ** 10) / 4'.

    Args:
        expression: the arithmetic expression, using numbers, + - * / // % ** and parentheses
    """
    return call_tool("calculator", expression=expression)


def weather(city: str) -> str:
    """Get the current weather for a city (simulated offline data).

    Args:
        city: the city name, e.g. 'Seattle'
    """
    return call_tool("weather", city=city)
