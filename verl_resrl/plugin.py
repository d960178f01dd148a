"""Entry point of group ``verl.plugins`` (named ``resrl``).

``import verl`` imports this module in every veRL process (launcher, trainer, workers, rollout servers) and
swallows any exception at DEBUG level. So this module does its work on import, keeps the import cheap (no
CUDA, no trainer import) and reports every failure itself, at WARNING, instead of letting a run silently go
on without the package.

Each component registers itself through a ``register()`` function in its own module; the list below is
the single place that says what is registered and when.
"""

from __future__ import annotations

import importlib
import logging
import os

logger = logging.getLogger("verl_resrl")


def _components() -> list[str]:
    """Modules whose ``register()`` is called in every veRL process, in order."""
    modules = []
    if os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu":
        modules.append("verl_resrl.cpu")
    modules += ["verl_resrl.integration", "verl_resrl.baselines", "verl_resrl.length_scaled_reward"]
    return modules


def load() -> list[str]:
    """Register every component; return the modules that failed (each logged at WARNING)."""
    failed = []
    for name in _components():
        try:
            importlib.import_module(name).register()
        except Exception:  # noqa: BLE001 - veRL would hide it; we must not
            logger.warning("verl-resrl: registering %s failed; this process runs without it", name, exc_info=True)
            failed.append(name)
    return failed


FAILED = load()
