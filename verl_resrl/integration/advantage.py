"""The ``resrl`` advantage estimator and its wiring into veRL's ``compute_advantage``.

veRL calls registered estimators with a fixed set of arguments (rewards, mask, uids, config) and no per-token
extras, so ``compute_advantage`` (both trainers use it; V1 through ``compute_advantage_for_multi_trajectories``)
is wrapped: with ``adv_estimator=resrl`` it hands the residuals returned by the old-log-prob pass to
:func:`compute_resrl_advantage`; with any other estimator it is veRL's own function, untouched.
"""

from __future__ import annotations

import contextvars
import functools
import logging

import numpy as np
import torch

from verl_resrl import verl_internals
from verl_resrl.core.advantage import resrl_advantages
from verl_resrl.integration.metrics import resrl_metrics
from verl_resrl.integration.patching import add_to_registry, when_imported, wrap
from verl_resrl.integration.settings import ESTIMATOR, resrl_config

logger = logging.getLogger(__name__)

# Per-sample tensors the actor returns with its old log-probs: padded (B, T) tensors and (B,) tensors.
TOKEN_FIELDS = ("resrl_residual", "resrl_has_residual")
SAMPLE_FIELDS = ("resrl_positive", "resrl_status", "resrl_rank", "resrl_seconds")
FIELDS = TOKEN_FIELDS + SAMPLE_FIELDS

# V1 keeps these fields in TransferQueue; the trainer wrapper fetches them for the compute_advantage call.
pending_inputs: contextvars.ContextVar[dict | None] = contextvars.ContextVar("resrl_pending_inputs", default=None)
# Metrics of the last ResRL advantage computation, merged into the step's data metrics.
_last_metrics: dict = {}


def compute_resrl_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config=None,
    index: np.ndarray | None = None,
    resrl_residual: torch.Tensor | None = None,
    resrl_has_residual: torch.Tensor | None = None,
    resrl_positive: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """veRL advantage estimator ``resrl`` (registered in ``ADV_ESTIMATOR_REGISTRY``).

    Args:
        token_level_rewards, response_mask: ``(B, T)``.
        config: the ``algorithm`` config (``algorithm.resrl`` holds the ResRL settings).
        index: ``(B,)`` uids.
        resrl_residual, resrl_has_residual: ``(B, T)`` from the actor's old-log-prob pass.
        resrl_positive: ``(B,)`` positive set the residuals were computed with.
    """
    if resrl_residual is None or resrl_has_residual is None:
        raise RuntimeError(
            "the resrl estimator needs the residuals computed during the actor's old-log-prob pass; they were not "
            "found in the batch (is verl-resrl's plugin loaded in the trainer, and is "
            "VERL_RESRL_DISABLE_PATCHES unset?)"
        )
    if index is None:
        raise ValueError("the resrl estimator needs the prompt uids (index) to form groups")
    settings = resrl_config(config)
    norm = bool(config.get("norm_adv_by_std_in_grpo", True)) if config is not None else True
    return resrl_advantages(
        token_level_rewards, response_mask, list(index), resrl_residual.float(), resrl_has_residual.bool(), settings,
        norm_adv_by_std=norm, is_positive=None if resrl_positive is None else resrl_positive.bool(),
    )


def _wrap_compute_advantage(original):
    @functools.wraps(original)
    def compute_advantage(data, adv_estimator, *args, **kwargs):
        if str(getattr(adv_estimator, "value", adv_estimator)) != ESTIMATOR:
            return original(data, adv_estimator, *args, **kwargs)
        bound = verl_internals.INTERNALS["compute_advantage"].bind(data, adv_estimator, *args, **kwargs)
        if "response_mask" not in data.batch.keys():  # both 0.9.1 trainers set it before this call
            raise RuntimeError("algorithm.adv_estimator=resrl: the batch has no response_mask")
        inputs = _residual_inputs(data)
        config = bound["config"]
        advantages, returns = compute_resrl_advantage(
            data.batch["token_level_rewards"], data.batch["response_mask"], config=config,
            index=data.non_tensor_batch["uid"], **{k: inputs[k] for k in TOKEN_FIELDS + ("resrl_positive",)},
        )
        data.batch["advantages"], data.batch["returns"] = advantages, returns
        _last_metrics.clear()
        _last_metrics.update(
            resrl_metrics(inputs, data.batch["response_mask"], list(data.non_tensor_batch["uid"]), advantages,
                          resrl_config(config))
        )
        return data

    return compute_advantage


def _residual_inputs(data) -> dict:
    """The ResRL fields of ``data`` (legacy trainer) or of the V1 trainer's pending fetch."""
    if all(k in data.batch.keys() for k in FIELDS):
        return {k: data.batch[k] for k in FIELDS}
    pending = pending_inputs.get()
    if pending is None:
        raise RuntimeError(
            "algorithm.adv_estimator=resrl: the batch carries no residuals from the actor's old-log-prob pass"
        )
    size = data.batch.batch_size[0]
    if any(pending[k].shape[0] != size for k in FIELDS):
        raise RuntimeError(f"ResRL residuals cover {pending['resrl_positive'].shape[0]} samples, the batch {size}")
    width = data.batch["response_mask"].shape[1]
    out = dict(pending)
    for k in TOKEN_FIELDS:
        out[k] = _pad_to(pending[k], width)
    return out


def _pad_to(tensor: torch.Tensor, width: int) -> torch.Tensor:
    if tensor.shape[1] == width:
        return tensor
    if tensor.shape[1] > width:
        return tensor[:, :width]
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[1]))


def _wrap_compute_data_metrics(original):
    @functools.wraps(original)
    def compute_data_metrics(*args, **kwargs):
        metrics = original(*args, **kwargs)
        if _last_metrics:
            metrics.update(_last_metrics)
            _last_metrics.clear()
        return metrics

    return compute_data_metrics


def register() -> None:
    """Register the estimator (in every process) and wrap veRL's advantage / metric entry points lazily."""
    import os

    from verl_resrl.integration import DISABLE_ENV

    add_to_registry("ADV_ESTIMATOR_REGISTRY", ESTIMATOR, compute_resrl_advantage)
    if os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return
    when_imported("verl.trainer.ppo.ray_trainer",
                  lambda m: wrap(m, "compute_advantage", _wrap_compute_advantage, "compute_advantage"))
    when_imported("verl.trainer.ppo.v1.utils",
                  lambda m: wrap(m, "compute_advantage", _wrap_compute_advantage, "compute_advantage"))
    when_imported("verl.trainer.ppo.metric_utils",
                  lambda m: wrap(m, "compute_data_metrics", _wrap_compute_data_metrics, "compute_data_metrics"))
