"""Residuals of a rank's batch computed group by group as its micro-batches come out of the forward pass.

The forward pass visits a rank's samples in micro-batches (in any order: dynamic batch size reorders them).
Each sample's response states are held only until the last sample of its group has been seen; then the
group's residuals are computed (all groups completed by one micro-batch in one batched call) and the states
are dropped. The result does not depend on micro-batching: a group's residuals only ever see that group.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence

import torch

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.residual import GROUP_STATUSES, ResidualStats, compute_residuals

# Per-sample status codes returned with the residuals (the driver turns them into metrics).
STATUS_CODES = {name: code for code, name in enumerate(GROUP_STATUSES)}

# Groups computed together are padded into one (samples, longest, H) buffer of at most this many elements
# (64 MiB in bf16), so a flush of many groups at once (the final one, or dynamic batch size) never pads them all.
_FLUSH_ELEMENTS = 1 << 25


class StreamingGroupResiduals:
    """Collect response states per sample; compute each group's residuals as soon as it is complete.

    Args:
        group_ids: ``B`` group ids of the rank's samples.
        is_positive: ``(B,)`` bool.
        response_lengths: ``(B,)`` number of response tokens of each sample.
        masks: optional per-sample ``(response_length,)`` masks of the tokens that count (multi-turn
            responses mask out tool output); all response tokens count by default.
    """

    def __init__(self, group_ids: Sequence[Hashable], is_positive: torch.Tensor, response_lengths: torch.Tensor,
                 config: ResRLConfig, masks: Sequence[torch.Tensor] | None = None):
        self.group_ids = list(group_ids)
        self.is_positive = torch.as_tensor(is_positive).bool().cpu()
        self.lengths = torch.as_tensor(response_lengths).long().cpu()
        self.config = config
        self.masks = None if masks is None else [torch.as_tensor(m).bool().cpu() for m in masks]
        self.members: dict = {}
        for i, g in enumerate(self.group_ids):
            self.members.setdefault(g, []).append(i)
        self.missing = {g: len(idx) for g, idx in self.members.items()}
        self.states: dict[int, torch.Tensor] = {}
        self.residual: list[torch.Tensor | None] = [None] * len(self.group_ids)
        self.has_residual: list[torch.Tensor | None] = [None] * len(self.group_ids)
        self.status = torch.zeros(len(self.group_ids), dtype=torch.long)
        self.rank = torch.zeros(len(self.group_ids), dtype=torch.long)
        self.stats = ResidualStats()
        self.seconds = 0.0

    def add(self, sample_index: int, states: torch.Tensor) -> None:
        """States ``(response_length, H)`` of one sample (any device/dtype)."""
        if sample_index in self.states or self.residual[sample_index] is not None:
            raise ValueError(f"response states of sample {sample_index} were captured twice")
        if states.shape[0] != int(self.lengths[sample_index]):
            raise ValueError(
                f"sample {sample_index}: captured {states.shape[0]} response states for "
                f"{int(self.lengths[sample_index])} response tokens"
            )
        self.states[sample_index] = states
        self.missing[self.group_ids[sample_index]] -= 1

    def flush(self, final: bool = False) -> None:
        """Compute every complete group (every group with ``final=True``) and drop its states.

        Groups are computed in chunks whose padded ``(samples, longest, H)`` buffer has at most
        ``_FLUSH_ELEMENTS`` elements (one group at least); each sample's states are dropped as they are copied
        into the buffer, so a flush holds little more than the states it was given.
        """
        ready = [g for g, n in self.missing.items() if n == 0 or (final and any(i in self.states for i in self.members[g]))]
        if not ready:
            return
        start = time.perf_counter()
        for g in ready:
            del self.missing[g]
        chunk, rows, longest = [], 0, 1
        for g in ready:
            held = [self.states[i] for i in self.members[g] if i in self.states]
            group_longest = max(s.shape[0] for s in held)
            if chunk and (rows + len(held)) * max(longest, group_longest) * held[0].shape[-1] > _FLUSH_ELEMENTS:
                self._compute(chunk)
                chunk, rows, longest = [], 0, 1
            chunk.append(g)
            rows, longest = rows + len(held), max(longest, group_longest)
        del held
        self._compute(chunk)
        self.seconds += time.perf_counter() - start

    def _compute(self, groups: list) -> None:
        """Residuals of ``groups`` from one padded buffer, filled by moving each sample's states into it."""
        samples = [i for g in groups for i in self.members[g] if i in self.states]
        first = self.states[samples[0]]
        longest = max(1, max(self.states[i].shape[0] for i in samples))
        hidden = first.new_zeros(len(samples), longest, first.shape[-1])
        mask = torch.zeros(len(samples), longest, device=hidden.device)
        del first
        for row, i in enumerate(samples):
            states = self.states.pop(i)
            hidden[row, : states.shape[0]] = states
            mask[row, : states.shape[0]] = 1 if self.masks is None else self.masks[i].to(mask.device, mask.dtype)
            del states
        ids = [self.group_ids[i] for i in samples]
        result = compute_residuals(hidden, mask, ids, self.is_positive[samples].to(hidden.device), self.config)
        del hidden
        residual, has_residual = result.residual.cpu(), result.has_residual.cpu()
        for row, i in enumerate(samples):
            n = int(self.lengths[i])
            self.residual[i] = residual[row, :n]
            self.has_residual[i] = has_residual[row, :n]
        self._record_status(groups, result.stats)
        self.stats = self.stats.merge(result.stats)

    def _record_status(self, groups, stats: ResidualStats) -> None:
        for g in groups:
            idx = self.members[g]
            self.status[idx] = STATUS_CODES[stats.group_status.get(g, "not_mixed")]
            self.rank[idx] = stats.group_rank.get(g, 0)

    def finish(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-sample ``residual`` (float32) and ``has_residual`` (bool) vectors of response length."""
        self.flush(final=True)
        for i, r in enumerate(self.residual):
            if r is None:  # never captured (e.g. an empty response in no micro-batch)
                n = int(self.lengths[i])
                self.residual[i] = torch.zeros(n)
                self.has_residual[i] = torch.zeros(n, dtype=torch.bool)
        return self.residual, self.has_residual
