"""End-to-end: ``recipes/run_resrl_{fc,code}.sh`` train 2 steps on CPU with their own reward functions.

The tiny model cannot call functions or write programs; what is checked is the plumbing: the recipe's reward
function scores every response inside veRL's reward workers (its extra keys reach the validation metrics),
and ResRL's update runs on those rewards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from verl_resrl.cpu.launch import cpu_env, cpu_overrides
from verl_resrl.cpu.runs import run_command
from verl_resrl.cpu.tiny_assets import build_tiny_assets

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[1]

FC_FUNCTIONS = [{"name": "add", "parameters": {"type": "dict", "required": ["a"], "properties": {
    "a": {"type": "integer"}}}}]


def _task_rows(tiny_file: str, task: str) -> pd.DataFrame:
    """The tiny arithmetic prompts with the task's ground truth and extra_info."""
    frame = pd.read_parquet(tiny_file)
    rows = []
    for i, prompt in enumerate(frame["prompt"]):
        if task == "fc":
            truth = json.dumps([{"add": {"a": [i]}}])
            extra = {"index": i, "split": "x", "id": f"smoke_{i}", "test_category": "simple_python",
                     "functions": json.dumps(FC_FUNCTIONS)}
        else:  # every test: no input; a program that prints nothing passes (an expression statement does)
            truth = json.dumps({"inputs": ["", ""], "outputs": ["", ""]})
            extra = {"index": i, "split": "x", "task_id": str(i)}
        rows.append({"data_source": f"smoke_{task}", "prompt": list(prompt), "ability": task,
                     "reward_model": {"style": "rule", "ground_truth": truth}, "extra_info": extra})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("task, reward_key, expected", [("fc", "parsed", None), ("code", "tests", 2.0)])
def test_task_recipe_trains_on_cpu(tmp_path, task, reward_key, expected):
    assets = build_tiny_assets(tmp_path / "assets")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _task_rows(assets.train_files, task).to_parquet(data_dir / "train.parquet")
    _task_rows(assets.val_files, task).head(4).to_parquet(data_dir / "test.parquet")
    env = cpu_env()
    env.update({
        "PYTHON": sys.executable, "MODEL_PATH": str(assets.model_path), "DATA_DIR": str(data_dir),
        "TRAIN_BATCH_SIZE": "4", "N_ROLLOUTS": "4", "PPO_MINI_BATCH_SIZE": "4", "MICRO_BATCH_SIZE_PER_GPU": "8",
        "LOGPROB_MICRO_BATCH_SIZE_PER_GPU": "8", "MAX_PROMPT_LENGTH": "32", "MAX_RESPONSE_LENGTH": "16",
        "N_GPUS": "1", "ROLLOUT_NAME": "hf", "TEST_FREQ": "-1", "SAVE_FREQ": "-1",
        "OUTPUT_DIR": str(tmp_path / "out"), "CODE_TIMEOUT_S": "5",
    })
    extra = cpu_overrides(1) + ["trainer.total_training_steps=2",
                                "actor_rollout_ref.model.enable_gradient_checkpointing=False"]
    result = run_command(["bash", str(REPO / f"recipes/run_resrl_{task}.sh"), *extra], env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.output[-6000:]
    assert sorted(k for k in result.steps if k > 0) == [1, 2], sorted(result.steps)
    validation = result.steps[0]  # val_before_train: the reward's own keys, averaged per data source
    key = f"val-aux/smoke_{task}/{reward_key}/mean@1"
    assert key in validation, sorted(validation)
    if expected is not None:
        assert validation[key] == expected
    for step in (1, 2):
        metrics = result.steps[step]
        assert metrics["resrl/coverage"] == 1.0
        assert 0.0 <= metrics["critic/score/min"] <= metrics["critic/score/max"] <= 1.0
