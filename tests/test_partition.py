import random

import pytest

from verl_resrl.core.partition import group_balanced_partition


def test_whole_groups_equal_sizes_and_balance():
    rng = random.Random(0)
    uids = [f"u{g}" for g in range(16) for _ in range(4)]
    rng.shuffle(uids)
    work = [rng.randint(10, 1000) for _ in uids]
    shards, split = group_balanced_partition(uids, work, 4)
    assert split == 0 and sorted(i for s in shards for i in s) == list(range(64))
    assert all(len(s) == 16 for s in shards)
    for s in shards:
        for u in {uids[i] for i in s}:
            assert sum(uids[i] == u for i in s) == 4  # the whole group is here
    loads = [sum(work[i] for i in s) for s in shards]
    assert max(loads) - min(loads) <= max(sum(work[i] for i in range(64) if uids[i] == u) for u in set(uids))


def test_groups_that_cannot_stay_whole_are_counted():
    uids = ["a"] * 3 + ["b"] * 3  # two groups of 3 over 2 shards of... 3 each: fine
    assert group_balanced_partition(uids, [1] * 6, 2)[1] == 0
    uids = ["a"] * 4 + ["b"] * 2  # shards of 3: the group of 4 must be split
    shards, split = group_balanced_partition(uids, [1] * 6, 2)
    assert split == 1 and all(len(s) == 3 for s in shards)


def test_bad_sizes():
    with pytest.raises(ValueError, match="cannot split 5 samples into 2 equal shards"):
        group_balanced_partition(["a"] * 5, [1] * 5, 2)



def test_each_shard_keeps_batch_order_like_verls_balancing():
    """veRL's balancing returns each partition's indices sorted: the heaviest group is not moved to the front."""
    from verl.utils.seqlen_balancing import get_seqlen_balanced_partitions

    rng = random.Random(1)
    uids = [f"u{g}" for g in range(12) for _ in range(4)]  # groups contiguous, as veRL repeats rollouts
    work = [rng.randint(10, 1000) for _ in uids]
    work[44:48] = [5000] * 4  # the heaviest group is the batch's last
    shards, split = group_balanced_partition(uids, work, 3)
    assert split == 0
    assert all(p == sorted(p) for p in get_seqlen_balanced_partitions(work, 3, equal_size=True))
    assert all(shard == sorted(shard) for shard in shards)
    assert any(shard[-4:] == [44, 45, 46, 47] for shard in shards)
    for shard in shards:  # each whole group stays one contiguous run
        runs = [uids[i] for i in shard][::4]
        assert [uids[i] for i in shard] == [u for u in runs for _ in range(4)]
