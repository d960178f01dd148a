"""Reasoning spans (``<think>`` ... ``</think>``) of token sequences, for ``mask_think_tokens``.

A span runs from an opening tag through the next closing tag, both tags included. Spans do not nest: an
opening tag inside an open span changes nothing, and a closing tag outside any span closes nothing (the tag
token itself still counts as a think token). A span still open at the end of the sequence runs to its end.
A span may also be open before the first token (the prompt opened it: the R1 chat template ends the prompt
with ``<think>\\n``), given by ``opened``; :func:`prompt_opens_think` finds it from the prompt's tokens.

Alignment: entry ``t`` of the mask describes token ``t`` itself (the response token whose log-prob and
advantage sit at ``t``), with no shift.
"""

from __future__ import annotations

from typing import Any

import torch

THINK_TAGS = ("<think>", "</think>")


def think_span_mask(
    token_ids: torch.Tensor,
    open_id: int,
    close_id: int,
    opened: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Which tokens lie in a reasoning span (tags included).

    Args:
        token_ids: ``(B, T)`` integer token ids (e.g. the responses, right-padded).
        open_id, close_id: the ids of ``<think>`` and ``</think>``.
        opened: optional ``(B,)`` bool, True where a span is already open before token 0 (opened by the prompt).
        mask: optional ``(B, T)``, the valid tokens; the result is False outside it (so an unclosed span ends
            with the last valid token instead of running into padding). Tags in masked-out positions still
            open and close spans: the mask only restricts the output.

    Returns:
        ``(B, T)`` bool.
    """
    if token_ids.dim() != 2:
        raise ValueError(f"token_ids must be (B, T), got shape {tuple(token_ids.shape)}")
    if open_id == close_id:
        raise ValueError(f"the opening and closing think tag ids must differ, both are {open_id}")
    batch, length = token_ids.shape
    position = torch.arange(length, device=token_ids.device).expand(batch, length)
    is_open, is_close = token_ids == open_id, token_ids == close_id
    # A span is open at token t when the latest opening tag at or before t comes after the latest closing tag
    # strictly before t. A span opened by the prompt is an opening tag at position -1; "no tag" is -2.
    none = torch.full_like(position, -2)
    last_open = torch.where(is_open, position, none).cummax(dim=1).values
    if opened is not None:
        opened = torch.as_tensor(opened, device=token_ids.device).bool().reshape(-1)
        if opened.numel() != batch:
            raise ValueError(f"opened has {opened.numel()} entries for a batch of {batch} sequences")
        last_open = torch.where(opened.unsqueeze(1), last_open.clamp_min(-1), last_open)
    close_at = torch.where(is_close, position, none).cummax(dim=1).values
    close_before = torch.cat([none[:, :1], close_at[:, :-1]], dim=1)
    inside = (last_open > close_before) | is_open | is_close
    if mask is not None:
        if tuple(mask.shape) != (batch, length):
            raise ValueError(f"mask {tuple(mask.shape)} does not match token_ids {(batch, length)}")
        inside &= mask.to(inside.device).bool()
    return inside


def prompt_opens_think(
    prompt_ids: torch.Tensor, open_id: int, close_id: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """``(B,)`` bool: the prompt ends inside a reasoning span (its last tag is an opening one).

    Args:
        prompt_ids: ``(B, P)`` integer token ids (left- or right-padded).
        mask: optional ``(B, P)``, the valid prompt tokens (tags outside it are ignored).
    """
    if prompt_ids.dim() != 2:
        raise ValueError(f"prompt_ids must be (B, P), got shape {tuple(prompt_ids.shape)}")
    valid = torch.ones_like(prompt_ids, dtype=torch.bool) if mask is None else mask.to(prompt_ids.device).bool()
    position = torch.arange(prompt_ids.shape[1], device=prompt_ids.device).expand_as(prompt_ids)
    none = torch.full_like(position, -1)
    last_open = torch.where(valid & (prompt_ids == open_id), position, none).max(dim=1).values
    last_close = torch.where(valid & (prompt_ids == close_id), position, none).max(dim=1).values
    return last_open > last_close


def response_think_masks(
    sequences: list[torch.Tensor], response_lengths: list[int], open_id: int, close_id: int
) -> list[torch.Tensor]:
    """Per-sample ``(n_i,)`` bool think masks of the responses, from prompt + response id sequences.

    Args:
        sequences: ``B`` 1-D tensors, each the prompt tokens followed by the response tokens, no padding.
        response_lengths: ``B`` response token counts ``n_i`` (the last ``n_i`` ids of each sequence).
    """
    out = []
    for i, (ids, n) in enumerate(zip(sequences, response_lengths)):
        ids = ids.reshape(-1)
        if not 0 <= n <= ids.numel():
            raise ValueError(f"sample {i}: response length {n} for a sequence of {ids.numel()} tokens")
        prompt, response = ids[: ids.numel() - n], ids[ids.numel() - n :]
        opened = prompt_opens_think(prompt.reshape(1, -1), open_id, close_id)
        out.append(think_span_mask(response.reshape(1, -1), open_id, close_id, opened=opened)[0])
    return out


def think_token_ids_of(tokenizer: Any, tags: tuple[str, str] = THINK_TAGS) -> tuple[int, int]:
    """The ids of the ``<think>`` and ``</think>`` tokens of a Hugging Face tokenizer.

    Raises:
        ValueError: the tokenizer has no single token for a tag (naming the tokenizer and the override).
    """
    vocab = tokenizer.get_vocab()
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    ids = []
    for tag in tags:
        if tag not in vocab:
            raise ValueError(
                f"algorithm.resrl.mask_think_tokens=True, but the tokenizer ({name}) has no {tag!r} token; "
                "name the tag ids with algorithm.resrl.think_token_ids=[OPEN_ID,CLOSE_ID], or turn the option off"
            )
        ids.append(int(vocab[tag]))
    encoded = [list(tokenizer.encode(tag, add_special_tokens=False)) for tag in tags]
    if encoded != [[i] for i in ids]:
        raise ValueError(
            f"algorithm.resrl.mask_think_tokens=True, but the tokenizer ({name}) does not encode {list(tags)} as "
            f"the single tokens {ids} (got {encoded}); name the ids with algorithm.resrl.think_token_ids"
        )
    return ids[0], ids[1]


def check_think_token_ids(ids: tuple[int, int], vocab_size: int) -> None:
    """Raise ``ValueError`` when explicit tag ids are outside a tokenizer's vocabulary."""
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad:
        raise ValueError(f"algorithm.resrl.think_token_ids {list(ids)}: {bad} outside the tokenizer's "
                         f"vocabulary of {vocab_size} tokens")
