"""Baseline advantage estimators of Zhu et al. 2025 ("The Surprising Effectiveness of Negative Reinforcement
in LLM Reasoning"), registered in veRL's estimator registry next to ``resrl``.

With one outcome reward r per response (the sum of ``token_level_rewards`` over the response) and
``correct = r > 0`` (so 1/0 and +1/-1 reward styles behave the same), no baseline and no group statistics:

==============  =========================  ==========================
estimator       correct response (r > 0)   wrong response (r <= 0)
==============  =========================  ==========================
``psr``         A = r                      A = 0
``nsr``         A = 0                      A = -1
``w_reinforce`` A = lambda * r             A = -1
==============  =========================  ==========================

For 0/1 rewards this is exactly PSR: A = r, NSR: A = r - 1, W-REINFORCE: A = lambda (correct) / -1 (wrong).
A length-scaled positive reward (r in (0, 1], see ``length_scaled_reward``) keeps its scale in PSR and
W-REINFORCE; the negative side is always -1, whatever the negative reward's magnitude.

Config: ``algorithm.w_reinforce_lambda`` (default 0.1; veRL's ``algorithm`` section is open, but the key is not
in its YAML, so set it as ``+algorithm.w_reinforce_lambda=0.1``).
"""

from __future__ import annotations

import torch

from verl_resrl import verl_internals

DEFAULT_W_REINFORCE_LAMBDA = 0.1
ESTIMATOR_NAMES = ("psr", "nsr", "w_reinforce")


def _outcome(token_level_rewards: torch.Tensor, response_mask: torch.Tensor):
    """Per-response reward ``(bs,)`` and correctness ``(bs,)`` from token rewards ``(bs, T)``."""
    scores = (token_level_rewards * response_mask).sum(dim=-1)
    return scores, scores > 0


def _broadcast(per_response: torch.Tensor, response_mask: torch.Tensor):
    """``(bs,)`` advantage -> ``(advantages, returns)``, both ``(bs, T)`` and zero outside the response."""
    advantages = per_response.unsqueeze(-1) * response_mask
    return advantages, advantages.clone()


def _config_value(config, key: str, default: float) -> float:
    if config is None:
        return default
    value = config.get(key, default) if hasattr(config, "get") else getattr(config, key, default)
    return default if value is None else float(value)


def w_reinforce_lambda(config) -> float:
    """``algorithm.w_reinforce_lambda`` (default 0.1); must be >= 0."""
    lam = _config_value(config, "w_reinforce_lambda", DEFAULT_W_REINFORCE_LAMBDA)
    if lam < 0:
        raise ValueError(f"algorithm.w_reinforce_lambda must be >= 0, got {lam}")
    return lam


def compute_psr_advantage(token_level_rewards, response_mask, config=None, **kwargs):
    """Positive sample reinforcement: A = r for correct responses, 0 otherwise. Shapes ``(bs, T)``."""
    scores, correct = _outcome(token_level_rewards, response_mask)
    return _broadcast(torch.where(correct, scores, torch.zeros_like(scores)), response_mask)


def compute_nsr_advantage(token_level_rewards, response_mask, config=None, **kwargs):
    """Negative sample reinforcement: A = -1 for wrong responses, 0 otherwise. Shapes ``(bs, T)``."""
    scores, correct = _outcome(token_level_rewards, response_mask)
    return _broadcast(torch.where(correct, torch.zeros_like(scores), -torch.ones_like(scores)), response_mask)


def compute_w_reinforce_advantage(token_level_rewards, response_mask, config=None, **kwargs):
    """Weighted REINFORCE: A = lambda * r for correct responses, -1 for wrong ones. Shapes ``(bs, T)``."""
    scores, correct = _outcome(token_level_rewards, response_mask)
    lam = w_reinforce_lambda(config)
    return _broadcast(torch.where(correct, lam * scores, -torch.ones_like(scores)), response_mask)


ESTIMATORS = {
    "psr": compute_psr_advantage,
    "nsr": compute_nsr_advantage,
    "w_reinforce": compute_w_reinforce_advantage,
}


def register() -> None:
    """Register the three estimators once veRL imports its registry; calling it again is a no-op."""
    from verl_resrl._import_hook import when_imported

    def add(_module):
        register_adv_est = verl_internals.resolve("baselines.register_adv_est")
        for name, fn in ESTIMATORS.items():
            register_adv_est(name)(fn)  # the same function objects: re-registering is accepted

    when_imported(verl_internals.INTERNALS["baselines.register_adv_est"].module, add)
