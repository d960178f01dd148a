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
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PROBLEM_COLUMNS = ("problem", "question", "prompt")
ANSWER_COLUMNS = ("answer", "final_answer", "solution", "reward_model.ground_truth")

# DAPO-Math-17k wraps every problem in its own "Answer:" instruction; it is replaced by INSTRUCTION.
DAPO_PREFIX = ("Solve the following math problem step by step. The last line of your response should be of the "
               "form Answer: $Answer (without quotes) where $Answer is the answer to the problem.")
DAPO_SUFFIX = 'Remember to put your answer on its own line after "Answer:".'


@dataclass(frozen=True)
class HubSource:
    repo: str
    split: str
    config: str | None = None


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


class SchemaError(ValueError):
    """A source does not have the columns or values this script needs."""


# --- reading ------------------------------------------------------------------------------------------------

def read_local(path: str | Path) -> list[dict]:
    """Rows of a local ``.jsonl`` / ``.json`` (list of objects) / ``.parquet`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return pd.read_parquet(path).to_dict("records")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rows, list):
            raise SchemaError(f"{path}: a .json source must hold a list of objects")
        return rows
    raise SchemaError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl, .json or .parquet)")


def read_hub(source: HubSource) -> list[dict]:
    """Rows of a hub dataset split (imports ``datasets`` only here; needs internet)."""
    from datasets import load_dataset

    dataset = load_dataset(source.repo, source.config, split=source.split)
    return [dict(row) for row in dataset]


# --- normalising one row -------------------------------------------------------------------------------------

def _lookup(row: dict, dotted: str):
    value = row
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _find_column(rows: list[dict], candidates: tuple[str, ...], what: str, origin: str) -> str:
    for name in candidates:
        if _lookup(rows[0], name) is not None:
            return name
    raise SchemaError(f"{origin}: no {what} column; expected one of {list(candidates)}, "
                      f"found {sorted(rows[0])}")


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
    problem_column = _find_column(rows, PROBLEM_COLUMNS, "problem", origin)
    answer_column = _find_column(rows, ANSWER_COLUMNS, "answer", origin)
    out = []
    for i, row in enumerate(rows):
        problem = _problem_text(_lookup(row, problem_column))
        answer = _answer_text(_lookup(row, answer_column))
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
    unknown = [n for n in list(names) + list(local) if n not in ALL_DATASETS]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; choose from {sorted(ALL_DATASETS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written, test_frames = {}, []
    for name in names:
        split = "train" if name in TRAIN_DATASETS else "test"
        origin = local.get(name) or f"hub:{ALL_DATASETS[name].repo}"
        raw = read_local(local[name]) if name in local else read_hub(ALL_DATASETS[name])
        rows = deduplicate(to_verl_rows(raw, name, split, origin))
        if limit is not None:
            rows = rows[:limit]
        frame = pd.DataFrame(rows)
        path = out_dir / ("train.parquet" if split == "train" else f"{name}.parquet")
        frame.to_parquet(path)
        written["train" if split == "train" else name] = path
        if split == "test":
            test_frames.append(frame)
        print(f"[prepare_math_data] {name}: {len(frame)} rows -> {path}")
    if test_frames:
        path = out_dir / "test.parquet"
        pd.concat(test_frames, ignore_index=True).to_parquet(path)
        written["test"] = path
        print(f"[prepare_math_data] test (all benchmarks): {sum(map(len, test_frames))} rows -> {path}")
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--datasets", default=",".join(ALL_DATASETS),
                        help=f"comma-separated subset of {','.join(ALL_DATASETS)}")
    parser.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                        help="read NAME from a local .jsonl/.json/.parquet file instead of the hub (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of each dataset")
    args = parser.parse_args(argv)
    local = {}
    for item in args.local:
        name, sep, path = item.partition("=")
        if not sep:
            parser.error(f"--local expects NAME=PATH, got {item!r}")
        local[name.strip()] = path.strip()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        prepare(names, args.out_dir, local, args.limit)
    except (SchemaError, FileNotFoundError) as error:
        sys.exit(f"[prepare_math_data] error: {error}")


if __name__ == "__main__":
    main()
