#!/usr/bin/env python3
"""Berkeley Function Calling Leaderboard (BFCL v4) single-turn data -> veRL parquet files.

Reads the question and possible-answer JSON-lines files shipped inside the ``bfcl-eval`` package
(``pip install --no-deps bfcl-eval==2026.3.23``; the files are located, the package is not imported) or a
directory with the same layout (``--bfcl-dir``: ``BFCL_v4_<category>.json`` + ``possible_answer/``).

Categories: the leaderboard's single-turn Python AST categories. Train and test never share a category, as
the leaderboard scores each category on its own: by default the user-contributed ``live_*`` categories train
and the expert-written ones (``simple_python``, ``multiple``, ``parallel``, ``parallel_multiple``) test;
``--train-categories`` / ``--test-categories`` choose others (a category in both is refused).

Each output row has veRL 0.9.1's schema::

    prompt          [{"role": "system", "content": tool schemas + call format}, <BFCL's messages>...]
    data_source     "bfcl_<category>"  (per-category metrics)
    ability         "function_calling"
    reward_model    {"style": "rule", "ground_truth": <JSON: BFCL possible answer>}
    extra_info      {"index", "split", "id", "test_category", "functions": <JSON: BFCL function docs>}

The system message lists the tools as Qwen / Hermes chat templates do (``<tools>`` JSON, BFCL's types mapped
to JSON-schema types) and asks for ``<tool_call>`` blocks, which ``reward_fns/function_call_reward.py`` reads.

Usage::

    python recipes/prepare_fc_data.py --out-dir data/fc
    python recipes/prepare_fc_data.py --out-dir data/fc --train-categories live_simple --test-categories simple_python
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd

CATEGORIES = ("simple_python", "multiple", "parallel", "parallel_multiple", "live_simple", "live_multiple",
              "live_parallel", "live_parallel_multiple")
DEFAULT_TRAIN = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
DEFAULT_TEST = ("simple_python", "multiple", "parallel", "parallel_multiple")
FILE_PREFIX = "BFCL_v4_"

# BFCL's own type names -> JSON schema (what the model sees); the reward checks against BFCL's originals.
GORILLA_TO_JSON_SCHEMA = {"dict": "object", "float": "number", "tuple": "array", "any": "string",
                          "list": "array", "bool": "boolean"}

SYSTEM_PROMPT = (
    "You are an expert in composing functions. You are given a question and a set of possible functions. "
    "Based on the question, make one or more function calls to achieve the purpose.\n\n"
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n{{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}}\n</tool_call>"
)


class SchemaError(ValueError):
    """A BFCL file does not have the fields this script needs."""


def bfcl_data_dir() -> Path:
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("BFCL data needs the bfcl-eval package: pip install --no-deps bfcl-eval==2026.3.23")
    return Path(spec.submodule_search_locations[0]) / "data"


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError as error:
                raise SchemaError(f"{path}:{number}: invalid JSON ({error})") from None
    return rows


def json_schema_types(schema):
    """A copy of a BFCL parameter schema with BFCL type names mapped to JSON-schema ones."""
    if isinstance(schema, dict):
        out = {k: json_schema_types(v) for k, v in schema.items()}
        if isinstance(out.get("type"), str):
            out["type"] = GORILLA_TO_JSON_SCHEMA.get(out["type"], out["type"])
        return out
    if isinstance(schema, list):
        return [json_schema_types(v) for v in schema]
    return schema


def system_prompt(functions: list[dict]) -> str:
    tools = "\n".join(json.dumps({"type": "function", "function": json_schema_types(f)}) for f in functions)
    return SYSTEM_PROMPT.format(tools=tools)


def to_row(question: dict, answer: dict, category: str, split: str, index: int, origin: str) -> dict:
    """One veRL row from a BFCL question and its possible answer; raises SchemaError naming the id."""
    qid = question.get("id")
    turns, functions, gold = question.get("question"), question.get("function"), answer.get("ground_truth")
    if not (isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], list) and turns[0]):
        raise SchemaError(f"{origin}: {qid}: expected one turn of messages")
    if not isinstance(functions, list) or not functions:
        raise SchemaError(f"{origin}: {qid}: no function docs")
    if not isinstance(gold, list) or not gold:
        raise SchemaError(f"{origin}: {qid}: empty possible answer")
    messages = copy.deepcopy(turns[0])
    system = system_prompt(functions)
    if messages[0].get("role") == "system":  # BFCL: the question's own system text follows the tool prompt
        messages[0] = {"role": "system", "content": system + "\n\n" + messages[0]["content"]}
    else:
        messages.insert(0, {"role": "system", "content": system})
    return {
        "data_source": f"bfcl_{category}",
        "prompt": messages,
        "ability": "function_calling",
        "reward_model": {"style": "rule", "ground_truth": json.dumps(gold)},
        "extra_info": {"index": index, "split": split, "id": qid, "test_category": category,
                       "functions": json.dumps(functions)},
    }


def category_rows(data_dir: Path, category: str, split: str) -> list[dict]:
    questions_path = data_dir / f"{FILE_PREFIX}{category}.json"
    answers_path = data_dir / "possible_answer" / f"{FILE_PREFIX}{category}.json"
    questions = read_jsonl(questions_path)
    answers = {a.get("id"): a for a in read_jsonl(answers_path)}
    rows = []
    for question in questions:
        answer = answers.get(question.get("id"))
        if answer is None:
            raise SchemaError(f"{answers_path}: no possible answer for {question.get('id')}")
        rows.append(to_row(question, answer, category, split, len(rows), str(questions_path)))
    return rows


def prepare(out_dir: Path, train: list[str], test: list[str], data_dir: Path | None = None,
            limit: int | None = None) -> dict[str, Path]:
    unknown = sorted(set(train + test) - set(CATEGORIES))
    if unknown:
        raise SystemExit(f"unknown categories {unknown}; choose from {list(CATEGORIES)}")
    shared = sorted(set(train) & set(test))
    if shared:
        raise SystemExit(f"categories {shared} are in both train and test; the split keeps categories apart")
    data_dir = data_dir or bfcl_data_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, categories in (("train", train), ("test", test)):
        if not categories:
            continue
        frames = []
        for category in categories:
            rows = category_rows(data_dir, category, split)
            frames.append(pd.DataFrame(rows[:limit] if limit else rows))
            print(f"[prepare_fc_data] {split}: {category}: {len(frames[-1])} rows")
        frame = pd.concat(frames, ignore_index=True)
        path = out_dir / f"{split}.parquet"
        frame.to_parquet(path)
        written[split] = path
        print(f"[prepare_fc_data] {split}: {len(frame)} rows -> {path}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--train-categories", default=",".join(DEFAULT_TRAIN))
    parser.add_argument("--test-categories", default=",".join(DEFAULT_TEST))
    parser.add_argument("--bfcl-dir", type=Path, default=None, help="BFCL data directory (default: the package's)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of each category")
    args = parser.parse_args(argv)

    def names(text):
        return [n.strip() for n in text.split(",") if n.strip()]

    try:
        prepare(args.out_dir, names(args.train_categories), names(args.test_categories), args.bfcl_dir, args.limit)
    except (SchemaError, FileNotFoundError) as error:
        sys.exit(f"[prepare_fc_data] error: {error}")


if __name__ == "__main__":
    main()
