import pytest
import torch

from resrl_reference import reference_weights
from synthetic import make_batch
from verl_resrl import ResRLConfig, compute_residuals, negative_token_weights
from verl_resrl.core.groups import group_quantiles


def test_group_quantiles_match_torch_quantile():
    gen = torch.Generator().manual_seed(0)
    values = torch.rand(300, generator=gen)
    groups = torch.randint(0, 7, (300,), generator=gen)
    groups[groups == 5] = 6  # an empty group
    qs = (0.0, 0.2, 0.5, 0.8, 1.0)
    got = group_quantiles(values, groups, 8, qs)
    for g in range(8):
        sel = values[groups == g]
        for row, q in enumerate(qs):
            want = torch.quantile(sel, q) if sel.numel() else torch.tensor(0.0)
            assert torch.allclose(got[row, g], want), (g, q)


def test_weights_on_a_hand_example():
    residual = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]])
    has = torch.ones_like(residual, dtype=torch.bool)
    w = negative_token_weights(residual, has, torch.ones_like(residual), ["g"], ResRLConfig())
    # lo = quantile 0.2 = 2, hi = 0.8 = 8; w = 0.1 + 0.9 * clamp((R - 2) / 6, 0, 1)
    want = 0.1 + 0.9 * ((residual - 2) / 6).clamp(0, 1)
    torch.testing.assert_close(w, want)
    assert w.min() == pytest.approx(0.1) and w.max() == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(4))
def test_matches_reference_and_is_monotone_within_groups(seed):
    gen = torch.Generator().manual_seed(seed)
    hidden, mask, gids, pos, _ = make_batch([4, 6, 3, 5], length=20, width=32, generator=gen, interleave=True)
    cfg = ResRLConfig(rank=8, q_low=0.1 * (seed + 1), q_high=0.9, min_weight=0.05 * seed)
    res = compute_residuals(hidden, mask, gids, pos, cfg)
    w = negative_token_weights(res.residual, res.has_residual, mask, gids, cfg)
    ref = reference_weights(res.residual, res.has_residual, mask, gids, cfg)
    torch.testing.assert_close(w.double(), ref, atol=1e-6, rtol=1e-6)
    assert w.min() >= cfg.min_weight - 1e-7 and w.max() <= 1.0
    assert (w[~res.has_residual] == 1).all()
    for g in set(gids):
        rows = torch.tensor([x == g for x in gids]).unsqueeze(1) & res.has_residual
        r, ww = res.residual[rows], w[rows]
        order = torch.argsort(r)
        assert (ww[order].diff() >= -1e-7).all()


def test_identical_residuals_give_the_midpoint_weight():
    residual = torch.full((3, 5), 0.7)
    has = torch.tensor([[0] * 5, [1] * 5, [1] * 5]).bool()
    mask = torch.ones(3, 5)
    mask[2, 3:] = 0
    w = negative_token_weights(residual, has, mask, ["g"] * 3, ResRLConfig(min_weight=0.2))
    assert (w[0] == 1).all() and (w[1] == 0.6).all()
    assert (w[2, :3] == 0.6).all() and (w[2, 3:] == 1).all()


def test_nonfinite_residual_marked_valid_is_an_error():
    residual = torch.tensor([[0.1, float("nan")]])
    with pytest.raises(ValueError, match=r"response\(s\) \[0\]"):
        negative_token_weights(residual, torch.ones(1, 2, dtype=torch.bool), torch.ones(1, 2), ["g"], ResRLConfig())


def test_no_valid_residual_gives_ones():
    w = negative_token_weights(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.bool), torch.ones(2, 3), ["a", "b"],
                               ResRLConfig())
    assert (w == 1).all()


def _mixed_batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    hidden, mask, gids, pos, _ = make_batch([4, 6, 3, 5], length=20, width=32, generator=gen, interleave=True)
    return hidden, mask, gids, pos


def test_uniform_ablation_gives_all_ones_to_negative_tokens():
    hidden, mask, gids, pos = _mixed_batch()
    cfg = ResRLConfig(rank=8, min_weight=1.0)
    res = compute_residuals(hidden, mask, gids, pos, cfg)
    assert res.has_residual.any()
    assert (negative_token_weights(res.residual, res.has_residual, mask, gids, cfg) == 1).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_shuffled_ablation_keeps_each_groups_weights_and_is_seed_deterministic(seed):
    hidden, mask, gids, pos = _mixed_batch(seed)
    cfg = ResRLConfig(rank=8, seed=seed)
    shuffled_cfg = ResRLConfig(rank=8, seed=seed, weights="shuffled")
    res = compute_residuals(hidden, mask, gids, pos, cfg)
    w = negative_token_weights(res.residual, res.has_residual, mask, gids, cfg)
    s = negative_token_weights(res.residual, res.has_residual, mask, gids, shuffled_cfg)
    again = negative_token_weights(res.residual, res.has_residual, mask, gids, shuffled_cfg)
    other = negative_token_weights(res.residual, res.has_residual, mask, gids, ResRLConfig(rank=8, seed=seed + 7,
                                                                                          weights="shuffled"))
    torch.testing.assert_close(s, again, rtol=0, atol=0)
    assert (s[~res.has_residual] == 1).all()
    for g in set(gids):
        rows = torch.tensor([x == g for x in gids]).unsqueeze(1) & res.has_residual
        torch.testing.assert_close(torch.sort(s[rows]).values, torch.sort(w[rows]).values, rtol=0, atol=0)
    moved = res.has_residual & (s != w)
    assert moved.float().sum() > 0.5 * res.has_residual.float().sum()  # the permutation really moves weights
    assert not torch.equal(s, other)


def test_shuffled_permutation_of_a_group_does_not_depend_on_other_groups():
    hidden, mask, gids, pos = _mixed_batch()
    cfg = ResRLConfig(rank=8, weights="shuffled")
    res = compute_residuals(hidden, mask, gids, pos, cfg)
    full = negative_token_weights(res.residual, res.has_residual, mask, gids, cfg)
    g = gids[0]
    rows = [i for i, x in enumerate(gids) if x == g]
    alone = negative_token_weights(res.residual[rows], res.has_residual[rows], mask[rows], [g] * len(rows), cfg)
    torch.testing.assert_close(alone, full[rows], rtol=0, atol=0)


def test_unknown_weights_mode_is_rejected():
    with pytest.raises(ValueError, match="resrl.weights"):
        ResRLConfig(weights="random")
