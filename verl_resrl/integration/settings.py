"""Reading and checking ResRL settings from a veRL config (driver side, before any worker starts)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.think import check_think_token_ids, think_token_ids_of

ESTIMATOR = "resrl"
SUPPORTED_VERL = ((0, 9, 1), (0, 10, 0))  # [low, high)
SUPPORTED_STRATEGIES = ("fsdp", "fsdp2")
SUPPORTED_V1_MODES = ("sync", "colocate_async")


def uses_resrl(config: Any) -> bool:
    """True when ``algorithm.adv_estimator`` is ``resrl`` in a full veRL config."""
    algorithm = _get(config, "algorithm")
    return algorithm is not None and str(_get(algorithm, "adv_estimator", "")) == ESTIMATOR


def resrl_config(algorithm: Any) -> ResRLConfig:
    """``ResRLConfig`` from ``algorithm.resrl`` (absent: the defaults)."""
    return ResRLConfig.from_dict(_get(algorithm, "resrl", None))


def with_think_token_ids(settings: ResRLConfig, tokenizer: Any) -> ResRLConfig:
    """``settings`` with ``think_token_ids`` read from the run's tokenizer (or the explicit ids checked against
    its vocabulary) when ``mask_think_tokens`` is on; ``settings`` itself otherwise."""
    if not settings.mask_think_tokens:
        return settings
    if settings.think_token_ids is not None:
        check_think_token_ids(settings.think_token_ids, len(tokenizer))
        return settings
    return dataclasses.replace(settings, think_token_ids=think_token_ids_of(tokenizer))


def check_config(config: Any) -> ResRLConfig:
    """Every refusal ResRL makes, as one clear error before training starts. Returns the settings."""
    import verl

    version = _version_tuple(verl.__version__)
    if not SUPPORTED_VERL[0] <= version < SUPPORTED_VERL[1]:
        raise RuntimeError(f"verl-resrl supports veRL >=0.9.1,<0.10; found veRL {verl.__version__}")
    algorithm = _get(config, "algorithm")
    settings = resrl_config(algorithm)

    rollout = _get(_get(config, "actor_rollout_ref"), "rollout")
    actor = _get(_get(config, "actor_rollout_ref"), "actor")
    n = int(_get(rollout, "n", 1))
    if n < 2:
        raise ValueError(
            f"algorithm.adv_estimator=resrl needs several responses per prompt: actor_rollout_ref.rollout.n={n}, "
            "set it to >= 2 (the paper uses 4)"
        )
    correction = _get(algorithm, "rollout_correction", None)
    if correction is not None and _get(correction, "bypass_mode", False):
        raise ValueError(
            "algorithm.adv_estimator=resrl needs the actor's old-log-prob forward pass, which "
            "algorithm.rollout_correction.bypass_mode=True skips: set bypass_mode=False"
        )
    strategy = str(_get(actor, "strategy", "fsdp"))
    if strategy not in SUPPORTED_STRATEGIES:
        raise ValueError(
            f"algorithm.adv_estimator=resrl captures hidden states in veRL's FSDP engine; "
            f"actor_rollout_ref.actor.strategy={strategy} is not supported (use fsdp or fsdp2)"
        )
    trainer = _get(config, "trainer")
    if bool(_get(trainer, "use_v1", True)):
        mode = str(_get(_get(trainer, "v1", {}), "trainer_mode", "sync"))
        if mode not in SUPPORTED_V1_MODES:
            raise ValueError(
                f"algorithm.adv_estimator=resrl supports trainer.v1.trainer_mode in {list(SUPPORTED_V1_MODES)} "
                f"(and trainer.use_v1=False); got {mode!r}, whose disaggregated actor is not patched"
            )
    dp = data_parallel_size(config)
    batch_size = int(_get(_get(config, "data"), "train_batch_size", 0) or 0)
    if batch_size and dp and batch_size % dp:
        raise ValueError(
            f"algorithm.adv_estimator=resrl keeps each prompt group on one data-parallel rank: "
            f"data.train_batch_size={batch_size} must be a multiple of the actor's data-parallel size {dp} "
            "(trainer.n_gpus_per_node x trainer.nnodes / actor ulysses_sequence_parallel_size)"
        )
    if settings.mask_think_tokens:
        _check_think_tokens(settings, _get(_get(config, "actor_rollout_ref"), "model"))
    return settings


def _check_think_tokens(settings: ResRLConfig, model: Any) -> None:
    """Pre-flight: the tokenizer of a local model directory has the think tags (the trainer resolves the ids
    from its own tokenizer again; a remote path is only checked there)."""
    path = _get(model, "tokenizer_path", None) or _get(model, "path", None)
    if not path or not os.path.isdir(str(path)):
        return
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=bool(_get(model, "trust_remote_code", False)))
    with_think_token_ids(settings, tokenizer)


def data_parallel_size(config: Any) -> int:
    """The actor's data-parallel size: world size / Ulysses sequence-parallel size."""
    trainer = _get(config, "trainer")
    world = int(_get(trainer, "n_gpus_per_node", 1)) * int(_get(trainer, "nnodes", 1))
    return max(1, world // ulysses_size(_get(_get(config, "actor_rollout_ref"), "actor")))


def ulysses_size(actor: Any) -> int:
    """The sequence-parallel size the actor's engine runs with.

    veRL's ``FSDPActorConfig.__post_init__`` copies the deprecated ``actor.ulysses_sequence_parallel_size``
    over ``actor.fsdp_config.ulysses_sequence_parallel_size`` when it is > 1; the engine reads the latter.
    """
    legacy = int(_get(actor, "ulysses_sequence_parallel_size", 1) or 1)
    if legacy > 1:
        return legacy
    return max(1, int(_get(_get(actor, "fsdp_config", None), "ulysses_sequence_parallel_size", 1) or 1))


def _get(node: Any, key: str, default: Any = None) -> Any:
    if node is None:
        return default
    if hasattr(node, "get"):
        return node.get(key, default)
    return getattr(node, key, default)


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts + [0] * (3 - len(parts)))
