"""recipes/prepare_fc_data.py: BFCL files -> veRL rows (tools in the prompt), categories kept apart."""

import importlib.util
import json
import subprocess
import sys

import pandas as pd
import pytest
from harness import REPO, load_script

if importlib.util.find_spec("bfcl_eval") is None:
    pytest.skip("needs BFCL's data and checker: pip install --no-deps bfcl-eval==2026.3.23", allow_module_level=True)
SCRIPT = REPO / "recipes" / "prepare_fc_data.py"


prep = load_script(SCRIPT, "resrl_prepare_fc_data_under_test")
fc = load_script(REPO / "reward_fns" / "function_call_reward.py", "resrl_fc_reward_for_prepare_test")


def test_package_data_to_parquet_with_categories_apart(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    train, test = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "test.parquet")
    train_categories = {e["test_category"] for e in train["extra_info"]}
    test_categories = {e["test_category"] for e in test["extra_info"]}
    assert train_categories == set(prep.DEFAULT_TRAIN) and test_categories == set(prep.DEFAULT_TEST)
    assert len(test) == 1000 and len(train) == 1351
    assert set(test["data_source"]) == {f"bfcl_{c}" for c in prep.DEFAULT_TEST}
    row = test.iloc[0]
    assert row["ability"] == "function_calling" and row["extra_info"]["id"] == "simple_python_0"
    system, user = row["prompt"][0], row["prompt"][-1]
    assert system["role"] == "system" and "<tools>" in system["content"] and "<tool_call>" in system["content"]
    assert '"name": "calculate_triangle_area"' in system["content"] and '"type": "object"' in system["content"]
    assert user["role"] == "user" and "triangle" in user["content"]
    gold = json.loads(row["reward_model"]["ground_truth"])
    assert gold == [{"calculate_triangle_area": {"base": [10], "height": [5], "unit": ["units", ""]}}]
    # The row is what the reward consumes: a correct call scores 1 with the row's own schemas.
    response = '<tool_call>\n{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}\n</tool_call>'
    extra = dict(row["extra_info"])
    assert fc.compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], extra)["acc"] == 1.0
    bad = response.replace("10", '"10"')
    assert fc.compute_score(row["data_source"], bad, row["reward_model"]["ground_truth"], extra)["acc"] == 0.0


def test_question_system_message_follows_the_tool_prompt():
    question = {"id": "q1", "question": [[{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "hi"}]],
                "function": [{"name": "f", "parameters": {"type": "dict", "properties": {"x": {"type": "float"}}}}]}
    row = prep.to_row(question, {"id": "q1", "ground_truth": [{"f": {"x": [1.0]}}]}, "live_simple", "train", 0, "t")
    assert len(row["prompt"]) == 2 and row["prompt"][0]["content"].endswith("\n\nBe brief.")
    assert '"type": "number"' in row["prompt"][0]["content"]
    assert json.loads(row["extra_info"]["functions"])[0]["parameters"]["properties"]["x"]["type"] == "float"


def test_category_in_both_splits_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out-dir", str(tmp_path), "--train-categories",
                             "simple_python", "--test-categories", "simple_python,parallel"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "both train and test" in result.stderr


def test_bad_files_are_named(tmp_path):
    (tmp_path / "possible_answer").mkdir()
    (tmp_path / "BFCL_v4_simple_python.json").write_text(json.dumps(
        {"id": "simple_python_0", "question": [[{"role": "user", "content": "x"}]],
         "function": [{"name": "f"}]}) + "\n")
    (tmp_path / "possible_answer" / "BFCL_v4_simple_python.json").write_text('{"id": "other"}\n')
    with pytest.raises(prep.SchemaError, match="no possible answer for simple_python_0"):
        prep.prepare(tmp_path / "out", [], ["simple_python"], data_dir=tmp_path)
    answers = tmp_path / "possible_answer" / "BFCL_v4_simple_python.json"
    answers.write_text('{"id": "simple_python_0", "ground_truth": []}\n')
    with pytest.raises(prep.SchemaError, match="simple_python_0: empty possible answer"):
        prep.prepare(tmp_path / "out", [], ["simple_python"], data_dir=tmp_path)
    with pytest.raises(SystemExit, match="unknown categories"):
        prep.prepare(tmp_path / "out", ["simple_java"], [], data_dir=tmp_path)


def test_evaluate_scores_prepared_rows_with_their_schemas(tmp_path):
    """prepare -> generations -> ``verl_resrl.evaluate --reward-fn``: extra_info (the schemas) reaches the reward."""
    prep.prepare(tmp_path / "data", [], ["simple_python"], limit=4)
    rows = pd.read_parquet(tmp_path / "data" / "test.parquet")
    responses = []
    for _, row in rows.iterrows():
        (name, arguments), = json.loads(row["reward_model"]["ground_truth"])[0].items()
        call = {k: v[0] for k, v in arguments.items() if v and v[0] != ""}
        right = f"<tool_call>\n{json.dumps({'name': name, 'arguments': call})}\n</tool_call>"
        responses.append([right, "no call"])
    rows["responses"] = responses
    generations = tmp_path / "gen.parquet"
    rows.to_parquet(generations)
    result = subprocess.run([sys.executable, "-m", "verl_resrl.evaluate", str(generations), "--out-dir",
                             str(tmp_path / "report"), "--reward-fn",
                             str(REPO / "reward_fns" / "function_call_reward.py")],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    (run,) = metrics.values()
    bench = run["bfcl_simple_python"]
    assert bench["avg@2"] == pytest.approx(0.5) and bench["pass@2"] == pytest.approx(1.0)
