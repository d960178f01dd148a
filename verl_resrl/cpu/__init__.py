"""CPU execution backend: veRL's real ``main_ppo`` on a machine without GPUs.

Active only when ``VERL_PLATFORM=cpu`` (:mod:`verl_resrl.plugin` calls :func:`register` then, in every veRL
process); otherwise nothing here is imported and GPU users see no change. :func:`register` adds

* the ``cpu`` platform (device cpu, gloo, logical Ray GPUs) — :mod:`.platform`;
* patches of the few accelerator assumptions in veRL 0.9.1 — :mod:`.patches`;
* the ``hf`` rollout (transformers generation as rollout servers) — :mod:`.hf_rollout`;
* driver-side checks of CPU-incompatible settings — :mod:`.checks`.

:mod:`.launch` builds the ``main_ppo`` command line with the CPU settings; :mod:`.tiny_assets` makes a tiny
tokenizer, model, data set and reward offline for tests, demos and benchmarks.
"""

from __future__ import annotations

_registered = False


def register() -> None:
    """Register everything the CPU backend needs (idempotent, cheap: heavy veRL modules are patched lazily)."""
    global _registered
    if _registered:
        return
    from verl_resrl.cpu import checks, hf_rollout, patches, platform

    platform.register()
    patches.register()
    hf_rollout.register()
    checks.register()
    _registered = True
