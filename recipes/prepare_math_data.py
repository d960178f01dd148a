#!/usr/bin/env python3
"""Math data for the paper's experiment -> veRL parquet files.

Train: DAPO-Math-17k. Validation/test: AIME24, AIME25, AMC23, MATH500, Minerva, OlympiadBench.

Each output row has veRL 0.9.1's schema::

    prompt          [{"role": "user", "content": <problem> + INSTRUCTION}]   (chat list; INSTRUCTION asks for \\boxed{})
    data_source     the dataset name below ("dapo_math_17k", "aime24", ...)
    ability         "math"
    reward_model    {"style": "rule", "ground_truth": <answer string>}
    extra_info      {"index": <row number>, "split": "train" | "test", "problem": <problem>}

Sources: the Hugging Face hub through ``datasets`` (default; needs internet), or local ``.jsonl`` / ``.json`` /
``.parquet`` files given with ``--local NAME=PATH``. Columns are found by name (problem: problem / question /
prompt; answer: answer / final_answer / solution / reward_model.ground_truth); a missing column, an empty
problem or an empty answer stops with an error naming the file and row.

Usage::

    python recipes/prepare_math_data.py --out-dir data/math
    python recipes/prepare_math_data.py --out-dir data/math --datasets math500 \\
        --local math500=/path/to/math500.jsonl

Writes ``<out-dir>/train.parquet`` (DAPO-Math-17k), ``<out-dir>/<name>.parquet`` per benchmark and
``<out-dir>/test.parquet`` (all requested benchmarks, the recipes' validation file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _sources import (HubSource, SchemaError, check_names, find_column, lookup, parse_local,  # noqa: E402
                      read_hub, read_local, write_datasets)

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROBLEM_COLUMNS = ("problem", "question", "prompt")
ANSWER_COLUMNS = ("answer", "final_answer", "solution", "reward_model.ground_truth")

# DAPO-Math-17k wraps every problem in its own "Answer:" instruction; it is replaced by INSTRUCTION.
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
               "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.")
DAPO_SUFFIX = 'Remember to put your answer on its own line after "Answer:".'


TRAIN_DATASETS = {"dapo_math_17k": HubSource("open-r1/DAPO-Math-17k-Processed", "train", "all")}
TEST_DATASETS = {
    "aime24": HubSource("HuggingFaceH4/aime_2024", "train"),
    "aime25": HubSource("math-ai/aime25", "test"),
    "amc23": HubSource("math-ai/amc23", "test"),
    "math500": HubSource("HuggingFaceH4/MATH-500", "test"),
    "minerva": HubSource("math-ai/minervamath", "test"),
    "olympiadbench": HubSource("math-ai/olympiadbench", "test"),
}
ALL_DATASETS = {**TRAIN_DATASETS, **TEST_DATASETS}


# --- normalising one row -------------------------------------------------------------------------------------

def _problem_text(value) -> str:
    """A problem string from a plain string or a chat list (last user message); DAPO's wrapper removed."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        users = [m.get("content", "") for m in value if isinstance(m, dict) and m.get("role") == "user"]
        value = users[-1] if users else ""
    text = str(value).strip() if value is not None else ""
    if text.startswith(DAPO_PREFIX):
        text = text[len(DAPO_PREFIX):]
    if text.endswith(DAPO_SUFFIX):
        text = text[: -len(DAPO_SUFFIX)]
    return text.strip()


def _answer_text(value) -> str:
    """An answer string; a list (OlympiadBench ``final_answer``) is joined with ", "; ``$`` stripped."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, list):
        value = ", ".join(str(v).strip().strip("$").strip() for v in value)
    return "" if value is None else str(value).strip().strip("$").strip()


def to_verl_rows(rows: list[dict], data_source: str, split: str, origin: str) -> list[dict]:
    """Normalise raw rows into veRL rows (schema in the module docstring); raise SchemaError on bad input."""
    if not rows:
        raise SchemaError(f"{origin}: no rows")
    problem_column = find_column(rows, PROBLEM_COLUMNS, "problem", origin)
    answer_column = find_column(rows, ANSWER_COLUMNS, "answer", origin)
    out = []
    for i, row in enumerate(rows):
        problem = _problem_text(lookup(row, problem_column))
        answer = _answer_text(lookup(row, answer_column))
        if not problem:
            raise SchemaError(f"{origin}: row {i} has an empty problem (column {problem_column!r})")
        if not answer:
            raise SchemaError(f"{origin}: row {i} has an empty answer (column {answer_column!r})")
        out.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": f"{problem}\n\n{INSTRUCTION}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"index": i, "split": split, "problem": problem},
        })
    return out


def deduplicate(rows: list[dict]) -> list[dict]:
    """Drop repeated problems (the original DAPO-Math-17k repeats each one ~100x); re-number ``index``."""
    seen, out = set(), []
    for row in rows:
        key = row["extra_info"]["problem"]
        if key not in seen:
            seen.add(key)
            out.append({**row, "extra_info": {**row["extra_info"], "index": len(out)}})
    return out


# --- CLI ------------------------------------------------------------------------------------------------------

def prepare(names: list[str], out_dir: Path, local: dict[str, str], limit: int | None = None) -> dict[str, Path]:
    """Convert every dataset in ``names``; return the written files by name (``train``, ``test``, benchmarks)."""
    check_names(names, local, ALL_DATASETS)

    def datasets():
        for name in names:
            split = "train" if name in TRAIN_DATASETS else "test"
            origin = local.get(name) or f"hub:{ALL_DATASETS[name].repo}"
            raw = read_local(local[name]) if name in local else read_hub(ALL_DATASETS[name])
            yield name, split, deduplicate(to_verl_rows(raw, name, split, origin)), ""

    return write_datasets(out_dir, datasets(), "prepare_math_data", limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--datasets", default=",".join(ALL_DATASETS),
                        help=f"comma-separated subset of {','.join(ALL_DATASETS)}")
    parser.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                        help="read NAME from a local .jsonl/.json/.parquet file instead of the hub (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of each dataset")
    args = parser.parse_args(argv)
    local = parse_local(parser, args.local)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        prepare(names, args.out_dir, local, args.limit)
    except (SchemaError, FileNotFoundError) as error:
        sys.exit(f"[prepare_math_data] error: {error}")


if __name__ == "__main__":
    main()
