"""Residual energy of negative tokens outside their group's positive subspace.

For a prompt group with positive responses P and negative responses N, hidden states h of the response tokens:

    x     = LayerNorm(h)                         (no affine parameters, fp32)
    mu+   = mean of x over (at most M sampled) positive tokens
    V_k   = top-k right singular vectors of the centred positive tokens
    R(x)  = || (x - mu+) - V_k V_k^T (x - mu+) ||^2 / H          for every token of every response in N

A group is skipped (no residual, its negative tokens keep weight 1) when it has no positive or no negative
response, fewer than ``min_pos_tokens`` positive tokens, or a non-finite hidden state in any of its tokens.

Everything random (the sub-sample of positive tokens, the range finder's test matrix) derives from the seed
and the group id, and the sub-sample is drawn from the group's tokens in an order that depends on their
content only, so results do not depend on the order of samples in the batch, on sharding, or on which other
groups are present.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.groups import group_index, group_seed
from verl_resrl.core.subspace import positive_subspace

GROUP_STATUSES = ("not_mixed", "computed", "few_pos_tokens", "nonfinite", "no_negative_tokens")

# The positive tokens of several groups are padded into one (G, n, H) fp32 batch of at most this many elements
# (a group larger than this gets a batch of its own), centred in place. 32 MiB: on a GPU one Qwen3-4B group
# (4096 x 2560) already exceeds it, and on CPU larger batches are not faster.
_CHUNK_ELEMENTS = 1 << 23
# Whole-batch passes over the states (finite check, fingerprint) and the projection of negative tokens work on
# fp32 copies of at most this many elements at a time.
_BLOCK_ELEMENTS = 1 << 22


@dataclass
class ResidualStats:
    """What happened to the groups of one batch: per-group outcome and rank, plus token/response counts."""

    # per group id: one of GROUP_STATUSES, and the subspace rank used (computed groups only)
    group_status: dict = field(default_factory=dict)
    group_rank: dict = field(default_factory=dict)
    nonfinite_tokens: int = 0
    subsampled_groups: int = 0
    neg_responses_mixed: int = 0  # non-empty negative responses in mixed groups
    neg_responses_weighted: int = 0  # ... that received residuals

    def _count(self, *statuses: str) -> int:
        return sum(status in statuses for status in self.group_status.values())

    @property
    def groups(self) -> int:
        return len(self.group_status)

    @property
    def mixed_groups(self) -> int:
        """Groups with at least one positive and one negative response."""
        return self.groups - self._count("not_mixed")

    @property
    def computed_groups(self) -> int:
        """Mixed groups whose negative tokens received residuals."""
        return self._count("computed")

    @property
    def skipped_few_pos_tokens(self) -> int:
        return self._count("few_pos_tokens")

    @property
    def skipped_nonfinite(self) -> int:
        return self._count("nonfinite")

    @property
    def coverage(self) -> float:
        """Share of non-empty negative responses of mixed groups that received residuals (1.0 if none)."""
        return self.neg_responses_weighted / self.neg_responses_mixed if self.neg_responses_mixed else 1.0

    @property
    def rank_sum(self) -> int:
        return sum(self.group_rank.values())

    @property
    def rank_min(self) -> int:
        return min(self.group_rank.values(), default=0)

    @property
    def rank_mean(self) -> float:
        return self.rank_sum / len(self.group_rank) if self.group_rank else 0.0

    def merge(self, other: ResidualStats) -> ResidualStats:
        counts = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)
                  if f.name not in ("group_status", "group_rank")}
        return ResidualStats(group_status={**self.group_status, **other.group_status},
                             group_rank={**self.group_rank, **other.group_rank}, **counts)


class Residuals(NamedTuple):
    residual: torch.Tensor  # (B, T) float32, 0 where has_residual is False
    has_residual: torch.Tensor  # (B, T) bool
    stats: ResidualStats


def layer_norm(hidden: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm over the last dimension without affine parameters, in fp32."""
    return F.layer_norm(hidden.float(), (hidden.shape[-1],), eps=eps)


def compute_residuals(
    hidden: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable],
    is_positive: torch.Tensor,
    config: ResRLConfig,
    generator: torch.Generator | None = None,
) -> Residuals:
    """Residual energy of every negative response token w.r.t. its group's positive subspace.

    Args:
        hidden: ``(B, T, H)`` response-aligned hidden states (any float dtype; the math is fp32).
        response_mask: ``(B, T)``, 1 for response tokens.
        group_ids: ``B`` hashable group ids (veRL's ``uid`` strings, ints, ...).
        is_positive: ``(B,)`` bool, the positive set P (see :func:`verl_resrl.positive_responses`).
        generator: optional; if given, the base seed is drawn from it instead of ``config.seed``.

    Returns:
        :class:`Residuals` ``(residual (B, T) float32, has_residual (B, T) bool, stats)``.

    The math runs in float32 with autocast disabled on ``hidden``'s device, whatever the caller's autocast
    state (veRL's forward pass runs under bf16 autocast; CUDA has no bf16 QR or SVD). Beyond the outputs it
    holds fp32 copies of at most ``_CHUNK_ELEMENTS`` positive-token elements plus one group's (or
    ``_BLOCK_ELEMENTS``) working copies, never a copy of the whole batch.
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be (B, T, H), got shape {tuple(hidden.shape)}")
    batch, length, width = hidden.shape
    if tuple(response_mask.shape) != (batch, length):
        raise ValueError(f"response_mask {tuple(response_mask.shape)} does not match hidden (B, T) = {(batch, length)}")
    if len(group_ids) != batch:
        raise ValueError(f"got {len(group_ids)} group ids for a batch of {batch} responses")
    is_positive = torch.as_tensor(is_positive, device=hidden.device).bool().reshape(-1)
    if is_positive.numel() != batch:
        raise ValueError(f"is_positive has {is_positive.numel()} entries for a batch of {batch} responses")

    base_seed = config.seed if generator is None else int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.autocast(device_type=hidden.device.type, enabled=False):
        return _compute_residuals(hidden, response_mask, group_ids, is_positive, config, base_seed)


def _compute_residuals(hidden, response_mask, group_ids, is_positive, config, base_seed) -> Residuals:
    batch, length, width = hidden.shape
    device = hidden.device
    mask = response_mask.bool().to(device)
    index, unique = group_index(group_ids, device)
    num_groups = len(unique)

    residual = torch.zeros(batch, length, dtype=torch.float32, device=device)
    has_residual = torch.zeros(batch, length, dtype=torch.bool, device=device)
    stats = ResidualStats()
    if batch == 0:
        return Residuals(residual, has_residual, stats)

    # Per-group bookkeeping, vectorised over samples.
    # A sum is non-finite iff a term is (or it overflows fp32, which LayerNorm could not handle either). bf16 has
    # fp32's range, so its own sum (no fp32 copy) gives the same answer; fp16's would overflow at 65504.
    if hidden.dtype in (torch.bfloat16, torch.float32, torch.float64):
        token_sum = hidden.sum(dim=-1)
    else:
        token_sum = _per_token(hidden, lambda x: x.sum(dim=-1))
    nonfinite_token = mask & ~torch.isfinite(token_sum)
    tokens = mask.sum(dim=1)
    nonempty = tokens > 0
    negative = ~is_positive

    def per_group(values: torch.Tensor) -> list[int]:
        return torch.zeros(num_groups, dtype=torch.long, device=device).index_add_(0, index, values.long()).tolist()

    pos_samples, neg_samples = per_group(is_positive), per_group(negative)
    pos_tokens = per_group(tokens * is_positive)
    neg_nonempty = per_group(negative & nonempty)
    nonfinite_per_group = per_group(nonfinite_token.sum(dim=1))
    stats.nonfinite_tokens = int(nonfinite_token.sum())

    active = []
    for g in range(num_groups):
        status = stats.group_status
        if not (pos_samples[g] and neg_samples[g]):
            status[unique[g]] = "not_mixed"
            continue
        stats.neg_responses_mixed += neg_nonempty[g]
        if nonfinite_per_group[g]:
            status[unique[g]] = "nonfinite"
        elif pos_tokens[g] < config.min_pos_tokens:
            status[unique[g]] = "few_pos_tokens"
        elif neg_nonempty[g]:
            status[unique[g]] = "computed"
            active.append(g)
        else:
            status[unique[g]] = "no_negative_tokens"
    if not active:
        return Residuals(residual, has_residual, stats)

    # Valid tokens sorted by (group, positive first); positions inside stay in (sample, token) order.
    sample_of, position_of = mask.nonzero(as_tuple=True)
    token_group = index[sample_of]
    token_key = token_group * 2 + negative[sample_of].long()
    order = torch.argsort(token_key, stable=True)
    sample_of, position_of = sample_of[order], position_of[order]
    segment = torch.bincount(token_key, minlength=2 * num_groups).tolist()
    starts = [0]
    for count in segment:
        starts.append(starts[-1] + count)

    sample_rank = None
    if any(pos_tokens[g] > config.max_pos_tokens for g in active):
        sample_rank = _content_rank(hidden, mask, base_seed)

    # Chunks of groups with similar positive-token counts share one padded batch.
    active.sort(key=lambda g: min(pos_tokens[g], config.max_pos_tokens))
    chunk: list[int] = []
    for g in active:
        n_max = min(pos_tokens[g], config.max_pos_tokens)
        if chunk and (len(chunk) + 1) * n_max * width > _CHUNK_ELEMENTS:
            _residuals_of_chunk(chunk, hidden, sample_of, position_of, starts, unique, sample_rank, base_seed,
                                config, residual, has_residual, stats)
            chunk = []
        chunk.append(g)
    _residuals_of_chunk(chunk, hidden, sample_of, position_of, starts, unique, sample_rank, base_seed,
                        config, residual, has_residual, stats)

    weighted = has_residual.any(dim=1) & negative
    stats.neg_responses_weighted = int(weighted.sum())
    return Residuals(residual, has_residual, stats)


def _residuals_of_chunk(chunk, hidden, sample_of, position_of, starts, unique, sample_rank, base_seed, config,
                        residual, has_residual, stats) -> None:
    """Subspaces of the groups in ``chunk`` (one batched call), then each group's negative residuals."""
    width = hidden.shape[-1]
    selected = []
    for g in chunk:
        lo, hi = starts[2 * g], starts[2 * g + 1]
        samples, positions = sample_of[lo:hi], position_of[lo:hi]
        if hi - lo > config.max_pos_tokens:
            samples, positions = _subsample(samples, positions, sample_rank, hidden.shape[1],
                                            config.max_pos_tokens, group_seed(base_seed, unique[g]))
            stats.subsampled_groups += 1
        selected.append((samples, positions))

    counts = torch.tensor([s.numel() for s, _ in selected], device=hidden.device)
    padded = torch.zeros(len(chunk), int(counts.max()), width, dtype=torch.float32, device=hidden.device)
    for i, (samples, positions) in enumerate(selected):  # one group's LayerNormed copy alive at a time
        padded[i, : samples.numel()] = layer_norm(hidden[samples, positions], config.layer_norm_eps)
    del selected
    test_matrix_rng = torch.Generator().manual_seed(base_seed)
    mean, basis, ranks = positive_subspace(
        padded, counts, config.rank, config.subspace, config.oversample, config.power_iters, config.rank_rtol,
        test_matrix_rng, overwrite=True,
    )
    del padded

    step = max(1, _BLOCK_ELEMENTS // width)
    for i, g in enumerate(chunk):
        for lo in range(starts[2 * g + 1], starts[2 * g + 2], step):
            hi = min(lo + step, starts[2 * g + 2])
            samples, positions = sample_of[lo:hi], position_of[lo:hi]
            centred = layer_norm(hidden[samples, positions], config.layer_norm_eps).sub_(mean[i])
            outside = centred.sub_((centred @ basis[i]) @ basis[i].T)
            residual[samples, positions] = outside.pow_(2).sum(dim=-1) / width
            has_residual[samples, positions] = True
    stats.group_rank.update({unique[g]: r for g, r in zip(chunk, ranks.tolist())})


def _per_token(hidden: torch.Tensor, fn) -> torch.Tensor:
    """``(B, T)`` values of ``fn`` (fp32 ``(n, H)`` -> ``(n,)``) over every token's state, in fp32 blocks."""
    batch, length, width = hidden.shape
    flat = hidden.reshape(batch * length, width)
    step = max(1, _BLOCK_ELEMENTS // max(1, width))
    out = torch.empty(batch * length, dtype=torch.float32, device=hidden.device)
    for lo in range(0, batch * length, step):
        out[lo : lo + step] = fn(flat[lo : lo + step].float())
    return out.reshape(batch, length)


def _subsample(samples, positions, sample_rank, length, size, seed):
    """``size`` of the group's positive tokens, chosen by a group-seeded permutation of a content order."""
    canonical = torch.argsort(sample_rank[samples] * length + positions)
    pick = torch.randperm(samples.numel(), generator=torch.Generator().manual_seed(seed))[:size]
    chosen = canonical[pick.to(canonical.device)]
    return samples[chosen], positions[chosen]


def _content_rank(hidden: torch.Tensor, mask: torch.Tensor, seed: int) -> torch.Tensor:
    """``(B,)`` rank of each response by a fingerprint of its hidden states (independent of batch order).

    The fingerprint is the mean projection of the response's states on a fixed random direction: distinct
    responses differ by far more than numerical noise; identical responses tie, and their order is
    immaterial because their tokens are identical.
    """
    direction = torch.randn(hidden.shape[-1], generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
    direction = direction.to(hidden.device)
    projection = _per_token(hidden, lambda x: x @ direction)  # fp32: bf16 products would tie distinct responses
    projection = torch.nan_to_num(projection * mask, nan=0.0, posinf=0.0, neginf=0.0)
    fingerprint = projection.sum(dim=1) / mask.sum(dim=1).clamp_min(1)
    return torch.argsort(torch.argsort(fingerprint, stable=True), stable=True)
