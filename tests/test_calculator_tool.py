"""The demo's calculator tool: values, errors for every malformed call, and loading through veRL's tool config."""

from __future__ import annotations

import asyncio

import pytest

from verl_resrl.demo.calculator_tool import (
    MAX_EXPRESSION_CHARS,
    TOOL_CONFIG_PATH,
    TOOL_NAME,
    CalculatorTool,
    calculator_response,
    evaluate_expression,
)


@pytest.mark.parametrize("expression, value", [("12+7-5", 14), ("0", 0), ("3-9", -6), (" 4 + 5 ", 9),
                                               ("999999999999+1", 10**12)])
def test_values(expression, value):
    assert evaluate_expression(expression) == value
    assert calculator_response({"expression": expression}) == str(value)


@pytest.mark.parametrize("arguments, message", [
    ({}, "missing argument 'expression'"),
    ("12+7", "missing argument 'expression'"),
    ({"expression": 12}, "must be a string, got int"),
    ({"expression": None}, "must be a string, got NoneType"),
    ({"expression": ""}, "not a sum or difference"),
    ({"expression": "2*3"}, "not a sum or difference"),
    ({"expression": "__import__('os').system('id')"}, "not a sum or difference"),
    ({"expression": "1++2"}, "not a sum or difference"),
    ({"expression": "-1+2"}, "not a sum or difference"),
    ({"expression": "\u0663+1"}, "not a sum or difference"),  # a non-ASCII digit
    ({"expression": "1" * 13}, "not a sum or difference"),  # more than 12 digits in a term
    ({"expression": "1+" * 40 + "1"}, f"longer than {MAX_EXPRESSION_CHARS}"),
])
def test_malformed_calls_get_an_error_text(arguments, message):
    text = calculator_response(arguments)
    assert text.startswith("error: ") and message in text, text


def test_tool_through_verls_tool_config():
    from verl.tools.tool_registry import load_all_tools

    (tool,) = load_all_tools(tool_config_path=TOOL_CONFIG_PATH, function_tool_path=None)
    assert isinstance(tool, CalculatorTool) and tool.name == TOOL_NAME
    assert tool.tool_schema.function.parameters.required == ["expression"]
    response, reward, metrics = asyncio.run(tool.execute("id", {"expression": "40-2"}))
    assert (response.text, reward, metrics) == ("38", 0.0, {"error": False})
    response, _, metrics = asyncio.run(tool.execute("id", {"expression": "x"}))
    assert response.text.startswith("error:") and metrics == {"error": True}
