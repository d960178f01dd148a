"""ResRL settings: one dataclass, documented defaults, validated at construction.

In a veRL run these live under ``algorithm.resrl.*`` (e.g. ``+algorithm.resrl.rank=32``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SPLIT_MODES = ("reward", "advantage")
SUBSPACE_METHODS = ("randomized", "exact")
WEIGHT_MODES = ("residual", "shuffled")


@dataclass(frozen=True)
class ResRLConfig:
    """Settings of ResRL (defaults are the paper's).

    Attributes:
        rank: k, the number of principal directions of the positive tokens kept as the positive subspace.
            Capped per group by (#positive tokens - 1) and by the hidden size.
        max_pos_tokens: M, at most this many positive tokens per group build the subspace (seeded sub-sample).
        min_pos_tokens: groups with fewer positive tokens are skipped (their negative tokens keep weight 1).
        q_low, q_high: quantiles of a group's negative-token residuals mapped to weight ``min_weight`` and 1.
        min_weight: xi, the weight of the negative tokens closest to the positive subspace.
        pos_weight: lambda, the factor on the advantages of positive responses.
        hidden_layer: which hidden state is projected, in Hugging Face ``hidden_states`` indexing:
            -2 = output of the second-to-last decoder layer (default), -1 = the final normed state feeding the
            LM head, -k = output of decoder layer ``layers[-k]`` for k >= 2.
        split_by: ``"reward"``: positive = reward > 0; ``"advantage"``: positive = GRPO advantage > 0.
        subspace: ``"randomized"`` (seeded randomized range finder, fast) or ``"exact"`` (full SVD).
        oversample: extra random directions of the randomized range finder.
        power_iters: power iterations of the randomized range finder.
        seed: base seed; each group's sub-sample and random directions derive from (seed, group id), so
            results do not depend on batch order, sharding or other groups.
        degenerate_range: when ``quantile(q_high) - quantile(q_low)`` is below this, every valid negative token
            of the group gets weight ``(min_weight + 1) / 2``.
        rank_rtol: singular directions with sigma <= rank_rtol * sigma_max are numerical noise and are not
            part of the subspace (duplicate or low-rank positive tokens).
        layer_norm_eps: epsilon of the parameter-free LayerNorm applied to hidden states.
        adv_epsilon: epsilon added to the group std of GRPO advantages.
        weights: ``"residual"`` (the method). ``"shuffled"`` is a research diagnostic: each group's negative-token
            weights are computed as usual and then permuted among that group's negative tokens (seeded by
            (seed, group id)), so the weights keep their distribution but carry no information about which
            token lies near the positive subspace. The other diagnostic, uniform negative weights, is
            ``min_weight=1.0``.
        dump_dir: a debugging switch, off (``None``) by default: when set, the driver writes
            ``<dump_dir>/step_<N>.pt`` at every training step, holding every response's token ids, uid,
            positivity and residuals (see :mod:`verl_resrl.integration.dump`), to audit the residuals offline.
        mask_think_tokens: off by default. When on, tokens inside reasoning spans (``<think>`` ... ``</think>``,
            both tags included; see :mod:`verl_resrl.core.think`) take no part in the subspace: they are removed
            from the positive tokens before the ``min_pos_tokens`` check and the SVD, and negative tokens inside
            spans get no residual, so they stay out of the quantiles and keep weight 1 (the full GRPO penalty).
            Positive responses are still scaled by ``pos_weight`` and the loss mask is unchanged. A span opened
            by the prompt (a chat template ending with ``<think>``) covers the response from its first token; an
            unclosed span ends with the response. Unlike the option of the authors' reference implementation,
            the span is aligned to the response tokens themselves (not shifted by one) and the tag ids come from
            the run's tokenizer (docs/think_tokens.md).
        think_token_ids: ``[open_id, close_id]``, the ids of ``<think>`` and ``</think>``; ``None`` (default)
            reads them from the run's tokenizer, which must then have both as single tokens. Only with
            ``mask_think_tokens``.
    """

    rank: int = 64
    max_pos_tokens: int = 4096
    min_pos_tokens: int = 4
    q_low: float = 0.2
    q_high: float = 0.8
    min_weight: float = 0.1
    pos_weight: float = 0.1
    hidden_layer: int = -2
    split_by: str = "reward"
    subspace: str = "randomized"
    oversample: int = 48
    power_iters: int = 6
    seed: int = 0
    degenerate_range: float = 1e-5
    rank_rtol: float = 1e-4
    layer_norm_eps: float = 1e-5
    adv_epsilon: float = 1e-6
    weights: str = "residual"
    dump_dir: str | None = None
    mask_think_tokens: bool = False
    think_token_ids: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _int("rank", self.rank, low=1)
        _int("min_pos_tokens", self.min_pos_tokens, low=2)
        _int("max_pos_tokens", self.max_pos_tokens, low=self.min_pos_tokens, low_name="min_pos_tokens")
        _int("hidden_layer", self.hidden_layer)
        _int("oversample", self.oversample, low=0)
        _int("power_iters", self.power_iters, low=0)
        _int("seed", self.seed, low=0)
        _real("q_low", self.q_low, 0.0, 1.0)
        _real("q_high", self.q_high, 0.0, 1.0)
        if not self.q_low < self.q_high:
            raise ValueError(f"resrl.q_low ({self.q_low}) must be < resrl.q_high ({self.q_high}); both in [0, 1]")
        _real("min_weight", self.min_weight, 0.0, 1.0)
        _real("pos_weight", self.pos_weight, 0.0, math.inf)
        _real("degenerate_range", self.degenerate_range, 0.0, math.inf)
        _real("rank_rtol", self.rank_rtol, 0.0, 1.0)
        _real("layer_norm_eps", self.layer_norm_eps, 0.0, math.inf, open_low=True)
        _real("adv_epsilon", self.adv_epsilon, 0.0, math.inf)
        _choice("split_by", self.split_by, SPLIT_MODES)
        _choice("subspace", self.subspace, SUBSPACE_METHODS)
        _choice("weights", self.weights, WEIGHT_MODES)
        if self.dump_dir is not None and (not isinstance(self.dump_dir, str) or not self.dump_dir.strip()):
            raise ValueError(f"resrl.dump_dir must be a directory path (or null: no dump), got {self.dump_dir!r}")
        if not isinstance(self.mask_think_tokens, bool):
            raise ValueError(f"resrl.mask_think_tokens must be true or false, got {self.mask_think_tokens!r}")
        if self.think_token_ids is not None:
            ids = self.think_token_ids
            if (isinstance(ids, (str, bytes)) or not hasattr(ids, "__len__") or len(ids) != 2
                    or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in ids) or ids[0] == ids[1]):
                raise ValueError("resrl.think_token_ids must be [open_id, close_id], two distinct token ids >= 0 "
                                 f"(the ids of <think> and </think>), got {ids!r}")
            if not self.mask_think_tokens:
                raise ValueError(f"resrl.think_token_ids={list(ids)} is only used with resrl.mask_think_tokens=true")
            object.__setattr__(self, "think_token_ids", (int(ids[0]), int(ids[1])))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ResRLConfig:
        """Build from a plain dict or an OmegaConf mapping (``algorithm.resrl``); unknown keys are an error."""
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            try:  # an OmegaConf DictConfig is a MutableMapping, but be explicit about containers
                from omegaconf import DictConfig, OmegaConf

                if isinstance(values, DictConfig):
                    values = OmegaConf.to_container(values, resolve=True)
            except ImportError:
                pass
        if not isinstance(values, Mapping):
            raise TypeError(f"resrl settings must be a mapping, got {type(values).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown resrl setting(s) {unknown}; valid keys are {valid}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _int(name: str, value: Any, low: int | None = None, low_name: str | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"resrl.{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        bound = f"resrl.{low_name} ({low})" if low_name else str(low)
        raise ValueError(f"resrl.{name} must be >= {bound}, got {value}")


def _real(name: str, value: Any, low: float, high: float, open_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"resrl.{name} must be a finite number, got {value!r}")
    too_low = value <= low if open_low else value < low
    if too_low or value > high:
        left = "(" if open_low else "["
        raise ValueError(f"resrl.{name} must be in {left}{low}, {high}], got {value}")


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"resrl.{name} must be one of {list(allowed)}, got {value!r}")
