"""Split a batch into data-parallel shards that keep every prompt group whole and balance the work.

veRL's own balancing sorts samples by sequence length across ranks and so scatters a prompt group over
several ranks; ResRL needs each group's positives and negatives together. veRL dispatches equal-size
contiguous shards, so every shard must hold exactly ``len(batch) / k`` samples. Inside a shard the samples
keep their batch order (sorted indices, as veRL's ``get_seqlen_balanced_partitions`` returns them): the
heaviest groups are not moved to the front, so mini-batches see the same order as with veRL's balancing.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def group_balanced_partition(
    group_ids: Sequence[Hashable], workloads: Sequence[float], k: int
) -> tuple[list[list[int]], int]:
    """Assign samples to ``k`` equal-size shards, whole groups first, heaviest groups to the lightest shard.

    Args:
        group_ids: per-sample group id.
        workloads: per-sample cost (e.g. veRL's workload of the sequence length).
        k: number of shards (data-parallel size); must divide the number of samples.

    Returns:
        ``(shards, split_groups)``: ``k`` sorted lists of sample indices and the
        number of groups that could not be kept whole (0 whenever all groups have the same size and their
        number is a multiple of ``k``).
    """
    size = len(group_ids)
    if k < 1 or size % k:
        raise ValueError(f"cannot split {size} samples into {k} equal shards")
    capacity = size // k
    members: dict = {}
    for i, g in enumerate(group_ids):
        members.setdefault(g, []).append(i)
    groups = sorted(members.values(), key=lambda idx: (-sum(workloads[i] for i in idx), idx[0]))

    shards: list[list[int]] = [[] for _ in range(k)]
    load = [0.0] * k
    leftovers: list[list[int]] = []
    for idx in groups:
        fits = [s for s in range(k) if capacity - len(shards[s]) >= len(idx)]
        if not fits:
            leftovers.append(idx)
            continue
        s = min(fits, key=lambda s: (load[s], s))
        shards[s].extend(idx)
        load[s] += sum(workloads[i] for i in idx)
    for idx in leftovers:  # groups that fit nowhere whole: fill the remaining room
        for i in idx:
            s = min((s for s in range(k) if len(shards[s]) < capacity), key=lambda s: (load[s], s))
            shards[s].append(i)
            load[s] += workloads[i]
    return [sorted(shard) for shard in shards], len(leftovers)
