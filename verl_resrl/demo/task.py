"""Seeded arithmetic-with-reasoning task: multi-term sums and differences with a short chain of thought.

A problem is a chain of 2-3 integer terms joined by ``+`` / ``-`` whose running total never goes below zero,
e.g. ``"12+7-5"``. The prompt asks for it (``"Compute 12+7-5."``) and the reference solution writes one partial
result per operation and ends with the answer::

    12+7=19, 19-5=14. Answer: 14

The scorer is exact-match on the final answer (reward 1 or 0): the response must end with
``Answer: <integer>`` in canonical form (no leading zeros, no ``+``), say ``Answer:`` only once, and be at most
``MAX_RESPONSE_CHARS`` long. The reasoning itself is not graded.

``python -m verl_resrl.demo.task OUT_DIR`` writes ``train.parquet`` / ``test.parquet`` in veRL's schema.
This file is also usable as ``reward.custom_reward_function.path`` (function ``compute_score``): it imports only
the standard library at module level (and no `from __future__ import annotations`: veRL loads the file
without registering it in `sys.modules`, where dataclasses cannot resolve string annotations).
"""


import random
import re
from dataclasses import dataclass

DATA_SOURCE = "demo_arith"
MIN_TERMS, MAX_TERMS = 2, 3
MAX_OPERAND = 49
MAX_RESPONSE_CHARS = 400
# Seeds of the splits; the held-out split excludes every expression of the training split.
TRAIN_SEED, TEST_SEED = 1, 2
# Size of the training split (the policy's warm-up and the RL prompts); the held-out split excludes all of it.
N_TRAIN_PROBLEMS = 4096


@dataclass(frozen=True)
class Problem:
    expression: str  # "12+7-5"
    answer: int
    steps: tuple[str, ...]  # ("12+7=19", "19-5=14")

    @property
    def prompt(self) -> str:
        return f"Compute {self.expression}."

    @property
    def solution(self) -> str:
        return f"{', '.join(self.steps)}. Answer: {self.answer}"


def make_problem(rng: random.Random, min_terms: int = MIN_TERMS, max_terms: int = MAX_TERMS,
                 max_operand: int = MAX_OPERAND) -> Problem:
    """One problem drawn from ``rng``: terms in [0, max_operand], subtraction only when the total stays >= 0."""
    n_terms = rng.randint(min_terms, max_terms)
    total = rng.randint(0, max_operand)
    expression, steps = str(total), []
    for _ in range(n_terms - 1):
        term = rng.randint(0, max_operand)
        if term <= total and rng.random() < 0.5:
            new = total - term
            op = "-"
        else:
            new = total + term
            op = "+"
        steps.append(f"{total}{op}{term}={new}")
        expression += f"{op}{term}"
        total = new
    return Problem(expression, total, tuple(steps))


def generate(n: int, seed: int, exclude: set[str] | frozenset[str] = frozenset(), **kwargs) -> list[Problem]:
    """``n`` distinct problems from ``random.Random(seed)``, none of whose expressions is in ``exclude``."""
    rng = random.Random(seed)
    seen, out = set(exclude), []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"could not draw {n} distinct problems (seed {seed})")
        problem = make_problem(rng, **kwargs)
        if problem.expression in seen:
            continue
        seen.add(problem.expression)
        out.append(problem)
    return out


def splits(n_train: int, n_test: int) -> tuple[list[Problem], list[Problem]]:
    """The training problems and the held-out problems (disjoint expressions)."""
    train = generate(n_train, TRAIN_SEED)
    test = generate(n_test, TEST_SEED, exclude={p.expression for p in train})
    return train, test


# --- scoring ------------------------------------------------------------------------------------------------

_ANSWER = re.compile(r"Answer:[ ]?(-?(?:0|[1-9][0-9]{0,11}))\s*\Z")


def extract_answer(response: str) -> int | None:
    """The final answer of ``response``, or None when it does not end with exactly one ``Answer: N``."""
    if not isinstance(response, str) or len(response) > MAX_RESPONSE_CHARS:
        return None
    if response.count("Answer:") != 1:
        return None
    match = _ANSWER.search(response)
    if match is None:
        return None
    value = int(match.group(1))
    return None if match.group(1) == "-0" else value


def score(response: str, ground_truth) -> float:
    """1.0 when the final answer equals ``ground_truth`` (an int or its decimal string), else 0.0."""
    try:
        truth = int(str(ground_truth).strip())
    except ValueError:
        return 0.0
    answer = extract_answer(response)
    return 1.0 if answer is not None and answer == truth else 0.0


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """veRL reward function: ``score`` (1/0 exact answer) and ``acc`` (the same, for ``verl_resrl.evaluate``)."""
    value = score(solution_str, ground_truth)
    return {"score": value, "acc": value}


# --- data files ---------------------------------------------------------------------------------------------

def rows(problems: list[Problem], split: str) -> list[dict]:
    """veRL parquet rows: chat prompt, data_source, ability, reward_model.ground_truth, extra_info."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": p.prompt}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": str(p.answer)},
            "extra_info": {"split": split, "index": i, "expression": p.expression, "solution": p.solution},
        }
        for i, p in enumerate(problems)
    ]


def write_parquet(problems: list[Problem], path, split: str) -> str:
    import pandas as pd

    pd.DataFrame(rows(problems, split)).to_parquet(path)
    return str(path)


def main(argv: list[str] | None = None) -> None:
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description="Write the demo task's train/test parquet files.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n-train", type=int, default=4096)
    parser.add_argument("--n-test", type=int, default=128)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    train, test = splits(args.n_train, args.n_test)
    print(write_parquet(train, args.out_dir / "train.parquet", "train"))
    print(write_parquet(test, args.out_dir / "test.parquet", "test"))


if __name__ == "__main__":
    main()
