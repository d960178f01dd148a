"""The demo task: seeded generator, held-out split, exact-answer scorer (incl. adversarial responses)."""

import inspect
import random

import pytest

from verl_resrl.demo import task


def test_generator_is_deterministic_and_seed_dependent():
    a = task.generate(200, seed=5)
    b = task.generate(200, seed=5)
    c = task.generate(200, seed=6)
    assert a == b
    assert [p.expression for p in a] != [p.expression for p in c]
    assert len({p.expression for p in a}) == 200


def test_problems_are_consistent():
    for p in task.generate(500, seed=0):
        assert eval(p.expression) == p.answer  # noqa: S307 - our own digits and +/- only
        terms = p.expression.replace("-", "+").split("+")
        assert task.MIN_TERMS <= len(terms) <= task.MAX_TERMS
        assert all(0 <= int(t) <= task.MAX_OPERAND for t in terms)
        assert len(p.steps) == len(terms) - 1
        # running totals never go below zero and each step is right
        for step in p.steps:
            lhs, rhs = step.split("=")
            assert int(rhs) >= 0 and eval(lhs) == int(rhs)  # noqa: S307
        assert p.solution.endswith(f"Answer: {p.answer}")
        assert task.score(p.solution, p.answer) == 1.0
        assert p.prompt == f"Compute {p.expression}."


def test_held_out_split_is_disjoint():
    train, test = task.splits(2000, 128)
    assert len(test) == 128
    assert not {p.expression for p in train} & {p.expression for p in test}
    assert task.splits(2000, 128) == (train, test)


def test_make_problem_respects_term_bounds():
    rng = random.Random(0)
    p = task.make_problem(rng, min_terms=3, max_terms=3, max_operand=9)
    assert len(p.steps) == 2


@pytest.mark.parametrize("response, truth, expected", [
    ("12+7=19, 19-5=14. Answer: 14", "14", 1.0),
    ("Answer: 14", 14, 1.0),
    ("Answer:14", "14", 1.0),
    ("12+7=19. Answer: 14  \n", "14", 1.0),
    ("12+7=19, 19-5=14. Answer: 15", "14", 0.0),
    ("Answer: 014", "14", 0.0),          # not canonical
    ("Answer: +14", "14", 0.0),
    ("Answer: 14.0", "14", 0.0),
    ("Answer: 14 or 15", "14", 0.0),     # something after the answer
    ("Answer: 15 Answer: 14", "14", 0.0),  # hedging with two answers
    ("Answer: 14, Answer: 14", "14", 0.0),
    ("14", "14", 0.0),                   # no "Answer:"
    ("answer: 14", "14", 0.0),
    ("Answer: 14" + " " * 500, "14", 0.0),  # too long
    ("x" * 1000 + "Answer: 14", "14", 0.0),
    ("Answer: -0", "0", 0.0),
    ("Answer: 0", "0", 1.0),
    ("Answer: -3", "-3", 1.0),
    ("Answer: 99999999999999999999", "14", 0.0),
    ("", "14", 0.0),
    ("Answer: 14", "not a number", 0.0),
    ("Answer: ١٤", "14", 0.0),           # non-ASCII digits
])
def test_scorer(response, truth, expected):
    assert task.score(response, truth) == expected


def test_scorer_rejects_non_strings():
    assert task.extract_answer(None) is None
    assert task.extract_answer(b"Answer: 14") is None


def test_compute_score_signature_and_value():
    params = inspect.signature(task.compute_score).parameters
    assert list(params)[:4] == ["data_source", "solution_str", "ground_truth", "extra_info"]
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    out = task.compute_score(data_source=task.DATA_SOURCE, solution_str="1+2=3. Answer: 3", ground_truth="3",
                             extra_info={"index": 0}, reward_router_address=None)
    assert out == {"score": 1.0, "acc": 1.0}
    assert task.compute_score(task.DATA_SOURCE, "Answer: 4", "3")["score"] == 0.0


def test_compute_score_loads_by_path_like_verl():
    from verl_resrl.evaluate import load_compute_score

    fn = load_compute_score(task.__file__)
    assert fn("demo_arith", "Answer: 7", "7")["acc"] == 1.0


def test_rows_follow_verl_schema():
    problems = task.generate(3, seed=0)
    rows = task.rows(problems, "test")
    assert rows[0]["prompt"] == [{"role": "user", "content": problems[0].prompt}]
    assert rows[1]["reward_model"]["ground_truth"] == str(problems[1].answer)
    assert rows[2]["extra_info"]["index"] == 2 and rows[0]["data_source"] == task.DATA_SOURCE
