"""verl-resrl: ResRL (negative-sample projection residual RL) for veRL.

The names exported here are the package's contract. Importing ``verl_resrl`` is cheap and imports nothing from
veRL: the math lives in verl-free modules; veRL integration is loaded by veRL itself through the
``verl.plugins`` entry point (:mod:`verl_resrl.plugin`).
"""

from verl_resrl.core.advantage import grpo_outcome_advantage, positive_responses, resrl_advantages
from verl_resrl.core.config import ResRLConfig
from verl_resrl.core.residual import ResidualStats, Residuals, compute_residuals
from verl_resrl.core.think import prompt_opens_think, think_span_mask
from verl_resrl.core.weights import negative_token_weights

__version__ = "0.1.0"

__all__ = [
    "ResRLConfig",
    "Residuals",
    "ResidualStats",
    "compute_residuals",
    "negative_token_weights",
    "resrl_advantages",
    "grpo_outcome_advantage",
    "positive_responses",
    "think_span_mask",
    "prompt_opens_think",
]
