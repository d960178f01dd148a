"""Residual energy -> token weight, normalised robustly inside each prompt group.

For the valid negative tokens of a group, with lo = quantile(R, q_low) and hi = quantile(R, q_high):

    z = clamp((R - lo) / (hi - lo), 0, 1)
    w = xi + (1 - xi) * z                       xi = min_weight

so negative tokens that lie inside the positive subspace (small R) are penalised least (w = xi) and tokens
with little shared structure are penalised fully (w = 1). A degenerate range (hi - lo < degenerate_range)
gives every valid negative token of the group (xi + 1) / 2. Tokens without a residual keep weight 1.

With ``weights="shuffled"`` (a research diagnostic) each group's weights are then permuted among its valid
negative tokens with a generator seeded by (seed, group id): same multiset of weights per group, no information
about which token is which.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.groups import group_index, group_quantiles, group_seed


def negative_token_weights(
    residual: torch.Tensor,
    has_residual: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    config: ResRLConfig,
) -> torch.Tensor:
    """Token weights in ``[min_weight, 1]``.

    Args:
        residual: ``(B, T)`` residual energy (only read where ``has_residual``).
        has_residual: ``(B, T)`` bool, tokens that received a residual (negative tokens of computed groups).
        response_mask: ``(B, T)`` 1 for response tokens.
        group_ids: ``B`` hashable group ids (veRL's ``uid``).

    Returns:
        ``(B, T)`` float32 weights; 1 wherever there is no valid residual.
    """
    if residual.shape != has_residual.shape or residual.shape != response_mask.shape:
        raise ValueError(
            f"residual {tuple(residual.shape)}, has_residual {tuple(has_residual.shape)} and "
            f"response_mask {tuple(response_mask.shape)} must have the same (B, T) shape"
        )
    if len(group_ids) != residual.shape[0]:
        raise ValueError(f"got {len(group_ids)} group ids for a batch of {residual.shape[0]} responses")
    weights = torch.ones(residual.shape, dtype=torch.float32, device=residual.device)
    valid = has_residual.bool() & response_mask.bool()
    if not bool(valid.any()):
        return weights

    values = residual[valid].float()
    if not bool(torch.isfinite(values).all()):
        bad = sorted({int(b) for b in valid.nonzero()[:, 0][~torch.isfinite(values)].tolist()})
        raise ValueError(f"non-finite residual marked valid for response(s) {bad[:10]}")

    index, unique = group_index(group_ids, residual.device)
    token_group = index.unsqueeze(1).expand_as(valid)[valid]
    lo, hi = group_quantiles(values, token_group, len(unique), (config.q_low, config.q_high))
    span = (hi - lo)[token_group]
    xi = config.min_weight
    z = ((values - lo[token_group]) / span.clamp_min(torch.finfo(torch.float32).tiny)).clamp(0.0, 1.0)
    w = xi + (1.0 - xi) * z
    w = torch.where(span < config.degenerate_range, torch.full_like(w, (xi + 1.0) / 2.0), w)
    if config.weights == "shuffled":
        w = shuffle_within_groups(w, token_group, unique, config.seed)
    weights[valid] = w
    return weights


def shuffle_within_groups(values: torch.Tensor, groups: torch.Tensor, group_ids: Sequence[Hashable],
                          seed: int) -> torch.Tensor:
    """Permute ``values`` (N,) among the entries of each group; group ``g``'s permutation is drawn from a
    generator seeded by ``(seed, group_ids[g])`` alone, so it does not depend on other groups.

    Args:
        values: ``(N,)``.
        groups: ``(N,)`` int64 group index of each value, into ``group_ids``.
    """
    out = values.clone()
    for g in torch.unique(groups).tolist():
        positions = (groups == g).nonzero().squeeze(1)
        generator = torch.Generator().manual_seed(group_seed(seed, f"shuffled-weights\x00{group_ids[g]}"))
        perm = torch.randperm(positions.numel(), generator=generator).to(positions.device)
        out[positions] = values[positions[perm]]
    return out
