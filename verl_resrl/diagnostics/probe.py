"""The mechanism probe: do ResRL's negative-token weights track the gradient interference they are meant to avoid?

Steps (each resumable from ``--out``):

1. **sample** ``n`` responses per prompt at temperature ``T`` (cached in ``samples.jsonl``), score them with the
   task's reward, and keep going until ``--mixed-groups`` groups have both correct and wrong responses (or the
   prompts run out);
2. **measure** each mixed group (cached in ``groups.jsonl``): one no-grad forward with the package's
   :class:`~verl_resrl.core.capture.HiddenStateCapture` on every probed layer; residuals and weights from the
   public :func:`~verl_resrl.compute_residuals` / :func:`~verl_resrl.negative_token_weights` under
   ``ResRLConfig()`` (the code path training uses); per token the LM-head and full-model interference with the
   group's correct responses (:mod:`.interference`) and the full-model derivative along the wrong responses'
   mean log-likelihood gradient (the "push");
3. **report** per layer: per-group Spearman correlations, the one-step displacement of five weightings, and a
   plot of interference by residual decile (``report.md``, ``summary.json``, ``deciles.png``).

One-step displacement: a step that lowers the wrong responses' tokens with weights ``w`` (each weighting scaled to
the same total) changes the correct responses' mean log-likelihood by ``-sum_t w_t I_full(t)`` and the wrong
responses' by ``-sum_t w_t J(t)`` (first order), so **damage per push** = ``sum w I / sum w J``: how much the
correct answers lose per unit the wrong ones are pushed down. Lower is better.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from verl_resrl import ResRLConfig, compute_residuals, negative_token_weights
from verl_resrl.core.capture import HiddenStateCapture, find_decoder_parts, resolve_hidden_module
from verl_resrl.diagnostics.interference import full_model_interference, head_interference, keeps_logits, \
    row_chunks, sgd_step_change, token_logprobs
from verl_resrl.diagnostics.stats import bootstrap_median, spearman

WEIGHTINGS = ("residual", "uniform", "shuffled", "inverse", "oracle")


class ProbeError(ValueError):
    """Bad input to the probe (no mixed groups, a model without an LM head, a layer out of range, ...)."""


# ------------------------------------------------------------------------------------------------- the model


def probe_layers(model, layers: list[int] | None) -> list[int]:
    """The probed layers (default: -1, -2 and the middle layer), each checked against the model's depth."""
    _, decoder_layers, _, _ = find_decoder_parts(model)
    depth = len(decoder_layers)
    chosen = layers if layers else [-1, -2, depth // 2]
    for layer in chosen:
        try:
            resolve_hidden_module(model, layer)
        except ValueError as error:
            raise ProbeError(str(error).replace("resrl.hidden_layer", "--layers")) from None
    return list(dict.fromkeys(chosen))


def lm_head_weight(model) -> tuple[torch.Tensor, bool]:
    """``(W [V, H], tied)``; refuses models whose head is not one bias-free linear layer."""
    head = model.get_output_embeddings()
    if head is None or not isinstance(getattr(head, "weight", None), torch.Tensor) or head.weight.dim() != 2:
        raise ProbeError(f"{type(model).__name__} has no separate LM head weight (get_output_embeddings() gives "
                         f"{type(head).__name__}): the head interference needs logits = W h")
    if getattr(head, "bias", None) is not None:
        raise ProbeError("the LM head has a bias: head_interference assumes logits = W h")
    embeddings = model.get_input_embeddings()
    tied = embeddings is not None and embeddings.weight.data_ptr() == head.weight.data_ptr()
    return head.weight, tied


# ---------------------------------------------------------------------------------------------- sampling


def eos_ids(model, tokenizer) -> list[int]:
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = [configured] if isinstance(configured, int) else list(configured or [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise ProbeError("the tokenizer and generation_config name no eos token to stop sampling at")
    return ids


@torch.no_grad()
def sample_group_batch(model, prompts: list[list[int]], n: int, *, temperature: float, max_new_tokens: int,
                       stop_ids: list[int], pad_id: int, seed: int) -> list[list[list[int]]]:
    """For each prompt, ``n`` sampled responses, each cut after its first stop token (kept)."""
    device = next(model.parameters()).device
    flat = [p for p in prompts for _ in range(n)]
    width = max(len(p) for p in flat)
    ids = torch.full((len(flat), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(flat):
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                             temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                             eos_token_id=stop_ids, pad_token_id=pad_id)[:, width:].tolist()
    finally:
        torch.random.set_rng_state(generator_state)
    responses = []
    for row in out:
        cut = next((i + 1 for i, token in enumerate(row) if token in stop_ids), len(row))
        responses.append(row[:cut])
    return [responses[i * n:(i + 1) * n] for i in range(len(prompts))]


def sample(model, tokenizer, task, args, log=print) -> list[dict]:
    """Cached groups ``{index, prompt_ids, responses, rewards}``; samples more until enough are mixed."""
    path = Path(args.out) / "samples.jsonl"
    groups = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    done = {g["index"] for g in groups}
    stop_ids = eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    order = [i for i in range(min(args.max_prompts, len(task.questions))) if i not in done]
    start, sampled, mixed_before = time.time(), 0, count_mixed(groups)
    while order and count_mixed(groups) < args.mixed_groups:
        batch, order = order[:args.prompts_per_batch], order[args.prompts_per_batch:]
        prompts = [task.prompt_ids(tokenizer, i) for i in batch]
        for index, prompt, responses in zip(batch, prompts, sample_group_batch(
                model, prompts, args.n, temperature=args.temperature, max_new_tokens=args.max_new_tokens,
                stop_ids=stop_ids, pad_id=pad_id, seed=args.seed * 1_000_003 + batch[0])):
            texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
            rewards = [task.score(t, task.answers[index]) for t in texts]
            group = {"index": index, "prompt_ids": prompt, "responses": responses, "rewards": rewards}
            groups.append(group)
            with open(path, "a") as f:
                f.write(json.dumps(group) + "\n")
        sampled += len(batch)
        mixed = count_mixed(groups)
        rate = (time.time() - start) / sampled
        need = max(0, args.mixed_groups - mixed)
        per_mixed = sampled / max(1, mixed - mixed_before)  # prompts sampled per mixed group found
        log(f"[sample] {len(groups)} prompts, {mixed}/{args.mixed_groups} mixed groups, {rate:.1f} s/prompt, "
            f"ETA {need * per_mixed * rate / 60:.0f} min", flush=True)
    return groups


def is_mixed(group: dict) -> bool:
    rewards = [r > 0 for r in group["rewards"]]
    return any(rewards) and not all(rewards) and all(len(r) > 0 for r in group["responses"])


def count_mixed(groups: list[dict]) -> int:
    return sum(is_mixed(g) for g in groups)


# ------------------------------------------------------------------------------------------- measurement


def group_batch(group: dict, pad_id: int) -> dict:
    prompt = group["prompt_ids"]
    width = max(len(r) for r in group["responses"])
    ids = torch.full((len(group["responses"]), len(prompt) + width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, response in enumerate(group["responses"]):
        ids[row, :len(prompt) + len(response)] = torch.tensor(prompt + response)
        mask[row, :len(prompt) + len(response)] = 1
    return {"input_ids": ids, "attention_mask": mask, "response_start": len(prompt),
            "response_mask": mask[:, len(prompt):].bool(),
            "positive": torch.tensor([r > 0 for r in group["rewards"]])}


def measure_group(model, group: dict, layers: list[int], config: ResRLConfig, pad_id: int,
                  sgd_check: bool = False, row_chunk: int | None = None) -> dict:
    """Per-token residuals, weights and interference of one mixed group (see the module docstring).

    ``row_chunk`` responses go through each differentiated forward at a time (all at once by default), which
    bounds the memory of the backward, the JVP and the SGD check; the numbers do not depend on it.
    """
    device = next(model.parameters()).device
    batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in group_batch(group, pad_id).items()}
    ids, attention, start = batch["input_ids"], batch["attention_mask"], batch["response_start"]
    mask, positive = batch["response_mask"], batch["positive"]
    pos_tokens = mask & positive[:, None]
    neg_tokens = mask & ~positive[:, None]
    captures = {layer: HiddenStateCapture(model, layer) for layer in dict.fromkeys([*layers, -1])}
    with torch.no_grad():
        armed = [c.armed() for c in captures.values()]
        for a in armed:
            a.__enter__()
        try:
            # the hooks need the states only: the LM head runs on the last position alone where it can
            model(input_ids=ids, attention_mask=attention, use_cache=False,
                  **({"logits_to_keep": 1} if keeps_logits(model) else {}))
        finally:
            for a in reversed(armed):
                a.__exit__(None, None, None)
    length = mask.shape[1]
    states = {layer: c.pop()[0][:, start - 1:start - 1 + length].float() for layer, c in captures.items()}

    weight, tied = lm_head_weight(model)
    labels = ids[:, start:]
    head = torch.zeros(mask.shape, device=device)
    head[mask] = head_interference(states[-1][mask], weight.detach().float(), labels[mask], pos_tokens[mask]).float()
    # only the wrong responses' derivatives are reported, so only their rows are run forward-mode
    derivatives = full_model_interference(model, ids, attention, start, mask, {
        "full": pos_tokens.float() / pos_tokens.sum(), "push": neg_tokens.float() / neg_tokens.sum()},
        rows=~positive, row_chunk=row_chunk)

    group_ids = [0] * mask.shape[0]
    record = {"index": group["index"], "tied_embeddings": tied, "responses": mask.shape[0],
              "correct": int(positive.sum()), "positive_tokens": int(pos_tokens.sum()),
              "negative_tokens": int(neg_tokens.sum()),
              "head": head[neg_tokens].tolist(), "full": derivatives["full"][neg_tokens].tolist(),
              "push": derivatives["push"][neg_tokens].tolist(), "layers": {}}
    for layer in layers:
        residuals = compute_residuals(states[layer], mask, group_ids, positive, config)
        valid = residuals.has_residual & neg_tokens
        weights = negative_token_weights(residuals.residual, valid, mask, group_ids, config)
        record["layers"][str(layer)] = {
            "computed": bool(valid[neg_tokens].all()),
            "rank": residuals.stats.group_rank.get(0),
            "residual": residuals.residual[neg_tokens].tolist(),
            "weight": weights[neg_tokens].tolist(),
        }
    if sgd_check:
        record["sgd_check"] = sgd_agreement(model, batch, torch.tensor(record["layers"][str(layers[0])]["weight"],
                                                                        device=device), record, row_chunk)
    return record


def sgd_agreement(model, batch: dict, weights: torch.Tensor, record: dict, row_chunk: int | None = None) -> dict:
    """A real plain-SGD step on the residual-weighted push, against its first-order prediction."""
    ids, attention, start = batch["input_ids"], batch["attention_mask"], batch["response_start"]
    mask, positive = batch["response_mask"], batch["positive"]
    pos_tokens, neg_tokens = mask & positive[:, None], mask & ~positive[:, None]
    w = torch.zeros(mask.shape, device=ids.device)
    w[neg_tokens] = weights * weights.numel() / weights.sum()
    full = torch.tensor(record["full"], device=ids.device)
    push = torch.tensor(record["push"], device=ids.device)

    def means():
        logp = token_logprobs(model, ids, attention, start, row_chunk)
        return torch.stack([logp[pos_tokens].mean(), logp[neg_tokens].mean()])

    def weighted_negative_logp():  # the wrong rows only, row_chunk at a time; their gradients are summed
        for chunk, width in row_chunks(attention, (~positive).nonzero().squeeze(1), row_chunk, start + 1):
            logp = token_logprobs(model, ids[chunk, :width], attention[chunk, :width], start)
            yield (logp * w[chunk, :width - start]).sum() / neg_tokens.sum()

    # first order: d(mean log p) = -lr * sum_t w_t <grad log p_t, grad mean> / n
    per_lr = torch.stack([(w[neg_tokens] * full).sum(), (w[neg_tokens] * push).sum()]) / neg_tokens.sum()
    lr = float(1e-3 / per_lr[1].abs().clamp_min(1e-12))  # aim at a 1e-3 drop of the wrong responses' mean log p
    actual = sgd_step_change(model, weighted_negative_logp, means, lr)
    predicted = -lr * per_lr
    return {"lr": lr, "predicted": predicted.tolist(), "actual": actual.tolist(),
            "predicted_damage_per_push": float(predicted[0] / predicted[1]),
            "actual_damage_per_push": float(actual[0] / actual[1])}


def measure(model, groups: list[dict], layers: list[int], config: ResRLConfig, args, pad_id: int,
            log=print) -> list[dict]:
    path = Path(args.out) / "groups.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    done = {r["index"] for r in records}
    todo = [g for g in groups if is_mixed(g) and g["index"] not in done][:max(0, args.mixed_groups - len(records))]
    start = time.time()
    for k, group in enumerate(todo):
        record = measure_group(model, group, layers, config, pad_id, sgd_check=len(records) < args.sgd_checks,
                               row_chunk=args.row_chunk)
        records.append(record)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")
        rate = (time.time() - start) / (k + 1)
        log(f"[measure] {len(records)} groups, {rate:.1f} s/group, ETA {(len(todo) - k - 1) * rate / 60:.1f} min",
            flush=True)
    return records


# ------------------------------------------------------------------------------------------------- report


def weightings(residual_weights: torch.Tensor, full: torch.Tensor, config: ResRLConfig,
               generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The five weightings of one group's negative tokens, each scaled to the same total as ``uniform``."""
    w = residual_weights
    oracle = torch.empty_like(w)
    oracle[torch.argsort(full, descending=True)] = torch.sort(w).values  # most interfering -> smallest weight
    raw = {"residual": w, "uniform": torch.ones_like(w), "shuffled": w[torch.randperm(w.numel(), generator=generator)],
           "inverse": 1.0 + config.min_weight - w, "oracle": oracle}
    return {name: v * v.numel() / v.sum() for name, v in raw.items()}


def layer_summary(records: list[dict], layer: int, config: ResRLConfig, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    rho = {key: [] for key in ("weight_head", "weight_full", "residual_head", "residual_full")}
    damage = {name: [] for name in WEIGHTINGS}
    deciles = {"head": [[] for _ in range(10)], "full": [[] for _ in range(10)]}
    skipped = 0
    for record in records:
        entry = record["layers"][str(layer)]
        if not entry["computed"]:
            skipped += 1
            continue
        residual, weight = torch.tensor(entry["residual"]), torch.tensor(entry["weight"])
        head, full, push = (torch.tensor(record[k]) for k in ("head", "full", "push"))
        for key, (x, y) in {"weight_head": (weight, head), "weight_full": (weight, full),
                            "residual_head": (residual, head), "residual_full": (residual, full)}.items():
            value = spearman(x, y)
            if value is not None:
                rho[key].append(value)
        for name, w in weightings(weight, full, config, generator).items():
            pushed = float((w * push).sum())
            if pushed != 0.0 and math.isfinite(pushed):
                damage[name].append(float((w * full).sum()) / pushed)
        order = torch.argsort(torch.argsort(residual))
        bins = (order * 10 // residual.numel()).tolist()
        for kind, values in (("head", head), ("full", full)):
            scale = float(values.abs().mean())
            if scale > 0:
                for b, v in zip(bins, (values / scale).tolist()):
                    deciles[kind][b].append(v)
    n = len(records) - skipped
    out = {"layer": layer, "mixed_groups": n, "skipped_groups": skipped}
    for key, values in rho.items():
        out[f"spearman_{key}"] = bootstrap_median(values, seed=seed)
        out[f"spearman_{key}"]["share_negative"] = (sum(v < 0 for v in values) / len(values)) if values else None
    out["damage_per_push"] = {name: bootstrap_median(values, seed=seed) for name, values in damage.items()}
    paired = {name: [a - b for a, b in zip(damage["residual"], damage[name])] for name in ("uniform", "shuffled")}
    out["damage_per_push_difference"] = {f"residual-{name}": bootstrap_median(v, seed=seed) for name, v in paired.items()}
    out["interference_by_residual_decile"] = {
        kind: [sum(b) / len(b) if b else None for b in bins_] for kind, bins_ in deciles.items()}
    return out


def sgd_summary(records: list[dict]) -> dict | None:
    checks = [r["sgd_check"] for r in records if "sgd_check" in r]
    if not checks:
        return None
    errors = [abs(c["actual"][i] - c["predicted"][i]) / max(abs(c["predicted"][i]), 1e-12) for c in checks for i in (0, 1)]
    return {"groups": len(checks), "max_relative_error": max(errors), "checks": checks}
