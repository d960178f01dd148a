"""Policy loss ``resrl``: veRL's clipped PPO surrogate (same gradients as ``vanilla``) plus diagnostics.

ResRL's token weights are already folded into the advantages, so the loss itself is unchanged; this loss
mode only adds metrics about how the advantages it receives are distributed.
"""

from __future__ import annotations

from verl_resrl import verl_internals

LOSS_MODE = "resrl"


def compute_policy_loss_resrl(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                              config=None, rollout_is_weights=None):
    vanilla = verl_internals.resolve("compute_policy_loss_vanilla")
    pg_loss, metrics = vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode=loss_agg_mode,
                               config=config, rollout_is_weights=rollout_is_weights)
    mask = response_mask.bool()
    adv = advantages.detach()[mask]
    if adv.numel():
        neg, pos = adv[adv < 0], adv[adv > 0]
        metrics["actor/resrl_neg_token_frac"] = float((adv < 0).float().mean())
        metrics["actor/resrl_neg_adv_abs_mean"] = float(neg.abs().mean()) if neg.numel() else 0.0
        metrics["actor/resrl_pos_adv_mean"] = float(pos.mean()) if pos.numel() else 0.0
    return pg_loss, metrics


def register() -> None:
    from verl_resrl.integration.patching import add_to_registry

    add_to_registry("POLICY_LOSS_REGISTRY", LOSS_MODE, compute_policy_loss_resrl)
