"""ResRL inside stock veRL 0.9.1: ``algorithm.adv_estimator=resrl``.

Flow of one training step (both the V1 and the legacy trainer):

1. driver, batch balancing (:mod:`.trainer`): every prompt group (``uid``) is placed whole on one
   data-parallel rank, shards balanced by token count;
2. driver, before the actor's old-log-prob pass (:mod:`.trainer`): each sample is tagged with its group
   index and whether it is positive, and the request carries the ResRL settings;
3. actor workers, old-log-prob pass (:mod:`.worker`): a hook on the configured layer keeps the response
   tokens' states; each group's residuals are computed as soon as all its samples have passed and returned
   with the log-probs as ``resrl_residual`` / ``resrl_has_residual``;
4. driver, advantages (:mod:`.advantage`): ``resrl`` turns residuals into weights and GRPO advantages into
   ResRL advantages; metrics go to veRL's tracker with the step's data metrics.

With any other estimator every patch passes through to veRL's own code. ``VERL_RESRL_DISABLE_PATCHES=1``
leaves veRL entirely unpatched (the ``resrl`` estimator then refuses to run).
"""

from __future__ import annotations

import os

DISABLE_ENV = "VERL_RESRL_DISABLE_PATCHES"
_registered = False


def register() -> None:
    """Register the ``resrl`` estimator and policy loss, and install the patches (idempotent)."""
    global _registered
    if _registered:
        return
    from verl_resrl.integration import advantage, policy_loss

    advantage.register()
    policy_loss.register()
    if os.environ.get(DISABLE_ENV, "").strip().lower() not in ("1", "true", "yes"):
        from verl_resrl.integration import checks, trainer, worker

        checks.register()
        trainer.register()
        worker.register()
    _registered = True
