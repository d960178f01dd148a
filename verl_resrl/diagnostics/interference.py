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

from typing import Callable

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


def token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   response_start: int) -> torch.Tensor:
    """``[B, T]`` log-probabilities of ``input_ids[:, response_start:]`` (T tokens) under ``model``."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    logits = _at_least_fp32(logits[:, response_start - 1:-1])
    return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, response_start:, None]).squeeze(-1)


def full_model_interference(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                            response_start: int, response_mask: torch.Tensor,
                            directions: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Derivative of every response token's log-probability along each direction in parameter space.

    Args:
        model: a causal LM whose forward supports forward-mode AD (eager attention is safest).
        input_ids, attention_mask: ``[B, S]`` prompt + response, responses right-padded from ``response_start``.
        response_start: position of the first response token (all rows share the prompt).
        response_mask: ``[B, T]`` with ``T = S - response_start``.
        directions: name -> ``[B, T]`` token weights ``c``; the direction is ``grad_theta sum_t c_t log p(y_t)``.

    Returns:
        name -> ``[B, T]`` ``d/de log p_{theta + e u}(y_t)`` (float32 or the model's wider dtype, zero outside the mask), i.e. the inner product
        of each token's log-prob gradient with that direction.
    """
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("the model has no trainable parameters to differentiate")

    def logp(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.func.functional_call(model, p, (), {"input_ids": input_ids, "attention_mask": attention_mask,
                                                         "use_cache": False}).logits

    def response_logp(p):
        logits = _at_least_fp32(logp(p)[:, response_start - 1:-1])
        return torch.log_softmax(logits, dim=-1).gather(-1, input_ids[:, response_start:, None]).squeeze(-1)

    values = {name: p.detach() for name, p in params.items()}
    out = {}
    for key, coefficients in directions.items():
        with torch.enable_grad():
            leaves = {name: v.clone().requires_grad_(True) for name, v in values.items()}
            logps = response_logp(leaves)
            mask = response_mask.to(logps.dtype)
            objective = (logps * coefficients.to(logps.dtype) * mask).sum()
            grads = torch.autograd.grad(objective, list(leaves.values()), allow_unused=True)
        tangent = {name: (g if g is not None else torch.zeros_like(values[name])).detach()
                   for name, g in zip(leaves, grads)}
        del leaves, grads
        with torch.no_grad():
            _, derivative = torch.func.jvp(response_logp, (values,), (tangent,))
        out[key] = derivative * mask
        del tangent
    return out


def _at_least_fp32(logits: torch.Tensor) -> torch.Tensor:
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def sgd_step_change(model: nn.Module, step: Callable[[], torch.Tensor], measure: Callable[[], torch.Tensor],
                    lr: float) -> torch.Tensor:
    """Change of ``measure()`` after one plain SGD step ``theta -= lr * grad step()``; the weights are restored."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        before = measure()
    with torch.enable_grad():
        grads = torch.autograd.grad(step(), params, allow_unused=True)
    try:
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(lr * g)
            after = measure()
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
    return after - before
