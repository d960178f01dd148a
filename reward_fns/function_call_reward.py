"""Function-calling reward for veRL 0.9.1 (``reward.custom_reward_function.path/name=compute_score``).

``ground_truth`` is a JSON string (or list) in the Berkeley Function Calling Leaderboard's possible-answer
format: one ``{function_name: {argument: [allowed values]}}`` per expected call, ``""`` among the allowed
values marking an optional argument. The response scores 1 when its calls match, else 0:

* **calls are read** from Hermes / Qwen ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks
  (what veRL's ``hermes`` tool parser reads; ``arguments`` may also be a JSON string), or, when there is no
  such block, from BFCL's Python-call syntax ``[f(a=1), g(b="x")]`` (optionally in a ```` ``` ```` fence).
  Anything before a final ``</think>`` is ignored. The Python syntax is parsed with ``ast`` and each argument
  with ``ast.literal_eval`` (plus negative numbers); nothing is evaluated. A malformed or truncated block,
  positional arguments, or more than ``MAX_CALLS`` calls make the response unparseable: score 0.
* **calls are checked** by BFCL's own AST checker (``parallel_function_checker_no_order`` from the
  ``bfcl-eval`` package, the leaderboard's code): every expected call must be matched by a distinct model
  call, in any order, with the same number of calls; argument types are checked against the function's
  schema (an ``int`` is accepted for a ``float``, never a ``str`` for an ``int``), strings compare without
  case, spaces and ``,./-_*^`` as the leaderboard does, required and non-optional arguments must be present,
  unknown ones are rejected.

Why BFCL's checker and not veRL's ``rlla.py``: ``rlla`` scores partial credit against one exact gold call and
has no notion of allowed values or types. BFCL's checker module imports the leaderboard's whole model-handler
stack (API clients: anthropic, openai, ...) only to look up whether a model renames dotted functions; it is
loaded from the installed package with that one lookup answered by a stand-in (no renaming), so only
``bfcl-eval`` itself is needed, installed ``--no-deps``: ``pip install --no-deps bfcl-eval==2026.3.23``.
BFCL's own output decoder (``model_handler/utils.py: ast_parse``) is not reused: it ``eval``s arithmetic and
lambda nodes of the model's output.

Function schemas (for the type checks) come from ``extra_info["functions"]`` (BFCL ``function`` list, as a
JSON string or list; ``recipes/prepare_fc_data.py`` writes it); without them a schema is inferred from the
allowed values (type of the first non-empty value; arguments without ``""`` required).

Config (``reward_kwargs``): ``reward_style`` ``"binary"`` (1 / 0, default) or ``"signed"`` (+1 / -1).
Returns ``{"score": float, "acc": float, "parsed": float}`` (``parsed``: 1.0 when calls were read). A
ground truth that is not valid possible-answer JSON raises ``ValueError`` naming the sample: it is a data
error, not a model error.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import sys
import threading
import types
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_RESPONSE_CHARS = 50_000
MAX_CALLS = 64  # BFCL's largest expected set is far smaller; hundreds of calls are scored 0 unparsed
REWARD_STYLES = {"binary": (1.0, 0.0), "signed": (1.0, -1.0)}
CHECKER_MODEL_NAME = "verl-resrl"
_TOOL_CALL_OPEN, _TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"


class UnparseableCalls(ValueError):
    """The response does not hold well-formed calls."""


# --- BFCL's checker --------------------------------------------------------------------------------------------

_CHECKER = None
_CHECKER_LOCK = threading.Lock()


def bfcl_checker() -> types.ModuleType:
    """BFCL's ``ast_checker`` module, loaded once from the installed ``bfcl-eval`` (see module docstring)."""
    global _CHECKER
    with _CHECKER_LOCK:
        if _CHECKER is not None:
            return _CHECKER
        spec = importlib.util.find_spec("bfcl_eval")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the function-call reward needs BFCL's checker: "
                              "pip install --no-deps bfcl-eval==2026.3.23")
        path = Path(spec.submodule_search_locations[0]) / "eval_checker" / "ast_eval" / "ast_checker.py"
        stand_in_name = "bfcl_eval.constants.model_config"
        previous = sys.modules.get(stand_in_name)
        stand_in = types.ModuleType(stand_in_name)
        if previous is None:
            stand_in.MODEL_CONFIG_MAPPING = {CHECKER_MODEL_NAME: types.SimpleNamespace(underscore_to_dot=False)}
            sys.modules[stand_in_name] = stand_in
        try:
            module_spec = importlib.util.spec_from_file_location("resrl_bfcl_ast_checker", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        finally:
            if previous is None:
                sys.modules.pop(stand_in_name, None)
                constants = sys.modules.get("bfcl_eval.constants")
                if getattr(constants, "model_config", None) is stand_in:
                    delattr(constants, "model_config")
        if previous is not None:
            module.MODEL_CONFIG_MAPPING = {**module.MODEL_CONFIG_MAPPING,
                                           CHECKER_MODEL_NAME: types.SimpleNamespace(underscore_to_dot=False)}
        _CHECKER = module
        return module


# --- reading the model's calls ---------------------------------------------------------------------------------

def _strip_thinking(text: str) -> str:
    end = text.rfind("</think>")
    return text[end + len("</think>"):] if end != -1 else text


def parse_tool_call_blocks(text: str) -> list[dict] | None:
    """Calls from ``<tool_call>`` blocks as ``[{name: {arg: value}}]``; None when there is no block.

    Raises UnparseableCalls on a truncated block, invalid JSON, or a block that is not ``{name, arguments}``.
    """
    if _TOOL_CALL_OPEN not in text:
        return None
    calls, position = [], 0
    while True:
        start = text.find(_TOOL_CALL_OPEN, position)
        if start == -1:
            break
        end = text.find(_TOOL_CALL_CLOSE, start)
        if end == -1:
            raise UnparseableCalls("unterminated <tool_call> block")
        if len(calls) >= MAX_CALLS:
            raise UnparseableCalls(f"more than {MAX_CALLS} calls")
        body = text[start + len(_TOOL_CALL_OPEN):end].strip()
        try:
            call = json.loads(body)
            arguments = call.get("arguments", call.get("parameters", {})) if isinstance(call, dict) else None
            if isinstance(arguments, str):
                arguments = json.loads(arguments)
        except (ValueError, RecursionError) as error:
            raise UnparseableCalls(f"invalid JSON in <tool_call>: {error}") from None
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(arguments, dict):
            raise UnparseableCalls("a <tool_call> must be {\"name\": str, \"arguments\": object}")
        calls.append({call["name"]: arguments})
        position = end + len(_TOOL_CALL_CLOSE)
    return calls


def _dotted_name(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise UnparseableCalls("a called name must be a dotted identifier")
    parts.append(node.id)
    return ".".join(reversed(parts))


def _literal(node: ast.AST):
    try:
        return ast.literal_eval(node)  # literals, containers, signed numbers; never evaluates code
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise UnparseableCalls(f"argument {ast.dump(node)[:80]} is not a literal") from None


def parse_python_calls(text: str) -> list[dict]:
    """Calls in BFCL's Python syntax, ``[f(a=1), mod.g(b="x")]`` or a single ``f(a=1)``."""
    source = text.strip()
    if source.startswith("```"):
        source = source.split("\n", 1)[1] if "\n" in source else ""
        source = source.rsplit("```", 1)[0]
    source = source.strip()
    try:
        tree = ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        raise UnparseableCalls("not a Python call list") from None
    nodes = tree.body.elts if isinstance(tree.body, (ast.List, ast.Tuple)) else [tree.body]
    if len(nodes) > MAX_CALLS:
        raise UnparseableCalls(f"more than {MAX_CALLS} calls")
    calls = []
    for node in nodes:
        if not isinstance(node, ast.Call):
            raise UnparseableCalls("every element must be a call")
        if node.args or any(keyword.arg is None for keyword in node.keywords):
            raise UnparseableCalls("arguments must be given by name")
        calls.append({_dotted_name(node.func): {k.arg: _literal(k.value) for k in node.keywords}})
    return calls


def parse_calls(response: str) -> list[dict]:
    """The response's calls as ``[{name: {arg: value}}]``; raises UnparseableCalls."""
    text = _strip_thinking(response)
    calls = parse_tool_call_blocks(text)
    if calls is None:
        calls = parse_python_calls(text)
    if not calls:
        raise UnparseableCalls("no calls")
    return calls


# --- ground truth and schemas ----------------------------------------------------------------------------------

def parse_possible_answer(ground_truth) -> list[dict]:
    """BFCL possible answers ``[{name: {arg: [allowed...]}}]``; raises ValueError when malformed."""
    gold = json.loads(ground_truth) if isinstance(ground_truth, (str, bytes)) else ground_truth
    if hasattr(gold, "tolist"):
        gold = gold.tolist()
    if not isinstance(gold, list) or not gold:
        raise ValueError("possible answer must be a non-empty list of {function: {argument: [values]}}")
    for call in gold:
        if not (isinstance(call, dict) and len(call) == 1):
            raise ValueError(f"each possible answer must be one {{function: arguments}}, got {call!r:.100}")
        (arguments,) = call.values()
        if not isinstance(arguments, dict) or not all(isinstance(v, list) for v in arguments.values()):
            raise ValueError(f"arguments must map to lists of allowed values, got {arguments!r:.100}")
    return gold


_TYPE_NAMES = ((bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"), (list, "array"),
               (dict, "dict"))


def _type_name(value) -> str:
    return next((name for kind, name in _TYPE_NAMES if isinstance(value, kind)), "any")


def infer_functions(gold: list[dict]) -> list[dict]:
    """BFCL-style schemas from the allowed values alone (used when the sample carries no schemas)."""
    functions = {}
    for call in gold:
        (name, arguments), = call.items()
        properties, required = {}, []
        for argument, allowed in arguments.items():
            example = next((v for v in allowed if v != ""), "")
            schema = {"type": _type_name(example)}
            if schema["type"] == "array":
                item = next((x for v in allowed if isinstance(v, list) for x in v), "")
                schema["items"] = {"type": _type_name(item)}
            properties[argument] = schema
            if "" not in allowed:
                required.append(argument)
        functions[name] = {"name": name, "parameters": {"type": "dict", "properties": properties,
                                                        "required": required}}
    return list(functions.values())


def sample_functions(extra_info, gold: list[dict]) -> list[dict]:
    functions = (extra_info or {}).get("functions") if isinstance(extra_info, dict) else None
    if isinstance(functions, (str, bytes)):
        functions = json.loads(functions)
    if hasattr(functions, "tolist"):
        functions = functions.tolist()
    return functions if functions else infer_functions(gold)


# --- veRL entry point ------------------------------------------------------------------------------------------

_WARNED: set[str] = set()


def calls_match(calls: list[dict], gold: list[dict], functions: list[dict]) -> bool:
    """BFCL's order-insensitive check of ``calls`` against the possible answers."""
    checker = bfcl_checker()
    result = checker.parallel_function_checker_no_order(functions, calls, gold, checker.Language.PYTHON,
                                                        CHECKER_MODEL_NAME)
    return bool(result["valid"])


def compute_score(data_source, solution_str, ground_truth, extra_info=None, reward_style="binary",
                  **kwargs) -> dict:
    """Score one response: 1 / 0 (binary) or +1 / -1 (signed) for matching calls (module docstring)."""
    if reward_style not in REWARD_STYLES:
        raise ValueError(f"reward_style must be one of {sorted(REWARD_STYLES)}, got {reward_style!r}")
    correct_score, wrong_score = REWARD_STYLES[reward_style]
    try:
        gold = parse_possible_answer(ground_truth)
        functions = sample_functions(extra_info, gold)
        names = {f.get("name") for f in functions if isinstance(f, dict)}
        missing = [name for call in gold for name in call if name not in names]
        if missing:
            raise ValueError(f"possible answer names functions without a schema: {missing}")
    except (ValueError, TypeError) as error:
        index = extra_info.get("index") if isinstance(extra_info, dict) else None
        raise ValueError(f"function-call ground truth of sample {data_source}#{index}: {error}") from None
    parsed, correct = 0.0, False
    text = str(solution_str)
    if len(text) <= MAX_RESPONSE_CHARS:
        try:
            calls = parse_calls(text)
            parsed = 1.0
            correct = calls_match(calls, gold, functions)
        except UnparseableCalls:
            pass
        except ImportError:
            raise
        except Exception as error:  # noqa: BLE001 - a checker error on odd values must not kill the worker
            message = f"{type(error).__name__}: {error}"[:200]
            if message not in _WARNED and len(_WARNED) < 100:
                _WARNED.add(message)
                logger.warning("function-call reward: checker failed on a %s sample (scored wrong): %s",
                               data_source, message)
    return {"score": correct_score if correct else wrong_score, "acc": 1.0 if correct else 0.0, "parsed": parsed}
