"""The positive subspace of a prompt group, batched over groups.

For a group's positive token states x (LayerNormed, n x H):

    mu+ = mean(x)          X = x - mu+          X ~ U S V^T          V_k = top-k right singular vectors

``exact`` takes the SVD of X; ``randomized`` is a range finder (Halko, Martinsson & Tropp 2011) with power
iterations, orthonormalised at every step, then the SVD of the small projected matrix. Directions whose
singular value is numerical noise (sigma <= rtol * sigma_max) are dropped, so duplicated or low-rank
positive tokens never contribute arbitrary directions to the subspace.
"""

from __future__ import annotations

import torch


def positive_subspace(
    x: torch.Tensor,
    counts: torch.Tensor,
    rank: int,
    method: str = "randomized",
    oversample: int = 48,
    power_iters: int = 6,
    rtol: float = 1e-4,
    generator: torch.Generator | None = None,
    overwrite: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean and orthonormal basis of the top-``rank`` principal subspace of each group.

    Args:
        x: ``(G, n, H)`` positive token states (any float dtype; the math is float32 with autocast disabled);
            rows ``>= counts[g]`` are padding (any value).
        counts: ``(G,)`` int64 number of real rows per group (>= 2).
        rank: k.
        generator: CPU generator for the random test matrix of the randomized range finder.
        overwrite: centre a float32 ``x`` in place instead of in a copy (saves one ``(G, n, H)`` copy).

    Returns:
        mean: ``(G, H)``.
        basis: ``(G, H, k')`` with ``k' = min(rank, n, H)``; column j of group g is zero when j >= ranks[g].
        ranks: ``(G,)`` int64, ``min(rank, counts - 1, numerical rank)``.

    Cost: ``randomized`` is about ``4 (power_iters + 1) n H (rank + oversample)`` flops per group and holds
    ``(G, max(n, H), rank + oversample)`` beyond ``x``. ``exact`` is a full SVD of each ``n x H`` group, which
    also holds ``U`` and LAPACK's copy of the input (about two more ``(G, n, H)``): at ``n = 4096, H = 2560``
    about 0.4 s per group on an H100 against 10-12 ms for the range finder (oversample 32, 6 iterations).
    """
    if method not in ("exact", "randomized"):
        raise ValueError(f"unknown subspace method {method!r}; expected 'exact' or 'randomized'")
    with torch.autocast(device_type=x.device.type, enabled=False):
        return _positive_subspace(x, counts, rank, method, oversample, power_iters, rtol, generator, overwrite)


def _positive_subspace(x, counts, rank, method, oversample, power_iters, rtol, generator, overwrite):
    num_groups, n, hidden = x.shape
    real = (torch.arange(n, device=x.device).unsqueeze(0) < counts.unsqueeze(1)).unsqueeze(-1)  # (G, n, 1)
    centred = x.float()
    if centred is x and not overwrite:
        centred = centred.clone()
    centred.masked_fill_(~real, 0.0)  # padding rows are exactly zero from here on
    mean = centred.sum(dim=1) / counts.unsqueeze(1).to(centred.dtype) if n else centred.sum(dim=1)
    centred.sub_(mean.unsqueeze(1)).masked_fill_(~real, 0.0)

    width = min(rank + oversample, n, hidden)
    if method == "exact" or width >= min(n, hidden):
        _, sigma, vh = torch.linalg.svd(centred, full_matrices=False)
    else:
        sigma, vh = _randomized_svd(centred, width, power_iters, generator)

    keep = min(rank, vh.shape[1])
    numerical_rank = (sigma > rtol * sigma[:, :1]).sum(dim=1)
    ranks = torch.minimum(torch.minimum(numerical_rank, counts.to(x.device) - 1), torch.tensor(keep, device=x.device))
    ranks = ranks.clamp_min(0)
    basis = vh[:, :keep].transpose(1, 2)
    basis = basis * (torch.arange(keep, device=x.device).unsqueeze(0) < ranks.unsqueeze(1)).unsqueeze(1)
    return mean, basis, ranks


def _randomized_svd(
    centred: torch.Tensor, width: int, power_iters: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular values ``(G, width)`` and right singular vectors ``(G, width, H)`` of the range-found part."""
    hidden = centred.shape[-1]
    test = torch.randn(hidden, width, generator=generator, dtype=centred.dtype)
    q = torch.linalg.qr(centred @ test.to(centred.device)).Q  # (G, n, width)
    for _ in range(power_iters):
        z = torch.linalg.qr(centred.transpose(1, 2) @ q).Q  # (G, H, width)
        q = torch.linalg.qr(centred @ z).Q
    small = q.transpose(1, 2) @ centred  # (G, width, H)
    _, sigma, vh = torch.linalg.svd(small, full_matrices=False)
    return sigma, vh
