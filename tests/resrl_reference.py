"""A slow reference of ResRL written directly from the formulas: loops over groups and samples, float64, full SVD.

Used only by the tests to check the fast, batched implementation. No sub-sampling: tests that compare
against it keep every group's positive tokens within ``max_pos_tokens``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def reference_residuals(hidden, response_mask, group_ids, is_positive, config):
    batch, length, width = hidden.shape
    residual = torch.zeros(batch, length, dtype=torch.float64)
    has_residual = torch.zeros(batch, length, dtype=torch.bool)
    ranks = {}
    for g in dict.fromkeys(group_ids):
        members = [i for i in range(batch) if group_ids[i] == g]
        pos = [i for i in members if is_positive[i]]
        neg = [i for i in members if not is_positive[i]]
        if not pos or not neg:
            continue
        states = {i: hidden[i][response_mask[i].bool()].double() for i in members}
        if any(not torch.isfinite(states[i]).all() for i in members):
            continue
        x_pos = torch.cat([_ln(states[i], config.layer_norm_eps) for i in pos])
        if x_pos.shape[0] < config.min_pos_tokens:
            continue
        mean = x_pos.mean(dim=0)
        _, sigma, vh = torch.linalg.svd(x_pos - mean, full_matrices=False)
        numerical = int((sigma > config.rank_rtol * sigma[0]).sum()) if sigma[0] > 0 else 0
        k = max(0, min(config.rank, x_pos.shape[0] - 1, width, numerical))
        basis = vh[:k].T
        ranks[g] = k
        for i in neg:
            where = response_mask[i].bool()
            if not where.any():
                continue
            centred = _ln(states[i], config.layer_norm_eps) - mean
            outside = centred - (centred @ basis) @ basis.T
            residual[i, where] = (outside**2).sum(dim=-1) / width
            has_residual[i, where] = True
    return residual, has_residual, ranks


def reference_weights(residual, has_residual, response_mask, group_ids, config):
    weights = torch.ones(residual.shape, dtype=torch.float64)
    for g in dict.fromkeys(group_ids):
        rows = torch.tensor([gid == g for gid in group_ids])
        valid = has_residual.bool() & response_mask.bool() & rows.unsqueeze(1)
        if not valid.any():
            continue
        values = residual[valid].double()
        lo, hi = torch.quantile(values, config.q_low), torch.quantile(values, config.q_high)
        if hi - lo < config.degenerate_range:
            weights[valid] = (config.min_weight + 1) / 2
        else:
            z = ((values - lo) / (hi - lo)).clamp(0, 1)
            weights[valid] = config.min_weight + (1 - config.min_weight) * z
    return weights


def reference_grpo(token_level_rewards, group_ids, norm_adv_by_std=True, epsilon=1e-6):
    """Per-response GRPO advantage, written as veRL's loop over groups."""
    scores = token_level_rewards.double().sum(dim=-1)
    out = torch.zeros_like(scores)
    for g in dict.fromkeys(group_ids):
        idx = [i for i in range(len(group_ids)) if group_ids[i] == g]
        s = scores[idx]
        mean, std = (torch.tensor(0.0), torch.tensor(1.0)) if len(idx) == 1 else (s.mean(), s.std())
        out[idx] = (s - mean) / (std + epsilon) if norm_adv_by_std else s - mean
    return out


def reference_advantages(token_level_rewards, response_mask, group_ids, residual, has_residual, config,
                         norm_adv_by_std=True):
    adv = reference_grpo(token_level_rewards, group_ids, norm_adv_by_std, config.adv_epsilon)
    if config.split_by == "reward":
        positive = token_level_rewards.double().sum(dim=-1) > 0
    else:
        positive = adv > 0
    weights = reference_weights(residual, has_residual & ~positive.unsqueeze(1), response_mask, group_ids, config)
    out = torch.zeros(response_mask.shape, dtype=torch.float64)
    for i in range(len(group_ids)):
        scale = torch.full_like(weights[i], config.pos_weight) if positive[i] else weights[i]
        out[i] = adv[i] * scale * response_mask[i].double()
    return out


def _ln(x, eps):
    return F.layer_norm(x, (x.shape[-1],), eps=eps)
