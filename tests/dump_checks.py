"""Checks on a ``resrl.dump_dir`` step dump shared by the end-to-end tests."""

from __future__ import annotations

import torch

from verl_resrl import ResRLConfig, audit


def assert_every_negative_token_weighted(dump: dict) -> int:
    """Token-level coverage, from the rule rather than the package's counters: in every group with a positive
    and a negative response and at least ``min_pos_tokens`` positive tokens, every token of every negative
    response has a residual; no positive token and no token of another group has one. Returns the number of
    such (computed) groups."""
    config = ResRLConfig.from_dict(dump["config"])
    lengths, positive = dump["response_length"].tolist(), dump["positive"].tolist()
    members: dict[str, list[int]] = {}
    for i, uid in enumerate(dump["uid"]):
        members.setdefault(uid, []).append(i)
    computed = 0
    for uid, rows in members.items():
        pos_tokens = sum(lengths[i] for i in rows if positive[i])
        has_negative = any(not positive[i] and lengths[i] > 0 for i in rows)
        expect = has_negative and pos_tokens >= config.min_pos_tokens
        computed += expect
        for i in rows:
            has = dump["has_residual"][i]
            want = expect and not positive[i]
            assert bool(has.all() if want else not has.any()), (
                f"group {uid}, response {i} (positive={positive[i]}, {lengths[i]} tokens): "
                f"{int(has.sum())} tokens with residuals, expected {'all' if want else 'none'}"
            )
    return computed


def max_computed_group_positive_tokens(dump: dict) -> int:
    """The largest positive token count among groups whose negatives received residuals."""
    tokens: dict[str, int] = {}
    weighted: set[str] = set()
    for uid, n, pos, has in zip(dump["uid"], dump["response_length"].tolist(), dump["positive"].tolist(),
                                dump["has_residual"]):
        tokens[uid] = tokens.get(uid, 0) + (n if pos else 0)
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
