"""The ``resrl.dump_dir`` debugging switch: one file per training step with every response's residuals.

``<dump_dir>/step_<N>.pt`` is a ``torch.save`` of a dict; entry ``i`` of every list / tensor is the same response
(the order of the step's batch on the driver)::

    input_ids        list of (L_i,) int64   the prompt tokens followed by the response tokens, no padding
    response_length  (B,) int64             the response's token count (its last response_length input ids)
    uid              list of str            the prompt group
    positive         (B,) bool              the positive set the residuals were computed with
    residual         list of (R_i,) float32 residual energy per response token (0 where has_residual is False)
    has_residual     list of (R_i,) bool    True where the token received a residual
    config           dict                   the run's ResRLConfig
    step             int                    the training step

These are exactly what the ``resrl`` estimator consumed, so an audit can recompute them from the starting model
(``tests/test_e2e_recompute.py`` does, with a plain Hugging Face forward pass).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from verl_resrl.core.config import ResRLConfig


def step_dump_path(dump_dir: str, step: int) -> Path:
    return Path(dump_dir) / f"step_{int(step)}.pt"


def write_step_dump(
    dump_dir: str,
    step: int,
    input_ids: Sequence[torch.Tensor],
    response_length: torch.Tensor,
    uids: Sequence,
    positive: torch.Tensor,
    residual: torch.Tensor,
    has_residual: torch.Tensor,
    config: ResRLConfig,
) -> Path:
    """Write one step's dump and return its path.

    Args:
        input_ids: ``B`` 1-D tensors, prompt + response token ids without padding.
        response_length: ``(B,)``.
        uids: ``B`` group ids.
        positive: ``(B,)``.
        residual, has_residual: ``(B, T)`` with each response's tokens left-aligned (``T >= max response_length``).
    """
    batch = len(input_ids)
    lengths = torch.as_tensor(response_length).long().cpu().reshape(-1)
    if not (lengths.numel() == len(uids) == positive.shape[0] == residual.shape[0] == has_residual.shape[0] == batch):
        raise ValueError(
            f"resrl.dump_dir: inconsistent batch sizes (input_ids {batch}, response_length {lengths.numel()}, "
            f"uid {len(uids)}, positive {positive.shape[0]}, residual {residual.shape[0]})"
        )
    if batch and int(lengths.max()) > residual.shape[1]:
        raise ValueError(f"resrl.dump_dir: residuals cover {residual.shape[1]} tokens, a response has {int(lengths.max())}")
    residual, has_residual = residual.detach().float().cpu(), has_residual.detach().bool().cpu()
    record = {
        "input_ids": [ids.detach().long().cpu().reshape(-1).clone() for ids in input_ids],
        "response_length": lengths,
        "uid": [str(u) for u in uids],
        "positive": positive.detach().bool().cpu().reshape(-1),
        "residual": [residual[i, :n].clone() for i, n in enumerate(lengths.tolist())],
        "has_residual": [has_residual[i, :n].clone() for i, n in enumerate(lengths.tolist())],
        "config": config.to_dict(),
        "step": int(step),
    }
    path = step_dump_path(dump_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(record, partial)
    os.replace(partial, path)  # readers never see a half-written file
    return path
