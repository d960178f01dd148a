"""CPU emulation of CUDA limits the package must respect."""

from __future__ import annotations

import torch


def refuse_half_precision_linalg(monkeypatch) -> None:
    """``torch.linalg.qr/svd/eigh`` raise on bf16/fp16 input, as on CUDA (no half-precision QR, SVD or eigh).

    On CPU they would otherwise run, and CPU autocast silently upcasts them, which hides a GPU crash.
    """
    for name in ("qr", "svd", "eigh"):
        def strict(a, *args, _original=getattr(torch.linalg, name), _name=name, **kwargs):
            if a.dtype not in (torch.float32, torch.float64):
                raise RuntimeError(f"linalg.{_name} not implemented for {a.dtype}")
            return _original(a, *args, **kwargs)

        monkeypatch.setattr(torch.linalg, name, strict)
