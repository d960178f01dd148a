"""Rank correlation and bootstrap intervals for the probe's per-group values."""

from __future__ import annotations

import random
import statistics

import torch


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """``[N]`` ranks 0..N-1 of ``values``, ties sharing their mean rank."""
    order = torch.argsort(values, stable=True)
    sorted_values = values[order]
    ranks = torch.empty(values.numel(), dtype=torch.float64)
    start = 0
    n = values.numel()
    while start < n:
        end = start
        while end + 1 < n and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2.0
        start = end + 1
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float | None:
    """Spearman's rho of two ``[N]`` tensors (ties averaged); None when either is constant or N < 3."""
    if x.numel() != y.numel():
        raise ValueError(f"spearman needs equal lengths, got {x.numel()} and {y.numel()}")
    if x.numel() < 3:
        return None
    rx, ry = average_ranks(x.double()), average_ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / denominator if denominator > 0 else None


def bootstrap_median(values: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """``{"median", "ci": [lo, hi], "n"}``: the median and its 95% percentile-bootstrap interval (None if empty)."""
    if not values:
        return {"median": None, "ci": [None, None], "n": 0}
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    return {"median": statistics.median(values), "ci": [medians[int(0.025 * resamples)],
                                                         medians[int(0.975 * resamples) - 1]], "n": len(values)}
