"""ResRL metrics of one step, from the per-sample fields the actor returned (dp-size independent)."""

from __future__ import annotations

import math

import torch

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.residual import GROUP_STATUSES
from verl_resrl.core.weights import negative_token_weights

STATUS = {name: code for code, name in enumerate(GROUP_STATUSES)}


def resrl_metrics(inputs: dict, response_mask: torch.Tensor, uids: list, advantages: torch.Tensor,
                  config: ResRLConfig) -> dict[str, float]:
    """``resrl/*`` metrics: coverage, group counts, weight quantiles, residual mean, rank, time."""
    mask = response_mask.bool()
    positive = inputs["resrl_positive"].bool()
    status = inputs["resrl_status"].long()
    has = inputs["resrl_has_residual"].bool() & mask & ~positive.unsqueeze(1)
    residual = inputs["resrl_residual"].float()

    negative = ~positive & mask.any(dim=1)
    in_mixed = negative & (status != STATUS["not_mixed"])
    weighted = in_mixed & has.any(dim=1)
    first_of_group = {}
    for i, u in enumerate(uids):
        first_of_group.setdefault(u, i)
    heads = torch.tensor(list(first_of_group.values()), dtype=torch.long)
    group_status = status[heads]

    weights = negative_token_weights(residual, has, response_mask, uids, config)[has]
    metrics = {
        "resrl/coverage": float(weighted.sum() / in_mixed.sum()) if bool(in_mixed.any()) else 1.0,
        "resrl/groups": float(len(heads)),
        "resrl/mixed_groups": float((group_status != STATUS["not_mixed"]).sum()),
        "resrl/computed_groups": float((group_status == STATUS["computed"]).sum()),
        "resrl/skipped_groups_few_pos_tokens": float((group_status == STATUS["few_pos_tokens"]).sum()),
        "resrl/skipped_groups_nonfinite": float((group_status == STATUS["nonfinite"]).sum()),
        "resrl/positive_responses": float(positive.sum()),
        "resrl/weighted_negative_tokens": float(has.sum()),
        "resrl/time_s": float(inputs["resrl_seconds"].float().max()) if inputs["resrl_seconds"].numel() else 0.0,
        "resrl/advantage_abs_mean": float(advantages[mask].abs().mean()) if bool(mask.any()) else 0.0,
    }
    computed = group_status == STATUS["computed"]
    metrics["resrl/rank_mean"] = float(inputs["resrl_rank"][heads][computed].float().mean()) if bool(computed.any()) else 0.0
    if weights.numel():
        q = quantiles(weights.float(), (0.1, 0.5, 0.9))
        metrics.update({
            "resrl/neg_weight_mean": float(weights.mean()),
            "resrl/neg_weight_p10": float(q[0]), "resrl/neg_weight_p50": float(q[1]), "resrl/neg_weight_p90": float(q[2]),
            "resrl/residual_mean": float(residual[has].mean()),
        })
    return metrics


def quantiles(values: torch.Tensor, qs) -> torch.Tensor:
    """``torch.quantile(values, qs)`` (linear interpolation) of a non-empty tensor of any size.

    ``torch.quantile`` refuses more than 2^24 elements; a step of 512 prompts x 8 responses x 4096 tokens
    weights up to 2^24 negative tokens. Each level interpolates between two order statistics (``kthvalue``,
    linear time).
    """
    flat = values.reshape(-1)
    last = flat.numel() - 1
    out = []
    for q in qs:
        pos = q * last
        below = math.floor(pos)
        lower = flat.kthvalue(below + 1).values
        upper = flat.kthvalue(min(below + 2, last + 1)).values if pos > below else lower
        out.append(torch.lerp(lower, upper, pos - below))
    return torch.stack(out)
