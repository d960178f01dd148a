"""Where ResRL's token weights go on the CPU demo task, and how large its update is next to GRPO's.

Samples ``--n`` responses for ``--prompts`` training problems from a policy (default: the learning benchmark's
starting policy), takes the hidden states ResRL would capture (layer ``--hidden-layer``, response-aligned like
the log-probs), and runs the package's own ``compute_residuals`` and ``resrl_advantages`` on them. Reports:

* the hidden size and the subspace rank per mixed group;
* for the wrong responses' tokens: the share that lies in a *shared prefix* (the response so far equals the
  prefix of a correct response of the same group, so the causal model's state is identical and the residual
  is ~0) versus *divergent* tokens (at or after the first token that differs from every correct response), and
  for each kind the mean residual, the mean weight and the share at the minimum weight ξ;
* the size of the update ResRL asks for next to GRPO's on the same samples: the sum of |advantage| over
  response tokens with GRPO's = 1, split into the correct- and wrong-response parts.

    python benchmarks/resrl_weights_diagnostics.py [--policy-dir outputs/learning/policy] [--prompts 64] [--n 8]

Prints a table and writes JSON (default ``benchmarks/results/learning/resrl_weights.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from verl_resrl import (ResRLConfig, compute_residuals, grpo_outcome_advantage, negative_token_weights,
                        resrl_advantages)
from verl_resrl.demo import task as demo_task
from verl_resrl.demo.evaluate_policy import prompt_ids

REPO = Path(__file__).resolve().parents[1]


def sample(model, tokenizer, problems, n: int, seed: int, max_new_tokens: int = 64):
    """(prompt ids, response ids (EOS included), reward) for n samples of each problem, at temperature 1."""
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    out = []
    for problem, ids in zip(problems, prompt_ids(tokenizer, problems)):
        prompt = torch.tensor([ids])
        gen = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                             top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=n,
                             eos_token_id=eos, pad_token_id=tokenizer.pad_token_id)
        for row in gen[:, len(ids):].tolist():
            response = row[: row.index(eos) + 1] if eos in row else row
            text = tokenizer.decode(response, skip_special_tokens=True)
            out.append((ids, response, demo_task.score(text, problem.answer)))
    return out


def response_states(model, samples, layer: int):
    """``(B, T, H)`` states at ``layer`` predicting each response token, and the ``(B, T)`` response mask."""
    width = max(len(r) for _, r, _ in samples)
    hidden = None
    mask = torch.zeros(len(samples), width)
    with torch.no_grad():
        for b, (prompt, response, _) in enumerate(samples):
            states = model(torch.tensor([prompt + response]), output_hidden_states=True).hidden_states[layer][0]
            aligned = states[len(prompt) - 1 : len(prompt) - 1 + len(response)]
            if hidden is None:
                hidden = torch.zeros(len(samples), width, states.shape[-1])
            hidden[b, : len(response)] = aligned
            mask[b, : len(response)] = 1
    return hidden, mask


def shared_prefix_lengths(samples, group_of) -> list[int]:
    """Per response: the longest prefix it shares with a correct response of its group (0 if none)."""
    lengths = []
    for b, (_, response, reward) in enumerate(samples):
        best = 0
        for c, (_, other, other_reward) in enumerate(samples):
            if c == b or group_of[c] != group_of[b] or other_reward <= 0:
                continue
            k = 0
            while k < min(len(response), len(other)) and response[k] == other[k]:
                k += 1
            best = max(best, k)
        lengths.append(best)
    return lengths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy-dir", type=Path, default=REPO / "outputs" / "learning" / "policy")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-layer", type=int, default=ResRLConfig().hidden_layer)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "learning" / "resrl_weights.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(args.policy_dir, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(args.policy_dir)
    problems = demo_task.generate(demo_task.N_TRAIN_PROBLEMS, demo_task.TRAIN_SEED)[: args.prompts]
    samples = sample(model, tokenizer, problems, args.n, args.seed)
    group_of = [b // args.n for b in range(len(samples))]
    hidden, mask = response_states(model, samples, args.hidden_layer)
    lengths = [len(r) for _, r, _ in samples]
    rewards = torch.zeros_like(mask)
    for b, (_, _, reward) in enumerate(samples):
        rewards[b, lengths[b] - 1] = reward
    positive = torch.tensor([s[2] > 0 for s in samples])

    config = ResRLConfig(seed=args.seed, hidden_layer=args.hidden_layer)
    residuals = compute_residuals(hidden, mask, group_of, positive, config)
    advantages, _ = resrl_advantages(rewards, mask, group_of, residuals.residual, residuals.has_residual, config,
                                     is_positive=positive)
    grpo = grpo_outcome_advantage(rewards, mask, group_of).unsqueeze(1) * mask
    weights = negative_token_weights(residuals.residual, residuals.has_residual & ~positive.unsqueeze(1), mask,
                                     group_of, config)

    prefix = shared_prefix_lengths(samples, group_of)
    kinds = {"shared_prefix": [], "divergent": []}
    for b in range(len(samples)):
        for t in range(lengths[b]):
            if residuals.has_residual[b, t]:
                kind = "shared_prefix" if t < prefix[b] else "divergent"
                kinds[kind].append((float(residuals.residual[b, t]), float(weights[b, t])))
    n_tokens = sum(len(v) for v in kinds.values())
    xi = config.min_weight
    tokens = {}
    for kind, values in kinds.items():
        tokens[kind] = {
            "share": len(values) / max(1, n_tokens),
            "mean_residual": statistics.fmean(r for r, _ in values) if values else None,
            "mean_weight": statistics.fmean(w for _, w in values) if values else None,
            "share_at_min_weight": sum(abs(w - xi) < 1e-6 for _, w in values) / len(values) if values else None,
        }

    neg, pos = (~positive).unsqueeze(1) & mask.bool(), positive.unsqueeze(1) & mask.bool()
    scale = grpo.abs().sum()

    def update(adv):
        return {"total": float(adv.abs().sum() / scale), "correct": float(adv[pos].abs().sum() / scale),
                "wrong": float(adv[neg].abs().sum() / scale)}

    mixed = sorted({g for g in group_of if 0 < sum(s[2] > 0 for b, s in enumerate(samples) if group_of[b] == g) < args.n})
    result = {
        "benchmark": "resrl_weights_diagnostics",
        "policy": str(args.policy_dir),
        "prompts": args.prompts, "n": args.n, "seed": args.seed, "hidden_layer": args.hidden_layer,
        "hidden_size": hidden.shape[-1],
        "responses": len(samples), "correct": int(positive.sum()), "mixed_groups": len(mixed),
        "rank_per_mixed_group": sorted(residuals.stats.group_rank.values()),
        "wrong_tokens_with_residual": n_tokens,
        "tokens": tokens,
        "update_size_vs_grpo": {"grpo": update(grpo), "resrl": update(advantages)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    ranks = result["rank_per_mixed_group"]
    print(f"policy {args.policy_dir}: hidden size {result['hidden_size']}, {len(samples)} responses, "
          f"{result['correct']} correct, {len(mixed)} mixed groups; subspace rank per mixed group: "
          f"min {min(ranks) if ranks else '-'}, median {statistics.median(ranks) if ranks else '-'}, "
          f"max {max(ranks) if ranks else '-'}")
    print(f"{'wrong-response tokens':<24}{'share':>8}{'mean R':>10}{'mean w':>9}{'w = xi':>9}")
    for kind, row in tokens.items():
        if row["mean_weight"] is None:
            continue
        print(f"{kind:<24}{row['share']:>8.2f}{row['mean_residual']:>10.4f}{row['mean_weight']:>9.3f}"
              f"{row['share_at_min_weight']:>9.2f}")
    print("update size, sum |A| over response tokens relative to GRPO (correct + wrong):")
    for name, row in result["update_size_vs_grpo"].items():
        print(f"  {name:<26}{row['total']:>6.2f} = {row['correct']:.2f} + {row['wrong']:.2f}")
    print(f"JSON: {args.out}")
    return result


if __name__ == "__main__":
    main()
