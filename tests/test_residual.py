import dataclasses
import zlib

import pytest
import torch

from allocations import peak_allocated_bytes
from cuda_emulation import refuse_half_precision_linalg
from resrl_reference import reference_residuals
from synthetic import make_batch
from verl_resrl import ResRLConfig, compute_residuals
from verl_resrl.core import residual as residual_module
from verl_resrl.core import subspace as subspace_module


def rel_err(fast, ref):
    return float((fast.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def stable_seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


@pytest.fixture
def subspace_paths(monkeypatch):
    """Counts of ``positive_subspace`` calls and of those that ran the randomized range finder."""
    calls = {"subspace": 0, "randomized": 0}

    def counted(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(residual_module, "positive_subspace", counted("subspace", subspace_module.positive_subspace))
    monkeypatch.setattr(subspace_module, "_randomized_svd", counted("randomized", subspace_module._randomized_svd))
    return calls


# rank 16 + oversample 48 = 64: the range finder runs when a group has > 64 positive tokens and H > 64.
LAYOUTS = [
    dict(group_sizes=[4, 4, 4], length=48, width=96, min_len=40),
    dict(group_sizes=[8, 2, 5], length=80, width=72, min_len=70),
    dict(group_sizes=[3], length=100, width=96, min_len=70),
    dict(group_sizes=[2, 6, 4, 3], length=80, width=130, min_len=70, interleave=True),
    # fewer than 64 positive tokens per group / H < 64: the randomized setting takes the exact SVD
    dict(group_sizes=[4, 4, 4], length=24, width=48, small=True),
    dict(group_sizes=[2, 6, 4, 3], length=17, width=130, interleave=True, small=True),
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda layout: f"{layout['group_sizes']}x{layout['length']}x{layout['width']}")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("subspace", ["exact", "randomized"])
def test_matches_reference(layout, dtype, subspace, subspace_paths):
    layout = dict(layout)
    small = layout.pop("small", False)
    gen = torch.Generator().manual_seed(stable_seed(layout, str(dtype)))
    hidden, mask, gids, pos, _ = make_batch(generator=gen, dtype=dtype, **layout)
    cfg = ResRLConfig(rank=16, subspace=subspace)
    fast = compute_residuals(hidden, mask, gids, pos, cfg)
    ref, ref_has, ranks = reference_residuals(hidden, mask, gids, pos, cfg)
    assert torch.equal(fast.has_residual, ref_has)
    assert fast.residual.dtype == torch.float32
    assert rel_err(fast.residual, ref) < 1e-4
    assert fast.stats.computed_groups == len(ranks)
    assert fast.stats.rank_sum == sum(ranks.values())
    assert subspace_paths["subspace"] >= 1
    runs_range_finder = subspace == "randomized" and not small
    assert subspace_paths["randomized"] == (subspace_paths["subspace"] if runs_range_finder else 0)


def test_randomized_matches_exact_svd_at_paper_rank(subspace_paths):
    """The range finder's residuals match the exact SVD within 1e-4 relative on decaying-spectrum data."""
    gen = torch.Generator().manual_seed(7)
    hidden, mask, gids, pos, _ = make_batch([4, 4], length=256, width=256, generator=gen, min_len=200)
    exact = compute_residuals(hidden, mask, gids, pos, ResRLConfig(subspace="exact"))
    assert subspace_paths["randomized"] == 0
    fast = compute_residuals(hidden, mask, gids, pos, ResRLConfig(subspace="randomized"))
    assert subspace_paths["randomized"] == 1
    ref, _, ranks = reference_residuals(hidden, mask, gids, pos, ResRLConfig())
    assert set(ranks.values()) == {64}
    assert rel_err(exact.residual, ref) < 1e-4
    assert rel_err(fast.residual, ref) < 1e-4


def test_negative_copy_of_positive_tokens_has_zero_residual_at_full_rank():
    gen = torch.Generator().manual_seed(1)
    hidden, mask, gids, pos, _ = make_batch([4], length=10, width=64, generator=gen, min_len=10)
    hidden[3] = hidden[0]  # a negative response with the same states as a positive one
    res = compute_residuals(hidden, mask, gids, pos, ResRLConfig(rank=64))
    assert res.stats.rank_min == 19  # 2 positives x 10 tokens - 1
    assert res.residual[3].abs().max() < 1e-5
    assert res.residual[2].min() > 1e-2


def test_positive_subspace_low_rank_and_orthogonal_negative():
    """Positives in a 3-dim subspace: in-span negatives ~0 residual, an orthogonal one a large residual."""
    gen = torch.Generator().manual_seed(2)
    width = 32
    basis = torch.linalg.qr(torch.randn(width, width, generator=gen)).Q
    basis = basis - basis.mean(dim=0)  # zero-mean directions stay in span under LayerNorm
    span, orth = basis[:, :3], basis[:, 10]
    hidden = torch.randn(4, 6, 3, generator=gen) @ span.T
    hidden[3, 5] = orth * 5
    mask = torch.ones(4, 6)
    res = compute_residuals(hidden, mask, ["g"] * 4, torch.tensor([1, 1, 0, 0]).bool(), ResRLConfig())
    assert res.stats.rank_min <= 3  # noise directions are not part of the subspace
    assert res.residual[2].max() < 1e-3
    assert res.residual[3, :5].max() < 1e-3
    assert res.residual[3, 5] > 0.5


@pytest.mark.parametrize("shape", [(1, 4, 8), (1, 200, 300)])  # exact SVD by size / the range finder's size
def test_positive_subspace_rejects_an_unknown_method_on_every_path(shape):
    x = torch.randn(*shape)
    with pytest.raises(ValueError, match="unknown subspace method 'qr'; expected 'exact' or 'randomized'"):
        subspace_module.positive_subspace(x, torch.tensor([shape[1]]), rank=2, method="qr")


@pytest.mark.parametrize("max_pos_tokens", [4096, 60])
def test_independent_of_sample_order_and_interleaving(max_pos_tokens, subspace_paths):
    gen = torch.Generator().manual_seed(3)
    hidden, mask, gids, pos, _ = make_batch([4, 5, 3], length=50, width=80, generator=gen, min_len=40)
    cfg = ResRLConfig(rank=8, max_pos_tokens=max_pos_tokens)  # 8 + 48 < 60 positive tokens, < H: range finder
    base = compute_residuals(hidden, mask, gids, pos, cfg)
    assert (base.stats.subsampled_groups > 0) == (max_pos_tokens == 60)
    assert subspace_paths["randomized"] == subspace_paths["subspace"] >= 1
    perm = torch.randperm(len(gids), generator=gen)
    shuffled = compute_residuals(hidden[perm], mask[perm], [gids[i] for i in perm], pos[perm], cfg)
    assert torch.equal(shuffled.has_residual, base.has_residual[perm])
    torch.testing.assert_close(shuffled.residual, base.residual[perm], atol=1e-5, rtol=1e-5)
    # A group's result does not depend on which other groups share the batch.
    first = [i for i, g in enumerate(gids) if g == gids[0]]
    alone = compute_residuals(hidden[first], mask[first], [gids[i] for i in first], pos[first], cfg)
    torch.testing.assert_close(alone.residual, base.residual[first], atol=1e-5, rtol=1e-5)


def test_deterministic_for_a_seed_or_generator():
    gen = torch.Generator().manual_seed(4)
    hidden, mask, gids, pos, _ = make_batch([6, 6], length=30, width=64, generator=gen, min_len=25)
    cfg = ResRLConfig(rank=8, max_pos_tokens=40)
    a = compute_residuals(hidden, mask, gids, pos, cfg)
    torch.manual_seed(123)  # the global RNG plays no part
    b = compute_residuals(hidden, mask, gids, pos, cfg)
    assert torch.equal(a.residual, b.residual)
    c = compute_residuals(hidden, mask, gids, pos, dataclasses.replace(cfg, seed=1))
    assert not torch.equal(a.residual, c.residual)  # another sub-sample
    g1 = compute_residuals(hidden, mask, gids, pos, cfg, generator=torch.Generator().manual_seed(9))
    g2 = compute_residuals(hidden, mask, gids, pos, cfg, generator=torch.Generator().manual_seed(9))
    assert torch.equal(g1.residual, g2.residual)


def test_groups_without_both_sides_are_skipped():
    gen = torch.Generator().manual_seed(5)
    hidden = torch.randn(7, 8, 16, generator=gen)
    mask = torch.ones(7, 8)
    gids = ["pos", "pos", "neg", "neg", "single", "mixed", "mixed"]
    pos = torch.tensor([1, 1, 0, 0, 0, 1, 0]).bool()
    res = compute_residuals(hidden, mask, gids, pos, ResRLConfig())
    assert res.has_residual[:5].sum() == 0 and res.has_residual[6].all() and not res.has_residual[5].any()
    assert (res.stats.groups, res.stats.mixed_groups, res.stats.computed_groups) == (4, 1, 1)
    assert res.stats.coverage == 1.0


def test_few_positive_tokens_rank_shrinks_or_group_skips():
    gen = torch.Generator().manual_seed(6)
    hidden = torch.randn(4, 10, 32, generator=gen)
    mask = torch.zeros(4, 10)
    mask[0, :6] = 1  # 6 positive tokens < rank 64: rank shrinks to 5
    mask[1, :10] = 1
    mask[2, :3] = 1  # 3 positive tokens < 4: group skipped
    mask[3, :10] = 1
    gids, pos = ["a", "a", "b", "b"], torch.tensor([1, 0, 1, 0]).bool()
    res = compute_residuals(hidden, mask, gids, pos, ResRLConfig())
    assert res.stats.rank_min == 5 and res.stats.computed_groups == 1
    assert res.stats.skipped_few_pos_tokens == 1 and not res.has_residual[3].any()
    assert res.stats.coverage == 0.5


def test_empty_one_token_and_padding_rows():
    gen = torch.Generator().manual_seed(8)
    hidden = torch.randn(5, 12, 24, generator=gen)
    mask = torch.ones(5, 12)
    mask[2] = 0  # empty negative response / all-padding row
    mask[3, 1:] = 0  # one-token negative response
    gids = ["g"] * 5
    pos = torch.tensor([1, 1, 0, 0, 0]).bool()
    res = compute_residuals(hidden, mask, gids, pos, ResRLConfig())
    assert not res.has_residual[2].any()
    assert res.has_residual[3].sum() == 1 and res.has_residual[4].all()
    assert res.stats.neg_responses_mixed == 2 and res.stats.coverage == 1.0
    assert torch.isfinite(res.residual).all()
    empty = compute_residuals(hidden[:0], mask[:0], [], pos[:0], ResRLConfig())
    assert empty.residual.shape == (0, 12)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_hidden_state_skips_the_group_and_is_counted(bad):
    gen = torch.Generator().manual_seed(9)
    hidden, mask, gids, pos, _ = make_batch([4, 4], length=10, width=16, generator=gen, min_len=10)
    hidden[0, 3, 5] = bad
    res = compute_residuals(hidden, mask, gids, pos, ResRLConfig())
    assert torch.isfinite(res.residual).all()
    assert res.stats.skipped_nonfinite == 1 and res.stats.nonfinite_tokens == 1
    assert not res.has_residual[:4].any() and res.has_residual[4:].any()
    # padding positions may hold anything
    hidden2 = hidden.clone()
    hidden2[0, 3, 5] = 0.0
    mask[4, -1] = 0
    hidden2[4, -1] = float("nan")
    assert compute_residuals(hidden2, mask, gids, pos, ResRLConfig()).stats.skipped_nonfinite == 0


def test_bad_shapes_are_reported():
    cfg = ResRLConfig()
    with pytest.raises(ValueError, match="hidden must be"):
        compute_residuals(torch.zeros(2, 3), torch.ones(2, 3), ["a", "a"], torch.tensor([1, 0]), cfg)
    with pytest.raises(ValueError, match="group ids"):
        compute_residuals(torch.zeros(2, 3, 4), torch.ones(2, 3), ["a"], torch.tensor([1, 0]), cfg)
    with pytest.raises(ValueError, match="response_mask"):
        compute_residuals(torch.zeros(2, 3, 4), torch.ones(2, 4), ["a", "a"], torch.tensor([1, 0]), cfg)
    with pytest.raises(ValueError, match="is_positive"):
        compute_residuals(torch.zeros(2, 3, 4), torch.ones(2, 3), ["a", "a"], torch.tensor([1, 0, 1]), cfg)


def test_group_ids_of_any_hashable_kind():
    import numpy as np

    gen = torch.Generator().manual_seed(10)
    hidden, mask, _, pos, _ = make_batch([3, 3], length=8, width=16, generator=gen, min_len=8)
    as_str = compute_residuals(hidden, mask, ["x"] * 3 + ["y"] * 3, pos, ResRLConfig())
    as_np = compute_residuals(hidden, mask, list(np.array(["x"] * 3 + ["y"] * 3, dtype=object)), pos, ResRLConfig())
    as_int = compute_residuals(hidden, mask, [0, 0, 0, 1, 1, 1], pos, ResRLConfig())
    assert torch.equal(as_str.has_residual, as_np.has_residual) and torch.equal(as_str.has_residual, as_int.has_residual)
    torch.testing.assert_close(as_str.residual, as_np.residual)


@pytest.fixture
def fp32_only_linalg(monkeypatch):
    refuse_half_precision_linalg(monkeypatch)


@pytest.mark.parametrize("subspace", ["exact", "randomized"])
def test_bf16_autocast_around_the_call_changes_nothing(subspace, fp32_only_linalg, subspace_paths):
    """veRL runs the forward pass (and so the streaming flush) under bf16 autocast: the math stays fp32."""
    gen = torch.Generator().manual_seed(11)
    hidden, mask, gids, pos, _ = make_batch([4, 4, 4], length=60, width=96, generator=gen, min_len=50,
                                            dtype=torch.bfloat16)
    cfg = ResRLConfig(rank=16, subspace=subspace, max_pos_tokens=80)  # sub-sampled: the fingerprint runs too
    expected = compute_residuals(hidden, mask, gids, pos, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = compute_residuals(hidden, mask, gids, pos, cfg)
    assert got.stats.subsampled_groups == 3 and got.stats.computed_groups == 3
    assert (subspace_paths["randomized"] > 0) == (subspace == "randomized")
    assert torch.equal(got.has_residual, expected.has_residual)
    assert torch.equal(got.residual, expected.residual)


def test_extra_memory_is_bounded_by_the_chunk_sizes(monkeypatch):
    """Peak tensor memory beyond the inputs: a few groups' fp32 copies, not a copy of the batch."""
    gen = torch.Generator().manual_seed(12)
    hidden, mask, gids, pos, _ = make_batch([4] * 16, length=128, width=256, generator=gen, min_len=96,
                                            dtype=torch.bfloat16)
    monkeypatch.setattr(residual_module, "_CHUNK_ELEMENTS", 2 * 256 * 256)  # about one group's positive tokens
    monkeypatch.setattr(residual_module, "_BLOCK_ELEMENTS", 64 * 256)
    cfg = ResRLConfig(rank=16, max_pos_tokens=200)
    peak, res = peak_allocated_bytes(lambda: compute_residuals(hidden, mask, gids, pos, cfg))
    assert res.stats.computed_groups == 16 and res.stats.subsampled_groups > 0
    one_group_fp32 = 4 * 128 * 256 * 4
    outputs = res.residual.nbytes + res.has_residual.nbytes
    assert peak < outputs + 3 * one_group_fp32, (peak, hidden.nbytes)


def test_fingerprint_orders_responses_that_differ_below_bf16_resolution():
    """The content order used for sub-sampling must not fall back to batch order for nearly equal responses."""
    gen = torch.Generator().manual_seed(13)
    a = torch.randn(1, 32, 256, generator=gen).bfloat16()
    b = a.clone()
    # one coordinate of one token, one bf16 step: far below the bf16 resolution of the token's projection
    b[0, 5, 7] = torch.nextafter(a[0, 5, 7], torch.tensor(100.0, dtype=torch.bfloat16))
    mask = torch.ones(2, 32)
    ab = residual_module._content_rank(torch.cat([a, b]), mask, seed=0)
    ba = residual_module._content_rank(torch.cat([b, a]), mask, seed=0)
    assert ab.tolist() == ba.flip(0).tolist()


def test_large_fp16_states_are_not_taken_for_non_finite():
    """fp16 states whose per-token sum exceeds fp16's range (65504) are finite; the check must not overflow."""
    gen = torch.Generator().manual_seed(14)
    hidden, mask, gids, pos, _ = make_batch([4], length=8, width=1024, generator=gen, min_len=8)
    hidden = (hidden.abs() + 100).half()  # every token sums to > 1e5
    res = compute_residuals(hidden, mask, gids, pos, ResRLConfig(rank=4))
    assert res.stats.skipped_nonfinite == 0 and res.stats.computed_groups == 1
