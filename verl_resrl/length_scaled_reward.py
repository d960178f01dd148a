"""Length-scaled positive reward (the paper's reward manager, DESIGN section 1 step 7).

A positive reward is kept for responses of up to ``start`` tokens, scaled linearly down to ``end_scale`` x at
``max_len`` tokens and by ``end_scale`` beyond; rewards <= 0 are untouched.

veRL 0.9.1 does not pass the response length to a custom reward function, so this is a reward manager: the
stock ``naive`` manager (decode, call ``compute_score``) followed by the scaling, registered as
``length_scaled``. Use it with::

    reward.reward_manager.name=length_scaled
    reward.custom_reward_function.path=reward_fns/math_reward.py
    +reward.reward_kwargs.length_scale.start=3500        # optional, these are the defaults
    +reward.reward_kwargs.length_scale.max_len=4096
    +reward.reward_kwargs.length_scale.end_scale=0.7

(``reward.reward_kwargs`` is where 0.9.1's own ``dapo`` manager reads its settings.) Every sample's
``reward_extra_info`` gains ``length_scale`` (the factor applied) and ``unscaled_score``; the ``acc`` of the
math reward stays unscaled.
"""

from __future__ import annotations

from dataclasses import dataclass

from verl_resrl import verl_internals

MANAGER_NAME = "length_scaled"


@dataclass(frozen=True)
class LengthScale:
    start: int = 3500
    max_len: int = 4096
    end_scale: float = 0.7

    def __post_init__(self):
        if not 0 <= self.start < self.max_len:
            raise ValueError(f"length_scale needs 0 <= start < max_len, got start={self.start}, "
                             f"max_len={self.max_len}")
        if not 0.0 <= self.end_scale <= 1.0:
            raise ValueError(f"length_scale.end_scale must be in [0, 1], got {self.end_scale}")

    @classmethod
    def from_reward_config(cls, reward_config) -> "LengthScale":
        """Read ``reward.reward_kwargs.length_scale`` (a mapping; missing keys keep the defaults)."""
        reward_kwargs = (reward_config.get("reward_kwargs") if reward_config is not None else None) or {}
        settings = dict(reward_kwargs.get("length_scale") or {})
        unknown = set(settings) - {"start", "max_len", "end_scale"}
        if unknown:
            raise ValueError(f"unknown reward.reward_kwargs.length_scale keys: {sorted(unknown)}")
        defaults = cls()
        return cls(start=int(settings.get("start", defaults.start)),
                   max_len=int(settings.get("max_len", defaults.max_len)),
                   end_scale=float(settings.get("end_scale", defaults.end_scale)))


def length_factor(response_len: int, start: int = 3500, max_len: int = 4096, end_scale: float = 0.7) -> float:
    """Multiplier for a positive reward of a ``response_len``-token response: 1 -> ``end_scale`` linearly."""
    if response_len <= start:
        return 1.0
    if response_len >= max_len:
        return end_scale
    return 1.0 - (1.0 - end_scale) * (response_len - start) / (max_len - start)


def length_scale(score: float, response_len: int, start: int = 3500, max_len: int = 4096,
                 end_scale: float = 0.7) -> float:
    """``score`` scaled by :func:`length_factor` when positive; a score <= 0 is returned unchanged."""
    if score <= 0:
        return score
    return score * length_factor(response_len, start, max_len, end_scale)


_MANAGER_CLASS = None


def _manager_class():
    """Build (once) the reward manager class on top of veRL's ``naive`` manager."""
    global _MANAGER_CLASS
    if _MANAGER_CLASS is not None:
        return _MANAGER_CLASS
    naive_manager = verl_internals.resolve("reward.NaiveRewardManager")

    class LengthScaledRewardManager(naive_manager):
        """``naive`` + length scaling of positive rewards; settings in ``reward.reward_kwargs.length_scale``."""

        def __init__(self, config, tokenizer, compute_score, **kwargs):
            super().__init__(config, tokenizer, compute_score, **kwargs)
            self.length_scale = LengthScale.from_reward_config(config.get("reward"))

        async def run_single(self, data) -> dict:
            result = await super().run_single(data)
            item = data[-1]  # the sequence naive scores (multi-sequence outputs: the last one)
            response_len = int(item.batch["attention_mask"][-item.batch["responses"].shape[-1]:].sum())
            score = float(result["reward_score"])
            scaled = length_scale(score, response_len, self.length_scale.start, self.length_scale.max_len,
                                  self.length_scale.end_scale)
            extra = result.setdefault("reward_extra_info", {})
            extra["unscaled_score"] = score
            extra["length_scale"] = scaled / score if score > 0 else 1.0
            result["reward_score"] = scaled
            return result

    LengthScaledRewardManager.__module__ = __name__
    LengthScaledRewardManager.__qualname__ = "LengthScaledRewardManager"
    _MANAGER_CLASS = LengthScaledRewardManager
    return _MANAGER_CLASS


def __getattr__(name):
    # ``reward.reward_manager.source=importlib`` + ``module.path=<this file>`` + ``name=LengthScaledRewardManager``
    # also works: the class is built on first access.
    if name == "LengthScaledRewardManager":
        return _manager_class()
    raise AttributeError(name)


def register() -> None:
    """Register the manager as ``length_scaled`` once veRL imports its reward-loop registry; idempotent."""
    from verl_resrl._import_hook import when_imported

    def add(_module):
        register_reward_manager = verl_internals.resolve("reward.register_reward_manager")
        register_reward_manager(MANAGER_NAME)(_manager_class())

    when_imported(verl_internals.INTERNALS["reward.register_reward_manager"].module, add)
