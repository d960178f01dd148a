"""Driver-side checks of settings that cannot work on the CPU platform.

Without them a bad setting surfaces minutes later inside a Ray worker (FSDP1's ``sync_module_states`` on a
device that is not there, a missing flash-attn kernel, a placement group waiting forever for GPUs Ray does not
have). :func:`check_cpu_config` names the setting and the fix instead; it runs in the ``main_ppo`` driver
through a wrapper of veRL's ``validate_config`` and in :mod:`verl_resrl.cpu.launch` before anything starts.
"""

from __future__ import annotations

import functools

from omegaconf import DictConfig, OmegaConf

from verl_resrl import verl_internals

CPU_ROLLOUTS = ("hf",)
CPU_ATTENTION = ("sdpa", "eager")
FSDP_STRATEGY_KEYS = ("actor_rollout_ref.actor.strategy", "actor_rollout_ref.ref.strategy", "critic.strategy")


class CPUConfigError(ValueError):
    """A setting that cannot run with ``VERL_PLATFORM=cpu``; the message says which and how to fix it."""


def _select(config: DictConfig, key: str, default=None):
    return OmegaConf.select(config, key, default=default, throw_on_missing=False)


def _critic_enabled(config: DictConfig) -> bool:
    enable = _select(config, "critic.enable")
    if enable is not None:
        return bool(enable)
    return _select(config, "algorithm.adv_estimator") == "gae"


def check_cpu_config(config: DictConfig) -> None:
    """Raise :class:`CPUConfigError` for the first setting that cannot run on the CPU platform."""
    name = _select(config, "actor_rollout_ref.rollout.name")
    if name not in CPU_ROLLOUTS:
        raise CPUConfigError(
            f"actor_rollout_ref.rollout.name={name!r} cannot run with VERL_PLATFORM=cpu (known CPU rollouts: "
            f"{list(CPU_ROLLOUTS)}; vllm/sglang/trtllm need GPUs). Fix: actor_rollout_ref.rollout.name=hf"
        )
    for key in FSDP_STRATEGY_KEYS:
        if key.startswith("critic.") and not _critic_enabled(config):
            continue
        strategy = _select(config, key)
        if strategy == "fsdp":
            raise CPUConfigError(
                f"{key}=fsdp (FSDP1) cannot run with VERL_PLATFORM=cpu: it syncs module states through an "
                f"accelerator. Fix: {key}=fsdp2"
            )
        if strategy is not None and strategy not in ("fsdp2",):
            raise CPUConfigError(f"{key}={strategy!r} is not supported with VERL_PLATFORM=cpu. Fix: {key}=fsdp2")
    attn = _select(config, "actor_rollout_ref.model.override_config.attn_implementation", "flash_attention_2")
    if attn not in CPU_ATTENTION:
        raise CPUConfigError(
            f"actor_rollout_ref.model.override_config.attn_implementation={attn!r} "
            f"({'the default' if attn == 'flash_attention_2' else 'set'}) needs a GPU kernel and cannot run with "
            f"VERL_PLATFORM=cpu. Fix: +actor_rollout_ref.model.override_config.attn_implementation=sdpa"
        )
    n_gpus = int(_select(config, "trainer.n_gpus_per_node", 1) or 0) * int(_select(config, "trainer.nnodes", 1) or 0)
    fake = _select(config, "ray_kwargs.ray_init.num_gpus")
    if fake is None:
        raise CPUConfigError(
            "ray_kwargs.ray_init.num_gpus is not set: with VERL_PLATFORM=cpu each trainer rank holds one logical "
            f"Ray GPU and Ray sees none on this machine. Fix: +ray_kwargs.ray_init.num_gpus={max(n_gpus, 1)}"
        )
    if n_gpus > int(fake):
        raise CPUConfigError(
            f"trainer.n_gpus_per_node x trainer.nnodes = {n_gpus} ranks, but ray_kwargs.ray_init.num_gpus={fake} "
            f"logical GPUs: the workers would wait forever for placement. Fix: "
            f"+ray_kwargs.ray_init.num_gpus={n_gpus} or trainer.n_gpus_per_node={int(fake)}"
        )


def _wrap_validate_config(module) -> None:
    attr = verl_internals.INTERNALS["cpu.validate_config"].attr
    original = getattr(module, attr)
    if getattr(original, "_verl_resrl_cpu", False):
        return

    @functools.wraps(original)
    def validate_config(config, *args, **kwargs):
        check_cpu_config(config)
        return original(config, *args, **kwargs)

    validate_config._verl_resrl_cpu = True
    setattr(module, attr, validate_config)


def register() -> None:
    """Wrap ``verl.utils.config.validate_config`` (``main_ppo.main`` calls it before ``ray.init``)."""
    from verl_resrl._import_hook import when_imported

    when_imported(verl_internals.INTERNALS["cpu.validate_config"].module, _wrap_validate_config)
