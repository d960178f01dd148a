"""End-to-end: ``algorithm.adv_estimator=resrl`` in veRL's real ``main_ppo`` on CPU.

Each run dumps its residuals (``resrl.dump_dir``) and asserts: every token of every negative response of every
mixed group received a residual (checked on the dump from the rule, not from the package's counters), step 1's
residuals equal an offline recomputation from the starting model (a plain Hugging Face forward, which only
holds if groups stayed whole and token windows are right), advantages are finite and the actor was updated.
The subspace is the default randomized range finder, with ``rank + oversample`` (4 + 4) below the positive
token count of the groups, so the range finder really runs. Runs: V1
trainer on 1 rank with the ``resrl`` policy loss and remove-padding (packed sequences); V1 on 2 ranks with
dynamic batch size and a reference model (whose forward pass must not be captured); the legacy trainer
with a checkpoint, then resumed from it. And "do no harm": with the package installed, a GRPO run is
identical step for step (up to float summation order) whether the ResRL patches are installed or disabled.
"""

from __future__ import annotations

import math

import pytest
import torch

from dump_checks import assert_every_negative_token_weighted, assert_recomputed, max_computed_group_positive_tokens
from verl_resrl.cpu.launch import tiny_grpo_overrides
from verl_resrl.cpu.runs import run_cpu_main_ppo
from verl_resrl.cpu.tiny_assets import build_tiny_assets

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_tiny_assets(tmp_path_factory.mktemp("tiny_assets_resrl"))


RANK, OVERSAMPLE = 4, 4  # randomized range finder of width 8 < min(positive tokens, hidden size 64)


def resrl_overrides(assets, tmp_path, steps=2, n_gpus=1, extra=()):
    return tiny_grpo_overrides(assets, steps=steps, n_gpus=n_gpus) + [
        "algorithm.adv_estimator=resrl",
        f"+algorithm.resrl.rank={RANK}",
        f"+algorithm.resrl.oversample={OVERSAMPLE}",
        f"+algorithm.resrl.dump_dir={tmp_path / 'dump'}",
        f"trainer.default_local_dir={tmp_path / 'ckpt'}",
        *extra,
    ]


def assert_resrl_trained(result, steps, tmp_path, model_path=None):
    """Metrics of every step, the dump's token coverage, and (``model_path``: the starting model) step 1's
    residuals recomputed offline. ``resrl/split_groups`` and the clamped weight quantiles are not asserted:
    the first is the package's partitioner reporting on itself and the second holds by construction; the
    recomputation is what fails if a group is split or a token misaligned."""
    assert result.returncode == 0, result.output[-6000:]
    assert sorted(result.steps) == list(steps), f"steps printed: {sorted(result.steps)}"
    computed_steps = 0
    for step in steps:
        m = result.steps[step]
        assert m["actor/grad_norm"] > 0, m
        assert all(math.isfinite(m[k]) for k in ("critic/advantages/max", "critic/advantages/min", "actor/pg_loss"))
        dump = torch.load(tmp_path / "dump" / f"step_{step}.pt")
        computed = assert_every_negative_token_weighted(dump)
        assert m["resrl/computed_groups"] == computed, (m, computed)
        if computed:
            computed_steps += 1
            assert m["resrl/coverage"] == 1.0, m
            assert max_computed_group_positive_tokens(dump) > RANK + OVERSAMPLE  # the randomized path ran
            assert m["resrl/neg_weight_p10"] < m["resrl/neg_weight_p90"], m  # weights differ inside groups
        if step == 1 and model_path is not None:
            assert_recomputed(model_path, dump)
    assert computed_steps > 0, "no step had a group to weight: the reward gave nothing to weight"


def test_v1_one_rank_with_resrl_policy_loss(assets, tmp_path):
    result = run_cpu_main_ppo(
        resrl_overrides(assets, tmp_path, extra=["actor_rollout_ref.actor.policy_loss.loss_mode=resrl",
                                                 "actor_rollout_ref.model.use_remove_padding=True"]),
        cwd=str(tmp_path))
    assert_resrl_trained(result, [1, 2], tmp_path, assets.model_path)
    assert "actor/resrl_neg_token_frac" in result.steps[2]


def test_v1_two_ranks_dynamic_batch_size_with_ref_model(assets, tmp_path):
    extra = ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.1",
             "actor_rollout_ref.actor.use_dynamic_bsz=True", "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True",
             "actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True",
             "actor_rollout_ref.actor.ppo_max_token_len_per_gpu=64",
             "actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu=64",
             "actor_rollout_ref.ref.log_prob_max_token_len_per_gpu=64"]
    result = run_cpu_main_ppo(resrl_overrides(assets, tmp_path, n_gpus=2, extra=extra), n_gpus=2, cwd=str(tmp_path))
    assert_resrl_trained(result, [1, 2], tmp_path, assets.model_path)
    assert result.steps[1]["actor/kl_loss"] == pytest.approx(0.0, abs=1e-6)  # the reference model ran
    assert result.steps[2]["actor/kl_loss"] > 0


def test_legacy_trainer_checkpoint_and_resume(assets, tmp_path):
    extra = ["trainer.use_v1=False", "trainer.save_freq=2"]
    first = run_cpu_main_ppo(resrl_overrides(assets, tmp_path, steps=2, extra=extra), cwd=str(tmp_path))
    assert_resrl_trained(first, [1, 2], tmp_path, assets.model_path)
    assert (tmp_path / "ckpt" / "global_step_2").is_dir()
    resumed = run_cpu_main_ppo(resrl_overrides(assets, tmp_path, steps=3, extra=extra + ["trainer.resume_mode=auto"]),
                               cwd=str(tmp_path))
    assert_resrl_trained(resumed, [3], tmp_path)  # the resumed step weighted a group (seeded rollouts)


DETERMINISTIC = ("critic/score/mean", "critic/advantages/mean", "critic/advantages/max", "actor/pg_loss",
                 "actor/grad_norm", "actor/entropy", "response_length/mean")


def test_grpo_is_unchanged_by_the_patches(assets, tmp_path, monkeypatch):
    runs = {}
    for name, disabled in (("patched", "0"), ("disabled", "1")):
        monkeypatch.setenv("VERL_RESRL_DISABLE_PATCHES", disabled)
        overrides = tiny_grpo_overrides(assets, steps=2) + [f"trainer.default_local_dir={tmp_path / name}"]
        result = run_cpu_main_ppo(overrides, cwd=str(tmp_path))
        assert result.returncode == 0, result.output[-6000:]
        runs[name] = result.steps
    assert sorted(runs["patched"]) == sorted(runs["disabled"]) == [1, 2]
    for step in (1, 2):
        assert not any(k.startswith("resrl/") for k in runs["patched"][step])
        # the same rollouts (per-request seeded sampling) and the same update; only float summation order
        # (the agent loop returns samples in completion order) may differ
        assert runs["patched"][step]["response_length/mean"] == runs["disabled"][step]["response_length/mean"]
        for key in DETERMINISTIC:
            assert runs["patched"][step][key] == pytest.approx(runs["disabled"][step][key], rel=1e-5, abs=1e-6), key


def thinking_tiny_model(assets, out_dir) -> str:
    """The tiny model with ``<think>`` / ``</think>`` added to its tokenizer and a steady rate of both in its
    samples (about one token in ten each): every embedding row gets a shared direction ``u`` (the tied LM head
    then shifts all logits alike), the tags lean further along ``u``, so their logits stand out everywhere."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(assets.model_path)
    model = AutoModelForCausalLM.from_pretrained(assets.model_path, dtype=torch.float32)
    tokenizer.add_tokens(["<think>", "</think>"])
    tags = tokenizer.convert_tokens_to_ids(["<think>", "</think>"])
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        embedding = model.get_input_embeddings().weight
        u = torch.randn(embedding.shape[1], generator=generator)
        embedding[tags] = embedding[torch.randint(0, tags[0], (2,), generator=generator)]
        embedding += 0.5 * u / u.norm()
        embedding[tags] += 0.25 * u / u.norm()
    path = str(out_dir / "thinking_model")
    tokenizer.save_pretrained(path)
    model.save_pretrained(path)
    return path


def test_v1_mask_think_tokens(assets, tmp_path):
    """``mask_think_tokens`` through main_ppo: the tag ids come from the run's tokenizer, the dump's residuals
    leave every reasoning span out (checked against the spans found in the dumped ids) and equal the offline
    recomputation with those spans masked."""
    from transformers import AutoTokenizer

    from dump_checks import think_masks

    model_path = thinking_tiny_model(assets, tmp_path)
    tags = tuple(AutoTokenizer.from_pretrained(model_path).convert_tokens_to_ids(["<think>", "</think>"]))
    overrides = resrl_overrides(assets, tmp_path, extra=[f"actor_rollout_ref.model.path={model_path}",
                                                         "+algorithm.resrl.mask_think_tokens=true"])
    result = run_cpu_main_ppo(overrides, cwd=str(tmp_path))
    assert result.returncode == 0, result.output[-6000:]
    assert sorted(result.steps) == [1, 2], f"steps printed: {sorted(result.steps)}"
    think_weighted = 0
    for step in (1, 2):
        m = result.steps[step]
        assert m["actor/grad_norm"] > 0 and math.isfinite(m["actor/pg_loss"]), m
        dump = torch.load(tmp_path / "dump" / f"step_{step}.pt")
        assert dump["config"]["mask_think_tokens"] and tuple(dump["config"]["think_token_ids"]) == tags
        computed = assert_every_negative_token_weighted(dump)  # spans from the dumped ids get no residual
        assert m["resrl/computed_groups"] == computed, (m, computed)
        for think, has, pos in zip(think_masks(dump), dump["has_residual"], dump["positive"].tolist()):
            if has.any():  # a weighted negative response with a span: its tokens in and out of the span differ
                think_weighted += int(think.any() and (~think).any())
    assert think_weighted > 0, "no weighted negative response had a reasoning span"
    assert_recomputed(model_path, torch.load(tmp_path / "dump" / "step_1.pt"))
