"""Synthetic ResRL batches for the tests: group layouts, masks and hidden states with a chosen spectrum."""

from __future__ import annotations

import torch


def decaying_states(shape, generator, decay=1.0, dtype=torch.float32):
    """Hidden states whose covariance spectrum decays like i^-decay (real hidden states are anisotropic)."""
    *lead, width = shape
    rotation = torch.linalg.qr(torch.randn(width, width, generator=generator, dtype=torch.float64)).Q
    scale = torch.arange(1, width + 1, dtype=torch.float64) ** -decay
    coef = torch.randn(*lead, width, generator=generator, dtype=torch.float64) * scale
    offset = torch.randn(width, generator=generator, dtype=torch.float64) * 0.1
    return (coef @ rotation.T * 10 + offset).to(dtype)


def make_batch(group_sizes, length, width, generator, pos_fraction=0.5, dtype=torch.float32, decay=1.0,
               min_len=1, interleave=False):
    """A batch of responses in groups: hidden (B, T, H), mask (B, T), group ids, is_positive, rewards (B, T).

    Every group with two or more responses has at least one positive and one negative response.
    """
    group_ids, positive = [], []
    for g, size in enumerate(group_sizes):
        n_pos = max(1, min(size - 1, round(size * pos_fraction))) if size > 1 else 1
        for i in range(size):
            group_ids.append(f"uid-{g}")
            positive.append(i < n_pos)
    batch = len(group_ids)
    lengths = torch.randint(min_len, length + 1, (batch,), generator=generator)
    mask = (torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)).float()
    hidden = decaying_states((batch, length, width), generator, decay, dtype)
    is_positive = torch.tensor(positive)
    rewards = torch.zeros(batch, length)
    rewards[torch.arange(batch), lengths - 1] = is_positive.float()
    if interleave:
        order = torch.randperm(batch, generator=generator)
        hidden, mask, is_positive, rewards = hidden[order], mask[order], is_positive[order], rewards[order]
        group_ids = [group_ids[i] for i in order.tolist()]
    return hidden, mask, group_ids, is_positive, rewards
