"""A calculator tool for veRL's tool agent loop: integer sums and differences of the demo arithmetic task.

``CalculatorTool`` is a ``verl.tools.base_tool.BaseTool`` with the OpenAI function schema
``calculator(expression: string)``. The model calls it in the Hermes format the agent loop's ``hermes`` parser
reads, ``<tool_call>{"name": "calculator", "arguments": {"expression": "12+7-5"}}</tool_call>``, and the tool
answers with the value (``14``). An expression it cannot evaluate (not a string, empty, longer than
:data:`MAX_EXPRESSION_CHARS`, anything but non-negative integers joined by ``+`` / ``-``) gets an ``error: ...``
text instead, so a malformed call still costs one short tool turn and never raises.

Load it with ``actor_rollout_ref.rollout.multi_turn.tool_config_path=<TOOL_CONFIG_PATH>`` (the YAML next to
this file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from verl_resrl import verl_internals

BaseTool = verl_internals.resolve("demo.BaseTool")
OpenAIFunctionToolSchema = verl_internals.resolve("demo.OpenAIFunctionToolSchema")
ToolResponse = verl_internals.resolve("demo.ToolResponse")

TOOL_NAME = "calculator"
TOOL_CONFIG_PATH = str(Path(__file__).with_name("calculator_tool.yaml"))
MAX_EXPRESSION_CHARS = 64
MAX_DIGITS_PER_TERM = 12
TOOL_SCHEMA = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": "Evaluate a sum or difference of non-negative integers, e.g. 12+7-5.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string", "description": "integers joined by + or -"}},
            "required": ["expression"],
        },
    },
}

_EXPRESSION = re.compile(rf"[0-9]{{1,{MAX_DIGITS_PER_TERM}}}(?:[+-][0-9]{{1,{MAX_DIGITS_PER_TERM}}})*")
_TERM = re.compile(r"[+-]?[0-9]+")


def evaluate_expression(expression: Any) -> int:
    """The value of ``expression`` (``"12+7-5"`` -> 14; spaces ignored); ``ValueError`` naming what is wrong."""
    if not isinstance(expression, str):
        raise ValueError(f"expression must be a string, got {type(expression).__name__}")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValueError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    compact = expression.replace(" ", "")
    if not _EXPRESSION.fullmatch(compact):
        raise ValueError(f"not a sum or difference of integers: {expression!r}")
    return sum(int(term) for term in _TERM.findall(compact))


def calculator_response(parameters: Any) -> str:
    """The tool's answer to the call arguments ``parameters`` (a dict): the value, or ``error: <reason>``."""
    if not isinstance(parameters, dict) or "expression" not in parameters:
        return "error: missing argument 'expression'"
    try:
        return str(evaluate_expression(parameters["expression"]))
    except ValueError as err:
        return f"error: {err}"


class CalculatorTool(BaseTool):
    """Stateless calculator; reward 0 per call (the task's reward scores the final answer)."""

    def __init__(self, config: dict, tool_schema=None):
        self.tool_schema = tool_schema or OpenAIFunctionToolSchema.model_validate(TOOL_SCHEMA)
        super().__init__(config, self.tool_schema)

    def get_openai_tool_schema(self):
        return self.tool_schema

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs) -> tuple[Any, float, dict]:
        text = calculator_response(parameters)
        return ToolResponse(text=text), 0.0, {"error": text.startswith("error:")}
