"""Gradient interference between a prompt group's wrong-response tokens and its correct responses.

ResRL's premise: pushing down the likelihood of a wrong response's token whose hidden state lies inside the
correct responses' subspace also pushes the correct responses down (lazy likelihood displacement). These
functions measure that interference exactly, per token, so the premise can be checked on a real model.

For one group with response tokens t = 1..N, sampled ids y_t, LM-head input h_t and positive tokens P:

* **head interference** -- the LM head's share only:
  I_head(t) = < grad_W log softmax(W h_t)[y_t] , mean_{i in P} grad_W log softmax(W h_i)[y_i] >_F.
  With grad_W log softmax(W h)[y] = (e_y - p) h^T, each term is (e_{y_t} - p_t)·(e_{y_i} - p_i) · (h_t·h_i), so no
  V x H gradient is ever formed: the V-sized dot products are accumulated over chunks of the vocabulary.
* **full-model interference** -- every parameter:
  I_full(t) = d/de log p_{theta + e u}(y_t) at e = 0, u = grad_theta mean_{i in P} log p_theta(y_i),
  i.e. the first-order change of each token's log-probability along the positives' gradient, for all tokens at
  once: one backward (u) and one forward-mode JVP (:func:`torch.func.jvp`).

I(t) > 0 means that lowering log p(y_t) lowers the correct responses' likelihood, to first order.
"""

from __future__ import annotations

import inspect
from typing import Callable, Iterable

import torch
from torch import nn


def head_interference(hidden: torch.Tensor, lm_head_weight: torch.Tensor, labels: torch.Tensor,
                      positive_mask: torch.Tensor, vocab_chunk: int = 8192) -> torch.Tensor:
    """LM-head gradient interference of each token with the mean positive-token gradient.

    Args:
        hidden: ``[N, H]`` the states that feed the LM head (after the final norm), one per response token.
        lm_head_weight: ``[V, H]`` the LM head's weight (no bias: ``logits = hidden @ W.T``).
        labels: ``[N]`` the sampled token ids.
        positive_mask: ``[N]`` bool, True for tokens of correct responses (at least one).
        vocab_chunk: vocabulary rows processed at a time; memory is ``O(N * vocab_chunk + N * |P|)``.

    Returns:
        ``[N]`` in the dtype of ``hidden`` (float64 in -> float64 out, exact up to that precision).
    """
    if hidden.dim() != 2 or lm_head_weight.dim() != 2 or hidden.shape[1] != lm_head_weight.shape[1]:
        raise ValueError(f"hidden [N, H] and lm_head_weight [V, H] expected, got {tuple(hidden.shape)} and "
                         f"{tuple(lm_head_weight.shape)}")
    n, vocab = hidden.shape[0], lm_head_weight.shape[0]
    if labels.shape != (n,) or positive_mask.shape != (n,):
        raise ValueError(f"labels and positive_mask must be [{n}], got {tuple(labels.shape)} and "
                         f"{tuple(positive_mask.shape)}")
    positive_mask = positive_mask.bool()
    if not positive_mask.any():
        raise ValueError("head_interference needs at least one positive token")
    if int(labels.min()) < 0 or int(labels.max()) >= vocab:
        raise ValueError(f"labels must lie in [0, {vocab}), got [{int(labels.min())}, {int(labels.max())}]")
    h = hidden
    w = lm_head_weight.to(h.dtype)
    pos = positive_mask.nonzero().squeeze(1)

    # pass 1: log-normaliser of every token
    lse = torch.full((n,), float("-inf"), dtype=h.dtype, device=h.device)
    for start in range(0, vocab, vocab_chunk):
        lse = torch.logaddexp(lse, torch.logsumexp(h @ w[start:start + vocab_chunk].T, dim=1))
    # pass 2: p_t . p_i over the vocabulary, chunk by chunk
    probs_dot = torch.zeros((n, pos.numel()), dtype=h.dtype, device=h.device)
    for start in range(0, vocab, vocab_chunk):
        p = torch.exp(h @ w[start:start + vocab_chunk].T - lse[:, None])
        probs_dot += p @ p[pos].T
    # p_i[y_t] and p_t[y_i] from the label rows of W
    label_logits = h @ w[labels].T                               # [N, N]: (W h_a)[y_b]
    p_of_label = torch.exp(label_logits - lse[:, None])          # [a, b] = p_a[y_b]
    p_pos_at_t = p_of_label[pos].T                               # [t, i] = p_i[y_t]
    p_t_at_pos = p_of_label[:, pos]                              # [t, i] = p_t[y_i]
    same = (labels[:, None] == labels[pos][None, :]).to(h.dtype)
    residual_dot = same - p_pos_at_t - p_t_at_pos + probs_dot    # (e_yt - p_t) . (e_yi - p_i)
    return (residual_dot * (h @ h[pos].T)).mean(dim=1)


def row_chunks(attention_mask: torch.Tensor, rows: torch.Tensor, row_chunk: int | None,
               min_width: int) -> list[tuple[torch.Tensor, int]]:
    """``rows`` in chunks of ``row_chunk``, longest first, each with the width its longest row needs.

    Rows are right-padded, so under causal attention cutting a chunk's trailing padding changes no kept position.
    """
    lengths = attention_mask.sum(dim=1)
    order = rows[torch.argsort(lengths[rows], descending=True, stable=True)]
    size = row_chunk or max(1, order.numel())
    chunks = []
    for k in range(0, order.numel(), size):
        chunk = order[k:k + size]
        chunks.append((chunk, max(min_width, int(lengths[chunk].max()))))
    return chunks


def keeps_logits(model: nn.Module) -> bool:
    """Whether ``model.forward`` takes ``logits_to_keep`` (transformers' causal LMs: the LM head on the last k)."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


def _response_logprobs(model: nn.Module, params: dict[str, torch.Tensor] | None, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor, response_start: int) -> torch.Tensor:
    """``[B, S - response_start]`` log-probabilities of the response tokens; ``params`` replace the model's own."""
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": False}
    keep = input_ids.shape[1] - response_start + 1
    if keeps_logits(model):
        kwargs["logits_to_keep"] = keep  # the LM head and softmax over the response positions only
    if params is None:
        logits = model(**kwargs).logits
    else:
        logits = torch.func.functional_call(model, params, (), kwargs)
        logits = logits.logits
    logits = _at_least_fp32(logits[:, -keep:-1])
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, response_start:, None]).squeeze(-1)


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: int, row_chunk: int | None = None) -> torch.Tensor:
    """``[B, T]`` log-probabilities of ``input_ids[:, response_start:]`` (T tokens) under ``model``.

    Rows are run ``row_chunk`` at a time (all at once by default), each chunk cut to its longest row; positions
    past a row's ``attention_mask`` are 0. Differentiable.
    """
    b, s = input_ids.shape
    rows = torch.arange(b, device=input_ids.device)
    parts = [(chunk, _response_logprobs(model, None, input_ids[chunk, :width], attention_mask[chunk, :width],
                                        response_start))
             for chunk, width in row_chunks(attention_mask, rows, row_chunk, response_start + 1)]
    out = torch.zeros((b, s - response_start), dtype=parts[0][1].dtype, device=input_ids.device)
    for chunk, logp in parts:
        out[chunk, :logp.shape[1]] = logp
    return out * attention_mask[:, response_start:].to(out.dtype)


def full_model_interference(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            response_start: int, response_mask: torch.Tensor,
                            directions: dict[str, torch.Tensor], rows: torch.Tensor | None = None,
                            row_chunk: int | None = None) -> dict[str, torch.Tensor]:
    """Derivative of every response token's log-probability along each direction in parameter space.

    Args:
        model: a causal LM whose forward supports forward-mode AD (eager attention is safest).
        input_ids, attention_mask: ``[B, S]`` prompt + response, responses right-padded from ``response_start``.
        response_start: position of the first response token (all rows share the prompt).
        response_mask: ``[B, T]`` with ``T = S - response_start``.
        directions: name -> ``[B, T]`` token weights ``c``; the direction is ``grad_theta sum_t c_t log p(y_t)``.
        rows: ``[B]`` bool, the rows whose derivatives are wanted (default all); the others come back as 0.
        row_chunk: rows per forward (default all at once). Every row is independent of the others, so the
            backward is summed and the JVP split over chunks of rows (each cut to its longest row): activation
            and logit memory is that of ``row_chunk`` rows, and only rows with a nonzero weight or a wanted
            derivative are run.

    Returns:
        name -> ``[B, T]`` ``d/de log p_{theta + e u}(y_t)`` (float32 or the model's wider dtype, zero outside the
        mask and ``rows``), i.e. the inner product of each token's log-prob gradient with that direction.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters to differentiate")
    b, t = response_mask.shape
    width_min = response_start + 1
    wanted = torch.ones(b, dtype=torch.bool, device=input_ids.device) if rows is None else rows.bool()
    wanted = (wanted & response_mask.any(dim=1)).nonzero().squeeze(1)
    values = {name: p.detach() for name, p in params.items()}
    out = {}
    for key, coefficients in directions.items():
        weights = coefficients * response_mask.to(coefficients.dtype)
        tangent = {name: torch.zeros_like(v) for name, v in values.items()}
        with torch.enable_grad():
            leaves = {name: v.detach().requires_grad_(True) for name, v in values.items()}  # no copy
            for chunk, width in row_chunks(attention_mask, weights.ne(0).any(dim=1).nonzero().squeeze(1),
                                           row_chunk, width_min):
                logps = _response_logprobs(model, leaves, input_ids[chunk, :width], attention_mask[chunk, :width],
                                           response_start)
                objective = (logps * weights[chunk, :logps.shape[1]].to(logps.dtype)).sum()
                grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True)
                for name, g in zip(leaves, grads):
                    if g is not None:
                        tangent[name] += g
                del logps, objective, grads
        del leaves
        derivative = torch.zeros((b, t), dtype=torch.promote_types(next(iter(values.values())).dtype, torch.float32),
                                 device=input_ids.device)
        for chunk, width in row_chunks(attention_mask, wanted, row_chunk, width_min):
            ids, attention = input_ids[chunk, :width], attention_mask[chunk, :width]
            with torch.no_grad():
                _, d = torch.func.jvp(lambda p: _response_logprobs(model, p, ids, attention, response_start),
                                      (values,), (tangent,))
            derivative[chunk, :d.shape[1]] = d.to(derivative.dtype)
        out[key] = derivative * response_mask.to(derivative.dtype)
        del tangent
    return out


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def sgd_step_change(model: nn.Module, step: Callable[[], torch.Tensor | Iterable[torch.Tensor]],
                    measure: Callable[[], torch.Tensor], lr: float) -> torch.Tensor:
    """Change of ``measure()`` after one plain SGD step ``theta -= lr * grad step()``; the weights are restored.

    ``step()`` returns the loss, or yields it in parts (e.g. row chunks) whose gradients are summed.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        before = measure()
    total = [torch.zeros_like(p) for p in params]
    with torch.enable_grad():
        losses = step()
        for loss in ([losses] if isinstance(losses, torch.Tensor) else losses):
            for acc, g in zip(total, torch.autograd.grad(loss, params, allow_unused=True)):
                if g is not None:
                    acc += g
    try:
        with torch.no_grad():
            for p, g in zip(params, total):
                p.sub_(lr * g)
            del total
            after = measure()
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return after - before
