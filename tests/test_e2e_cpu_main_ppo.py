"""End-to-end: veRL's real ``python -m verl.trainer.main_ppo`` trains on CPU through the CPU backend.

Four runs on the tiny GRPO task (about a minute each on 2 cores), each asserting on what the run printed or
saved, not only on its exit code:

* V1 trainer (default), 1 rank, ref model + KL loss, 2 steps;
* legacy trainer (``trainer.use_v1=False``), 1 rank, 2 steps;
* 2 ranks (FSDP2 over gloo, 2 rollout replicas), checkpoint at step 2; then
* the same with ``trainer.resume_mode=auto``, which continues at step 3.
"""

from __future__ import annotations

import pytest

from verl_resrl.cpu.launch import tiny_grpo_overrides
from verl_resrl.cpu.runs import run_cpu_main_ppo
from verl_resrl.cpu.tiny_assets import build_tiny_assets

pytestmark = pytest.mark.e2e

LOGPROB_TOL = 1e-3


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_tiny_assets(tmp_path_factory.mktemp("tiny_assets"))


def _assert_trained(result, steps):
    assert result.returncode == 0, result.output[-5000:]
    metrics = result.steps
    assert sorted(metrics) == list(steps), f"steps printed: {sorted(metrics)}"
    for step in steps:
        m = metrics[step]
        assert m["actor/grad_norm"] > 0, m
        assert m["training/global_step"] == step
        # rollout (hf server) vs actor (FSDP2 engine) on the same tokens and weights:
        assert m["training/rollout_probs_diff_max"] < LOGPROB_TOL, m
        assert abs(m["rollout_corr/log_ppl_diff_max"]) < LOGPROB_TOL, m
        assert abs(m["rollout_corr/log_ppl_diff_min"]) < LOGPROB_TOL, m
        # the partial-credit reward varies inside groups, so GRPO advantages are not all zero
        assert m["critic/advantages/max"] > 0 > m["critic/advantages/min"], m
    return metrics


def _server_addresses(output: str) -> list[str]:
    line = next(line for line in output.splitlines() if "LLMServerManager: [" in line)
    return [a.strip(" '") for a in line.split("LLMServerManager: [", 1)[1].split("]", 1)[0].split(",")]


def test_v1_grpo_with_ref_and_kl_loss(assets, tmp_path):
    overrides = tiny_grpo_overrides(assets, steps=2) + [
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.actor.kl_loss_coef=0.1",
        "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]
    result = run_cpu_main_ppo(overrides, n_gpus=1, cwd=str(tmp_path))
    metrics = _assert_trained(result, [1, 2])
    assert "PPOTrainerSync" in result.output or "TaskRunnerV1" in result.output
    assert _server_addresses(result.output) == ["hf-rollout://hf_server_0"]
    # ref model runs: the KL to it is 0 before the first update and positive after it
    assert metrics[1]["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6)
    assert metrics[2]["actor/kl_loss"] > 0


def test_legacy_trainer(assets, tmp_path):
    overrides = tiny_grpo_overrides(assets, steps=2) + [
        "trainer.use_v1=False",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
    ]
    result = run_cpu_main_ppo(overrides, n_gpus=1, cwd=str(tmp_path))
    _assert_trained(result, [1, 2])
    assert "TaskRunnerV1" not in result.output


def test_two_ranks_checkpoint_and_resume(assets, tmp_path):
    ckpt = tmp_path / "ckpt"
    common = [f"trainer.default_local_dir={ckpt}", "trainer.save_freq=2"]

    first = run_cpu_main_ppo(tiny_grpo_overrides(assets, steps=2, n_gpus=2) + common, n_gpus=2, cwd=str(tmp_path))
    _assert_trained(first, [1, 2])
    assert _server_addresses(first.output) == ["hf-rollout://hf_server_0", "hf-rollout://hf_server_1"]
    actor_dir = ckpt / "global_step_2" / "actor"
    assert {p.name for p in actor_dir.glob("model_world_size_2_rank_*.pt")} == {
        "model_world_size_2_rank_0.pt",
        "model_world_size_2_rank_1.pt",
    }
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"

    second = run_cpu_main_ppo(
        tiny_grpo_overrides(assets, steps=3, n_gpus=2) + common + ["trainer.resume_mode=auto"],
        n_gpus=2,
        cwd=str(tmp_path),
    )
    _assert_trained(second, [3])  # resumed after step 2: only step 3 runs
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "3"
