"""ResRL advantages: GRPO's outcome advantage, re-weighted per response and per token.

    A_i   = (r_i - mean_g r) / (std_g r + eps)        (GRPO; without the division if norm_adv_by_std=False)
    A~_i  = lambda * A_i                               for positive responses i in P
    A~_it = w_it * A_i                                 for negative responses, w from the residual energy

The clipped PPO surrogate is positively homogeneous in A, so scaling A by w > 0 is exactly weighting the
token's loss by w: everything downstream is the unchanged PPO/GRPO update.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.groups import group_index
from verl_resrl.core.weights import negative_token_weights


def grpo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    norm_adv_by_std: bool = True,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """GRPO's per-response advantage, as veRL's ``compute_grpo_outcome_advantage`` defines it.

    The score of a response is the sum of its token-level rewards. A group of one response has mean 0 and
    std 1 (as in veRL); otherwise mean and unbiased std over the group. Equal rewards give 0, never NaN.

    Args:
        token_level_rewards: ``(B, T)``.
        response_mask: ``(B, T)``.
        group_ids: ``B`` hashable group ids.

    Returns:
        ``(B,)`` float32 advantage of each response.
    """
    _check_rewards(token_level_rewards, response_mask, group_ids)
    scores = token_level_rewards.float().sum(dim=-1)
    index, unique = group_index(group_ids, scores.device)
    counts = torch.bincount(index, minlength=len(unique)).to(scores.dtype)
    mean = scores.new_zeros(len(unique)).index_add_(0, index, scores) / counts
    sq_dev = (scores - mean[index]).pow(2)
    var = scores.new_zeros(len(unique)).index_add_(0, index, sq_dev) / (counts - 1).clamp_min(1)
    single = counts == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(var), var.sqrt())
    centred = scores - mean[index]
    return centred / (std[index] + epsilon) if norm_adv_by_std else centred


def positive_responses(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    config: ResRLConfig,
    norm_adv_by_std: bool = True,
) -> torch.Tensor:
    """``(B,)`` bool: the positive set P (reward > 0, or GRPO advantage > 0 with ``split_by="advantage"``)."""
    if config.split_by == "advantage":
        advantage = grpo_outcome_advantage(
            token_level_rewards, response_mask, group_ids, norm_adv_by_std, config.adv_epsilon
        )
        return advantage > 0
    _check_rewards(token_level_rewards, response_mask, group_ids)
    return token_level_rewards.float().sum(dim=-1) > 0


def resrl_advantages(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    residual: torch.Tensor,
    has_residual: torch.Tensor,
    config: ResRLConfig,
    norm_adv_by_std: bool = True,
    is_positive: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ResRL token-level advantages.

    Args:
        token_level_rewards: ``(B, T)`` outcome rewards (veRL puts them on the last response token).
        response_mask: ``(B, T)``.
        group_ids: ``B`` hashable group ids (veRL's ``uid``).
        residual, has_residual: ``(B, T)`` from :func:`verl_resrl.compute_residuals`. Positive responses'
            advantages are scaled by ``pos_weight`` whatever ``has_residual`` says; negative tokens without a
            residual (skipped groups) keep weight 1.
        is_positive: optional ``(B,)`` bool positive set; by default :func:`positive_responses`. Pass the set
            the residuals were computed with when the rewards were changed since (e.g. a KL penalty).

    Returns:
        ``(advantages, returns)``, both ``(B, T)`` float32 and equal, zero outside the response mask.
    """
    advantage = grpo_outcome_advantage(
        token_level_rewards, response_mask, group_ids, norm_adv_by_std, config.adv_epsilon
    )
    if is_positive is None:
        positive = positive_responses(token_level_rewards, response_mask, group_ids, config, norm_adv_by_std)
    else:
        positive = torch.as_tensor(is_positive, device=advantage.device).bool().reshape(-1)
        if positive.numel() != advantage.numel():
            raise ValueError(f"is_positive has {positive.numel()} entries for a batch of {advantage.numel()} responses")
    negative_residual = has_residual.bool() & ~positive.unsqueeze(1)
    weights = negative_token_weights(residual, negative_residual, response_mask, group_ids, config)
    scale = torch.where(positive.unsqueeze(1), torch.full_like(weights, config.pos_weight), weights)
    advantages = advantage.unsqueeze(1) * scale * response_mask.float()
    return advantages, advantages.clone()


def _check_rewards(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, group_ids) -> None:
    if token_level_rewards.dim() != 2 or token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            f"token_level_rewards {tuple(token_level_rewards.shape)} and response_mask "
            f"{tuple(response_mask.shape)} must both be (B, T)"
        )
    if len(group_ids) != token_level_rewards.shape[0]:
        raise ValueError(f"got {len(group_ids)} group ids for a batch of {token_level_rewards.shape[0]} responses")
    finite = torch.isfinite(token_level_rewards).all(dim=-1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        raise ValueError(f"non-finite token_level_rewards in response(s) {bad[:10]}")
