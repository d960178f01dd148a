"""Driver-side wiring in veRL: registration, compute_advantage, policy loss, refusals, veRL internals."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from synthetic import make_batch
from verl_resrl import ResRLConfig, compute_residuals, positive_responses, resrl_advantages
from verl_resrl import verl_internals


@pytest.fixture(scope="module")
def verl_loaded():
    import verl  # noqa: F401  (loads the plugin through the entry point)
    import verl.trainer.ppo.ray_trainer  # noqa: F401
    import verl.trainer.ppo.v1.utils  # noqa: F401


def test_every_declared_verl_internal_has_the_expected_shape():
    import verl_resrl.cpu  # noqa: F401  (declares the CPU backend's internals too)

    problems = []
    for name, internal in verl_internals.INTERNALS.items():
        try:
            internal.check()
        except Exception as exc:  # noqa: BLE001
            problems.append(f"{name}: {exc!r}")
    assert not problems, "\n".join(problems)
    assert len(verl_internals.INTERNALS) >= 20


def test_estimator_and_loss_are_registered(verl_loaded):
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn

    from verl_resrl.integration.advantage import compute_resrl_advantage
    from verl_resrl.integration.policy_loss import compute_policy_loss_resrl

    assert get_adv_estimator_fn("resrl") is compute_resrl_advantage
    assert get_policy_loss_fn("resrl") is compute_policy_loss_resrl


def test_registration_is_idempotent_across_both_loading_routes():
    code = (
        "import importlib, verl, verl_resrl.plugin as p\n"
        "import verl.trainer.ppo.core_algos as c\n"
        "importlib.reload(p); from verl_resrl import integration; integration.register()\n"
        "assert p.FAILED == [], p.FAILED\n"
        "assert 'resrl' in c.ADV_ESTIMATOR_REGISTRY and 'resrl' in c.POLICY_LOSS_REGISTRY\n"
        "print('ok')\n"
    )
    env = dict(os.environ, VERL_USE_EXTERNAL_MODULES="verl_resrl.plugin")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def _dataproto(seed=0):
    from verl.protocol import DataProto

    gen = torch.Generator().manual_seed(seed)
    hidden, mask, uids, _, rewards = make_batch([4, 4, 3], length=12, width=32, generator=gen)
    rewards[rewards.sum(-1) == 0, 0] = 0.0
    config = ResRLConfig(rank=8)
    positive = positive_responses(rewards, mask, uids, config)
    res = compute_residuals(hidden, mask, uids, positive, config)
    batch = {"token_level_rewards": rewards, "response_mask": mask, "resrl_residual": res.residual,
             "resrl_has_residual": res.has_residual.float(), "resrl_positive": positive.long(),
             "resrl_status": torch.ones(len(uids), dtype=torch.long), "resrl_rank": torch.full((len(uids),), 8),
             "resrl_seconds": torch.zeros(len(uids))}
    data = DataProto.from_dict(tensors=batch, non_tensors={"uid": np.array(uids, dtype=object)})
    return data, res, config


def test_compute_advantage_with_resrl_uses_the_residuals(verl_loaded):
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.v1 import utils as v1_utils

    from verl_resrl.integration import advantage as wiring

    assert v1_utils.compute_advantage is ray_trainer.compute_advantage  # one wrapper serves both trainers
    data, res, config = _dataproto()
    algo = OmegaConf.create({"adv_estimator": "resrl", "norm_adv_by_std_in_grpo": True, "resrl": {"rank": 8}})
    out = ray_trainer.compute_advantage(data, adv_estimator="resrl", num_repeat=4, config=algo)
    uids = list(data.non_tensor_batch["uid"])
    want, _ = resrl_advantages(data.batch["token_level_rewards"], data.batch["response_mask"], uids, res.residual,
                               res.has_residual, config)
    torch.testing.assert_close(out.batch["advantages"], want)
    from verl.trainer.ppo import metric_utils

    assert ray_trainer.compute_data_metrics is metric_utils.compute_data_metrics  # the wrapped one, by name
    with_step_metrics = wiring._wrap_compute_data_metrics(lambda batch, use_critic: {"critic/score/mean": 0.0})
    metrics = with_step_metrics(batch=out, use_critic=False)
    assert metrics["resrl/coverage"] == 1.0 and "resrl/neg_weight_p50" in metrics and "critic/score/mean" in metrics
    assert "resrl/coverage" not in with_step_metrics(batch=out, use_critic=False)  # reported once per step
    assert wiring.pending_inputs.get() is None


def test_other_estimators_are_untouched(verl_loaded):
    from verl.trainer.ppo import ray_trainer

    data, _, _ = _dataproto()
    algo = OmegaConf.create({"adv_estimator": "grpo", "norm_adv_by_std_in_grpo": True})
    wrapped = ray_trainer.compute_advantage(data, adv_estimator="grpo", config=algo).batch["advantages"].clone()
    original = ray_trainer.compute_advantage.__wrapped__
    data2, _, _ = _dataproto()
    torch.testing.assert_close(original(data2, adv_estimator="grpo", config=algo).batch["advantages"], wrapped)


def test_resrl_without_residuals_is_a_clear_error(verl_loaded):
    from verl.protocol import DataProto
    from verl.trainer.ppo import ray_trainer
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    data = DataProto.from_dict(tensors={"token_level_rewards": torch.zeros(2, 3), "response_mask": torch.ones(2, 3)},
                               non_tensors={"uid": np.array(["a", "a"], dtype=object)})
    with pytest.raises(RuntimeError, match="no residuals from the actor's old-log-prob pass"):
        ray_trainer.compute_advantage(data, adv_estimator="resrl", config=OmegaConf.create({}))
    with pytest.raises(RuntimeError, match="needs the residuals computed during the actor's old-log-prob pass"):
        get_adv_estimator_fn("resrl")(token_level_rewards=torch.zeros(2, 3), response_mask=torch.ones(2, 3),
                                      config=OmegaConf.create({}), index=np.array(["a", "a"]))


def test_resrl_policy_loss_equals_vanilla(verl_loaded):
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    gen = torch.Generator().manual_seed(0)
    old = torch.randn(4, 6, generator=gen) - 2
    adv = torch.randn(4, 6, generator=gen)
    mask = torch.ones(4, 6)
    mask[1, 4:] = 0
    config = OmegaConf.create({"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0,
                               "global_batch_info": {}})
    results = []
    for mode in ("vanilla", "resrl"):
        new = (old + 0.3 * torch.randn(4, 6, generator=torch.Generator().manual_seed(1))).requires_grad_()
        loss, metrics = get_policy_loss_fn(mode)(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                                                 loss_agg_mode="token-mean", config=config)
        loss.backward()
        results.append((loss.detach(), new.grad, metrics))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    assert "actor/resrl_neg_token_frac" in results[1][2]


def _compose(*overrides):
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=["algorithm.adv_estimator=resrl",
                                                             "actor_rollout_ref.rollout.n=4",
                                                             "data.train_batch_size=8", *overrides])


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["actor_rollout_ref.rollout.n=1"], r"rollout\.n=1, set it to >= 2"),
        (["algorithm.rollout_correction.bypass_mode=True"], "bypass_mode=True skips"),
        (["actor_rollout_ref.actor.strategy=megatron"], "strategy=megatron is not supported"),
        (["trainer.v1.trainer_mode=separate_async"], "trainer_mode in"),
        (["trainer.n_gpus_per_node=3"], r"train_batch_size=8 must be a multiple of .* size 3"),
        (["+algorithm.resrl.rank=0"], r"resrl\.rank must be >= 1"),
        (["+algorithm.resrl.ranks=8"], r"unknown resrl setting\(s\) \['ranks'\]"),
    ],
)
def test_refusals_before_training(overrides, message):
    from verl_resrl.integration.settings import check_config

    with pytest.raises(ValueError, match=message):
        check_config(_compose(*overrides))


def test_valid_config_passes_and_reads_overrides():
    from verl_resrl.integration.settings import check_config

    assert check_config(_compose("+algorithm.resrl.rank=32", "+algorithm.resrl.split_by=advantage")) == ResRLConfig(
        rank=32, split_by="advantage")


def test_main_ppo_refuses_before_ray_starts(tmp_path):
    """The driver's validate_config raises the ResRL error; no Ray cluster is started."""
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", "algorithm.adv_estimator=resrl",
           "actor_rollout_ref.rollout.n=1", f"hydra.run.dir={tmp_path}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=dict(os.environ, HYDRA_FULL_ERROR="1"))
    assert out.returncode != 0
    assert "rollout.n=1, set it to >= 2" in out.stderr
    assert "ray.init" not in out.stderr and "Started a local Ray instance" not in out.stderr
