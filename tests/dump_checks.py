"""Checks on a ``resrl.dump_dir`` step dump shared by the end-to-end tests."""

from __future__ import annotations

import torch

from verl_resrl import ResRLConfig, audit
from verl_resrl.core.think import response_think_masks


def think_masks(dump: dict) -> list[torch.Tensor]:
    """Per response, the tokens in reasoning spans when the run had ``mask_think_tokens`` on (else none)."""
    config = ResRLConfig.from_dict(dump["config"])
    lengths = dump["response_length"].tolist()
    if not config.mask_think_tokens:
        return [torch.zeros(n, dtype=torch.bool) for n in lengths]
    return response_think_masks(dump["input_ids"], lengths, *config.think_token_ids)


def assert_every_negative_token_weighted(dump: dict) -> int:
    """Token-level coverage, from the rule rather than the package's counters: in every group with a positive
    and a negative response and at least ``min_pos_tokens`` positive tokens, every token of every negative
    response has a residual; no positive token and no token of another group has one. With
    ``mask_think_tokens``, tokens in reasoning spans (found in the dumped ids) count for nothing and get no
    residual. Returns the number of such (computed) groups."""
    config = ResRLConfig.from_dict(dump["config"])
    positive = dump["positive"].tolist()
    counted = [~think for think in think_masks(dump)]
    members: dict[str, list[int]] = {}
    for i, uid in enumerate(dump["uid"]):
        members.setdefault(uid, []).append(i)
    computed = 0
    for uid, rows in members.items():
        pos_tokens = sum(int(counted[i].sum()) for i in rows if positive[i])
        has_negative = any(not positive[i] and bool(counted[i].any()) for i in rows)
        expect = has_negative and pos_tokens >= config.min_pos_tokens
        computed += expect
        for i in rows:
            has = dump["has_residual"][i]
            want = counted[i] if expect and not positive[i] else torch.zeros_like(counted[i])
            assert torch.equal(has.bool(), want), (
                f"group {uid}, response {i} (positive={positive[i]}, {len(has)} tokens, {int(counted[i].sum())} "
                f"outside reasoning spans): {int(has.sum())} tokens with residuals, expected {int(want.sum())}"
            )
    return computed


def max_computed_group_positive_tokens(dump: dict) -> int:
    """The largest positive token count (outside reasoning spans) among groups whose negatives received
    residuals."""
    tokens: dict[str, int] = {}
    weighted: set[str] = set()
    for uid, counted, pos, has in zip(dump["uid"], [~t for t in think_masks(dump)], dump["positive"].tolist(),
                                      dump["has_residual"]):
        tokens[uid] = tokens.get(uid, 0) + (int(counted.sum()) if pos else 0)
        if bool(has.any()):
            weighted.add(uid)
    return max((tokens[u] for u in weighted), default=0)


def assert_recomputed(model_path: str, dump: dict, rtol: float = 1e-4) -> audit.AuditResult:
    """The dump equals :mod:`verl_resrl.audit`'s recomputation from ``model_path`` with the run's settings."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="eager").eval()
    result = audit.compare(dump, audit.recompute(model, dump)[0])
    assert result.ok(rtol) and result.weighted_tokens > 0, result
    return result
