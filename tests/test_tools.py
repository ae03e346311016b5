"""The tools: a safe calculator (no eval), simulated weather, and the registry."""

from __future__ import annotations

import pytest

from durable_agent import tools
from durable_agent.tools import ToolInputError, UnknownToolError, calculator, run_tool, weather


@pytest.mark.parametrize("expression, expected", [
    ("25 + 17", "42"), ("100 / 5", "20"), ("25 * 4", "100"), ("(2 + 3) * 4", "20"), ("2 ** 10", "1024"),
    ("2^10", "1024"), ("7 // 2", "3"), ("7 % 4", "3"), ("-5 + 3", "-2"), ("10 / 4", "2.5"),
    ("1 / 3", "0.3333333333"), ("3 × 4 ÷ 2", "6"), ("  1.5 + 1.5 ", "3"), ("2 ** -1", "0.5"),
])
def test_calculator_results(expression, expected):
    assert calculator(expression) == expected


@pytest.mark.parametrize("expression, message", [
    ("__import__('os')", "not Call"),
    ("__import__('os').system('echo hacked')", "not Call"),
    ("open('/etc/passwd').read()", "not Call"),
    ("(1).__class__", "not Attribute"),
    ("x + 1", "not Name"),
    ("[1, 2]", "not List"),
    ("lambda: 1", "not Lambda"),
    ("True + 1", "not Constant"),
    ("'a' * 3", "not Constant"),
    ("9**9**9", "exponent 387420489 is too large"),
    ("10 ** 101", "too large"),
    ("2 ** 1001", "exponent 1001 is too large"),
    ("99999999999 ** 999", "too large"),
    ("10**50 * 10**60", "too large"),
    ("1e308 * 10", "too large"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("0 ** -1", "zero cannot be raised"),
    ("(-8) ** 0.5", "not a real number"),
    ("", "empty"),
    ("1 +", "not an arithmetic expression"),
    ("1" + " + 1" * 200, "longer than 200"),
])
def test_calculator_rejects_hostile_and_huge_input(expression, message):
    with pytest.raises(ToolInputError, match=message):
        calculator(expression)


def test_calculator_never_uses_eval():
    source = open(tools.__file__).read()
    assert "eval(" not in source.replace("_evaluate(", "").replace('mode="eval"', "")


def test_weather_is_deterministic_and_simulated():
    first = weather("Seattle")
    assert first == weather("  seattle ") and first.startswith("Seattle: ") and first.endswith("(simulated)")
    assert weather("new york").startswith("New York: ")
    reports = {weather(city) for city in ["Seattle", "Paris", "Tokyo", "Lima", "Oslo", "Cairo"]}
    assert len({report.split(": ", 1)[1] for report in reports}) > 1  # not one canned answer for all
    with pytest.raises(ToolInputError, match="empty"):
        weather("  ")


def test_registry_adds_a_tool_with_one_decorator():
    @tools.tool("Shout a word.", word="the word to shout")
    def shout(word: str) -> str:
        return word.upper()

    try:
        spec = next(s for s in tools.tool_specs() if s["function"]["name"] == "shout")
        assert spec["function"]["parameters"]["required"] == ["word"]
        assert run_tool("shout", {"word": "hi", "extra": 1}) == "HI"
        with pytest.raises(ToolInputError, match="takes the arguments"):
            run_tool("shout", {})
    finally:
        del tools.TOOLS["shout"]


def test_unknown_tool_is_named_clearly():
    with pytest.raises(UnknownToolError, match="unknown tool 'rm_rf'; available tools: calculator, weather"):
        run_tool("rm_rf", {})
