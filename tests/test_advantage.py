import dataclasses

import numpy as np
import pytest
import torch

from resrl_reference import reference_advantages, reference_grpo
from synthetic import make_batch
from verl_resrl import ResRLConfig, compute_residuals, grpo_outcome_advantage, positive_responses, resrl_advantages


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_matches_verl(norm):
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    gen = torch.Generator().manual_seed(0)
    _, mask, gids, _, _ = make_batch([4, 1, 3, 6, 2], length=12, width=4, generator=gen, interleave=True)
    rewards = torch.zeros_like(mask)
    last = mask.sum(-1).long() - 1
    rewards[torch.arange(len(gids)), last] = torch.randint(-1, 3, (len(gids),), generator=gen).float()
    ours = grpo_outcome_advantage(rewards, mask, gids, norm_adv_by_std=norm)
    theirs, _ = compute_grpo_outcome_advantage(rewards, mask, np.array(gids, dtype=object), norm_adv_by_std_in_grpo=norm)
    torch.testing.assert_close(ours.unsqueeze(1) * mask, theirs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.double(), reference_grpo(rewards, gids, norm), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("split_by", ["reward", "advantage"])
@pytest.mark.parametrize("norm", [True, False])
def test_resrl_advantages_match_reference(split_by, norm):
    gen = torch.Generator().manual_seed(1)
    hidden, mask, gids, _, _ = make_batch([4, 5, 3, 1], length=16, width=32, generator=gen, interleave=True)
    last = mask.sum(-1).long() - 1
    rewards = torch.zeros_like(mask)
    rewards[torch.arange(len(gids)), last] = torch.tensor([1.0, -1.0, 0.5, 0.0, 1.0, -1.0, 1.0, 1.0, -1.0, 0.7, 0.0, 1.0, -1.0])
    cfg = ResRLConfig(rank=8, split_by=split_by, pos_weight=0.3)
    positive = positive_responses(rewards, mask, gids, cfg, norm)
    res = compute_residuals(hidden, mask, gids, positive, cfg)
    adv, ret = resrl_advantages(rewards, mask, gids, res.residual, res.has_residual, cfg, norm)
    ref = reference_advantages(rewards, mask, gids, res.residual, res.has_residual, cfg, norm)
    torch.testing.assert_close(adv.double(), ref, atol=1e-5, rtol=1e-5)
    assert torch.equal(adv, ret)
    grpo = grpo_outcome_advantage(rewards, mask, gids, norm).unsqueeze(1) * mask
    # positives: exactly lambda * A; negatives: A scaled by a weight in [xi, 1] (same sign, not larger)
    torch.testing.assert_close(adv[positive], cfg.pos_weight * grpo[positive])
    neg = ~positive
    assert (adv[neg] * grpo[neg] >= 0).all() and (adv[neg].abs() <= grpo[neg].abs() + 1e-6).all()
    assert (adv[neg].abs() >= cfg.min_weight * grpo[neg].abs() - 1e-6).all()


def test_split_by_advantage_uses_the_sign():
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.5], [0.0, 0.2]])
    mask = torch.ones(3, 2)
    by_reward = positive_responses(rewards, mask, ["g"] * 3, ResRLConfig())
    by_adv = positive_responses(rewards, mask, ["g"] * 3, ResRLConfig(split_by="advantage"))
    assert by_reward.tolist() == [True, True, True]
    assert by_adv.tolist() == [True, False, False]


def test_equal_rewards_give_zero_advantages_without_nan():
    gen = torch.Generator().manual_seed(2)
    hidden, mask, gids, _, _ = make_batch([4, 4], length=8, width=16, generator=gen)
    for value in (0.0, 1.0, -1.0):
        rewards = torch.zeros_like(mask)
        rewards[:, 0] = value
        cfg = ResRLConfig()
        pos = positive_responses(rewards, mask, gids, cfg)
        res = compute_residuals(hidden, mask, gids, pos, cfg)
        adv, _ = resrl_advantages(rewards, mask, gids, res.residual, res.has_residual, cfg)
        assert torch.isfinite(adv).all() and (adv == 0).all()


def test_skipped_groups_keep_grpo_for_negatives_and_lambda_for_positives():
    mask = torch.ones(4, 6)
    rewards = torch.zeros(4, 6)
    rewards[:2, -1] = 1.0
    cfg = ResRLConfig(pos_weight=0.25)
    none = torch.zeros(4, 6, dtype=torch.bool)
    adv, _ = resrl_advantages(rewards, mask, ["g"] * 4, torch.zeros(4, 6), none, cfg)
    grpo = grpo_outcome_advantage(rewards, mask, ["g"] * 4).unsqueeze(1).expand(4, 6)
    torch.testing.assert_close(adv[:2], 0.25 * grpo[:2])
    torch.testing.assert_close(adv[2:], grpo[2:])


def test_nonfinite_rewards_are_reported_with_the_sample():
    rewards = torch.zeros(3, 4)
    rewards[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"response\(s\) \[1\]"):
        resrl_advantages(rewards, torch.ones(3, 4), ["g"] * 3, torch.zeros(3, 4), torch.zeros(3, 4, dtype=torch.bool),
                         ResRLConfig())


def test_advantage_split_with_residuals_on_positive_rows_ignores_them():
    rewards = torch.tensor([[1.0], [0.0], [0.0]])
    mask = torch.ones(3, 1)
    cfg = ResRLConfig()
    residual = torch.tensor([[100.0], [1.0], [2.0]])
    has = torch.ones(3, 1, dtype=torch.bool)
    adv, _ = resrl_advantages(rewards, mask, ["g"] * 3, residual, has, cfg)
    cfg2 = dataclasses.replace(cfg)
    adv2, _ = resrl_advantages(rewards, mask, ["g"] * 3, residual, has & torch.tensor([[False], [True], [True]]), cfg2)
    torch.testing.assert_close(adv, adv2)
