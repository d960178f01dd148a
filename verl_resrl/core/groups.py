"""Prompt groups: ids to indices, per-group seeds and per-group quantiles, vectorised over the batch."""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence

import torch


def group_index(group_ids: Sequence[Hashable], device: torch.device | str = "cpu") -> tuple[torch.Tensor, list]:
    """Map per-sample group ids (any hashable: veRL's uid strings, ints, ...) to dense indices.

    Returns:
        index: ``(B,)`` int64, ``index[i]`` = position of ``group_ids[i]`` in ``unique``.
        unique: the distinct ids in order of first appearance.
    """
    positions: dict = {}
    index = [positions.setdefault(_hashable(g), len(positions)) for g in group_ids]
    return torch.tensor(index, dtype=torch.long, device=device), list(positions)


def _hashable(group_id):
    # numpy scalars/strings hash like their Python values; 0-d tensors do not.
    if isinstance(group_id, torch.Tensor):
        return group_id.item()
    return group_id


def group_seed(base_seed: int, group_id: Hashable) -> int:
    """A 63-bit seed that depends only on ``base_seed`` and the group id (never on batch order or process)."""
    digest = hashlib.blake2b(f"{base_seed}\x00{group_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def group_quantiles(values: torch.Tensor, groups: torch.Tensor, num_groups: int, qs: Sequence[float]) -> torch.Tensor:
    """Per-group quantiles with linear interpolation (``torch.quantile``'s default), no loop over groups.

    Args:
        values: ``(N,)`` finite values.
        groups: ``(N,)`` int64 group index of each value, in ``[0, num_groups)``.
        qs: quantile levels in [0, 1].

    Returns:
        ``(len(qs), num_groups)``; groups without values get 0.
    """
    out = values.new_zeros(len(qs), num_groups)
    if values.numel() == 0:
        return out
    by_value = torch.argsort(values, stable=True)
    order = by_value[torch.argsort(groups[by_value], stable=True)]
    sorted_values = values[order]
    counts = torch.bincount(groups, minlength=num_groups)
    offsets = torch.cumsum(counts, 0) - counts
    present = counts > 0
    last = (counts - 1).clamp_min(0).to(values.dtype)
    for row, q in enumerate(qs):
        pos = q * last
        below = pos.floor()
        frac = pos - below
        i_lo = offsets + below.long()
        i_hi = offsets + torch.minimum(below.long() + 1, (counts - 1).clamp_min(0))
        i_lo, i_hi = i_lo.clamp(0, values.numel() - 1), i_hi.clamp(0, values.numel() - 1)
        lo, hi = sorted_values[i_lo], sorted_values[i_hi]
        out[row] = torch.where(present, lo + frac * (hi - lo), torch.zeros_like(lo))
    return out
