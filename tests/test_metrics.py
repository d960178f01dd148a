import pytest
import torch

from verl_resrl import ResRLConfig
from verl_resrl.core.streaming import STATUS_CODES
from verl_resrl.core.weights import negative_token_weights
from verl_resrl.integration.metrics import quantiles, resrl_metrics


@pytest.mark.parametrize("n", [1, 2, 7, 1000, 4097])
def test_quantiles_equal_torch_quantile(n):
    values = torch.randn(n, generator=torch.Generator().manual_seed(n))
    qs = (0.0, 0.1, 0.5, 0.9, 1.0)
    torch.testing.assert_close(quantiles(values, qs), torch.quantile(values, torch.tensor(qs)), rtol=1e-6, atol=1e-7)


def test_quantiles_beyond_torch_quantiles_size_limit():
    n = (1 << 24) + 3
    values = (torch.arange(n) * 7919 % n).double()  # a permutation of 0..n-1 (7919 is prime): order statistic i is i
    with pytest.raises(RuntimeError, match="too large"):
        torch.quantile(values, 0.5)
    qs = (0.1, 0.5, 0.9)
    assert quantiles(values, qs).tolist() == pytest.approx([q * (n - 1) for q in qs], abs=1e-6)


def test_weight_quantiles_in_the_step_metrics():
    gen = torch.Generator().manual_seed(1)
    batch, length = 8, 12
    uids = [f"u{i // 4}" for i in range(batch)]
    positive = torch.tensor([1, 1, 0, 0, 1, 0, 0, 0]).bool()
    mask = torch.ones(batch, length)
    residual = torch.rand(batch, length, generator=gen)
    has = (~positive).unsqueeze(1).expand(batch, length).float()
    inputs = {
        "resrl_positive": positive.long(), "resrl_has_residual": has, "resrl_residual": residual,
        "resrl_status": torch.full((batch,), STATUS_CODES["computed"]), "resrl_rank": torch.full((batch,), 3),
        "resrl_seconds": torch.full((batch,), 0.5),
    }
    cfg = ResRLConfig()
    metrics = resrl_metrics(inputs, mask, uids, torch.randn(batch, length, generator=gen), cfg)
    weights = negative_token_weights(residual, has.bool(), mask, uids, cfg)[has.bool()]
    expected = torch.quantile(weights, torch.tensor([0.1, 0.5, 0.9])).tolist()
    got = [metrics[f"resrl/neg_weight_p{p}"] for p in (10, 50, 90)]
    assert got == pytest.approx(expected, abs=1e-6)
    assert metrics["resrl/weighted_negative_tokens"] == 5 * length
    assert metrics["resrl/coverage"] == 1.0 and metrics["resrl/computed_groups"] == 2
