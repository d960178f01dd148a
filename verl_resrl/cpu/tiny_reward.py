"""Reward for the tiny arithmetic task of :mod:`verl_resrl.cpu.tiny_assets` (veRL ``compute_score`` signature).

Exact answers score 1. Anything else earns partial credit — the fraction of the answer's digits found in the
response, halved, minus a small length penalty — so even a random model gets rewards that vary inside a GRPO
group and the policy gradient is not zero (an exact-match reward would give a random model all zeros).
"""

from __future__ import annotations

import re


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    answer = str(ground_truth).strip()
    response = solution_str.strip()
    match = re.search(r"-?\d+", response)
    exact = match is not None and match.group(0) == answer
    if exact:
        score = 1.0
    else:
        remaining = list(response)
        hits = 0
        for ch in answer:
            if ch in remaining:
                remaining.remove(ch)
                hits += 1
        score = 0.5 * hits / max(len(answer), 1) - 0.01 * min(len(response), 50)
    return {"score": float(score), "exact": float(exact)}
