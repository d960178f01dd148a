"""Sample k completions per held-out problem with ``transformers`` ``generate`` and score them.

Metrics (pass@k with :func:`verl_resrl.evaluate.pass_at_k`, the unbiased estimator 1 - C(n-c, k)/C(n, k)):
``avg@k`` (mean accuracy over all samples), ``pass@1`` ... ``pass@k`` (every k), ``distinct_answers`` (mean
number of distinct parsed final answers per problem; unparseable responses do not count) and
``no_answer_rate`` (share of samples without a parseable final answer).

    python -m verl_resrl.demo.evaluate_policy MODEL_DIR [--k 16] [--n-test 128] [--out metrics.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from verl_resrl.demo import task as demo_task
from verl_resrl.evaluate import pass_at_k

# Problems per generate call for the study's and the quickstart's evaluations: 4.5x faster than 32 on 2 cores.
BATCH_PROMPTS_128 = 128

DEFAULT_MAX_NEW_TOKENS = 64


def prompt_ids(tokenizer, problems) -> list[list[int]]:
    """Token ids of each problem's chat prompt with the generation prompt, as veRL's rollout builds them."""
    out = []
    for p in problems:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": p.prompt}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        out.append(list(ids))
    return out


def sample_completions(model, tokenizer, problems, k: int, temperature: float = 1.0, seed: int = 0,
                       max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, batch_prompts: int = 32) -> list[list[str]]:
    """``k`` sampled completions (decoded, special tokens skipped) for each problem, in problem order."""
    import torch

    pad_id = tokenizer.pad_token_id
    eos_id = tokenizer.eos_token_id
    all_ids = prompt_ids(tokenizer, problems)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    results: list[list[str]] = []
    try:
        model.eval()
        for start in range(0, len(all_ids), batch_prompts):
            chunk = all_ids[start:start + batch_prompts]
            width = max(len(ids) for ids in chunk)
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, ids in enumerate(chunk):  # left padding
                input_ids[row, width - len(ids):] = torch.tensor(ids)
                attention[row, width - len(ids):] = 1
            with torch.no_grad():
                out = model.generate(
                    input_ids=input_ids, attention_mask=attention, do_sample=True, temperature=temperature,
                    top_k=0, top_p=1.0, max_new_tokens=max_new_tokens, num_return_sequences=k,
                    eos_token_id=eos_id, pad_token_id=pad_id,
                )
            texts = tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
            results += [texts[i * k:(i + 1) * k] for i in range(len(chunk))]
    finally:
        torch.random.set_rng_state(generator_state)
    return results


def score_completions(problems, completions: list[list[str]]) -> dict:
    """avg@k, pass@1..k, distinct answers and no-answer rate of ``completions[i]`` for ``problems[i]``."""
    if len(problems) != len(completions) or not problems:
        raise ValueError("need one non-empty list of completions per problem")
    k = min(len(c) for c in completions)
    counts, distinct, no_answer, samples = [], [], 0, 0
    for problem, texts in zip(problems, completions):
        answers = [demo_task.extract_answer(t) for t in texts]
        correct = sum(demo_task.score(t, problem.answer) for t in texts)
        counts.append((len(texts), int(correct)))
        distinct.append(len({a for a in answers if a is not None}))
        no_answer += sum(a is None for a in answers)
        samples += len(texts)
    metrics = {
        "problems": len(problems),
        "k": k,
        f"avg@{k}": sum(c for _, c in counts) / samples,
        **{f"pass@{j}": sum(pass_at_k(n, c, j) for n, c in counts) / len(counts) for j in range(1, k + 1)},
        "distinct_answers": sum(distinct) / len(distinct),
        "no_answer_rate": no_answer / samples,
        "per_problem": [[n, c] for n, c in counts],
    }
    return metrics


def load_model(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, tokenizer


def evaluate_model_dir(model_dir, problems=None, k: int = 16, temperature: float = 1.0, seed: int = 0,
                       n_test: int = 128, threads: int | None = 2, batch_prompts: int = 32) -> dict:
    """Load an HF model directory and score ``k`` samples per held-out problem (default: the task's test split)."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    if problems is None:
        problems = held_out(n_test)
    model, tokenizer = load_model(model_dir)
    start = time.time()
    completions = sample_completions(model, tokenizer, problems, k, temperature=temperature, seed=seed,
                                     batch_prompts=batch_prompts)
    metrics = score_completions(problems, completions)
    metrics.update(model=str(model_dir), temperature=temperature, seed=seed, seconds=round(time.time() - start, 2),
                   examples=[{"prompt": p.prompt, "answer": p.answer, "samples": c[:3]}
                             for p, c in zip(problems[:3], completions[:3])])
    return metrics


def held_out(n_test: int = 128):
    """The held-out problems used for evaluation (the task's test split, disjoint from the training split)."""
    return demo_task.splits(demo_task.N_TRAIN_PROBLEMS, n_test)[1]


def summary_row(name: str, metrics: dict, ks=(1, 4, 16)) -> str:
    k = metrics["k"]
    cells = [name, f"{100 * metrics[f'avg@{k}']:.1f}"]
    cells += [f"{100 * metrics[f'pass@{j}']:.1f}" for j in ks if f"pass@{j}" in metrics]
    cells += [f"{metrics['distinct_answers']:.2f}"]
    return "| " + " | ".join(cells) + " |"


def summary_table(runs: dict[str, dict], ks=(1, 4, 16)) -> str:
    k = next(iter(runs.values()))["k"]
    header = ["policy", f"avg@{k}"] + [f"pass@{j}" for j in ks if j <= k] + ["distinct answers"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += [summary_row(name, m, ks) for name, m in runs.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir")
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    metrics = evaluate_model_dir(args.model_dir, k=args.k, temperature=args.temperature, seed=args.seed,
                                 n_test=args.n_test)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=1))
    print(summary_table({args.name or str(args.model_dir): metrics}))
    return metrics


if __name__ == "__main__":
    main()
