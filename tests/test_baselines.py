"""verl_resrl.baselines: PSR / NSR / W-REINFORCE values, masks, registration."""

import os
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from verl_resrl import baselines


def _outcome_batch(scores, lengths, width=5):
    """Token rewards (bs, width) with each score on the last response token, and the response mask."""
    mask = torch.zeros(len(scores), width)
    rewards = torch.zeros(len(scores), width)
    for i, (score, length) in enumerate(zip(scores, lengths)):
        mask[i, :length] = 1
        rewards[i, length - 1] = score
    return rewards, mask


def _per_response(advantages, mask):
    """The single advantage value of each response; asserts it is constant over the response, 0 outside."""
    values = []
    for row, row_mask in zip(advantages, mask):
        inside = row[row_mask.bool()]
        assert torch.all(inside == inside[0])
        assert torch.all(row[~row_mask.bool()] == 0)
        values.append(inside[0].item())
    return values


SCORES_01 = [1.0, 0.0, 1.0, 0.0]
LENGTHS = [5, 3, 1, 4]


def test_zero_one_rewards_match_zhu_et_al():
    rewards, mask = _outcome_batch(SCORES_01, LENGTHS)
    index = ["a", "a", "b", "b"]
    psr, psr_ret = baselines.compute_psr_advantage(rewards, mask, index=index)
    nsr, _ = baselines.compute_nsr_advantage(rewards, mask, index=index)
    wr, _ = baselines.compute_w_reinforce_advantage(rewards, mask, config=None, index=index)
    assert _per_response(psr, mask) == [1.0, 0.0, 1.0, 0.0]  # A = r
    assert _per_response(nsr, mask) == [0.0, -1.0, 0.0, -1.0]  # A = r - 1
    assert _per_response(wr, mask) == pytest.approx([0.1, -1.0, 0.1, -1.0])  # lambda / -1
    assert torch.equal(psr_ret, psr)


def test_signed_and_length_scaled_rewards():
    rewards, mask = _outcome_batch([1.0, -1.0, 0.85, -1.0], LENGTHS)
    config = OmegaConf.create({"adv_estimator": "w_reinforce", "w_reinforce_lambda": 0.5})
    assert _per_response(baselines.compute_psr_advantage(rewards, mask)[0], mask) == pytest.approx(
        [1.0, 0.0, 0.85, 0.0])
    assert _per_response(baselines.compute_nsr_advantage(rewards, mask)[0], mask) == [0.0, -1.0, 0.0, -1.0]
    wr, _ = baselines.compute_w_reinforce_advantage(rewards, mask, config=config)
    assert _per_response(wr, mask) == pytest.approx([0.5, -1.0, 0.425, -1.0])


def test_rewards_outside_the_mask_are_ignored():
    rewards, mask = _outcome_batch([0.0, 1.0], [2, 3])
    rewards[0, 4] = 5.0  # padding position
    nsr, _ = baselines.compute_nsr_advantage(rewards, mask)
    assert _per_response(nsr, mask) == [-1.0, 0.0]


def test_w_reinforce_lambda_config():
    assert baselines.w_reinforce_lambda(None) == 0.1
    assert baselines.w_reinforce_lambda(OmegaConf.create({"gamma": 1.0})) == 0.1
    assert baselines.w_reinforce_lambda({"w_reinforce_lambda": 0.3}) == 0.3
    with pytest.raises(ValueError, match="w_reinforce_lambda"):
        baselines.w_reinforce_lambda({"w_reinforce_lambda": -1})


def test_register_is_idempotent_and_uses_veRL_registry():
    from verl.trainer.ppo import core_algos

    baselines.register()
    baselines.register()
    for name in baselines.ESTIMATOR_NAMES:
        assert core_algos.get_adv_estimator_fn(name) is baselines.ESTIMATORS[name]


def test_veRL_compute_advantage_dispatches_to_w_reinforce():
    """The registered function runs through veRL's own dispatch (kwargs: rewards, mask, config, index)."""
    import numpy as np
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    baselines.register()
    rewards, mask = _outcome_batch(SCORES_01, LENGTHS)
    data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": mask},
                               non_tensors={"uid": np.array(["a", "a", "b", "b"], dtype=object)})
    config = OmegaConf.create({"adv_estimator": "w_reinforce", "w_reinforce_lambda": 0.2})
    out = compute_advantage(data, adv_estimator="w_reinforce", config=config)
    assert _per_response(out.batch["advantages"], mask) == pytest.approx([0.2, -1.0, 0.2, -1.0])


def test_entry_point_registers_baselines_on_import_verl():
    """A fresh process: `import verl` alone (the verl.plugins entry point) must make the estimators and the
    ``length_scaled`` reward manager available (plugin._components() lists both modules)."""
    code = ("import verl\nfrom verl.trainer.ppo.core_algos import get_adv_estimator_fn\n"
            "from verl.experimental.reward_loop.reward_manager import get_reward_manager_cls\n"
            "assert get_reward_manager_cls('length_scaled').__name__ == 'LengthScaledRewardManager'\n"
            "print(sorted(n for n in ('psr', 'nsr', 'w_reinforce') if get_adv_estimator_fn(n)))")
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_PLUGINS", "VERL_PLATFORM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['nsr', 'psr', 'w_reinforce']"
