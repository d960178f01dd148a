"""Multi-turn responses: tool output inside a response (``response_mask`` = 0 between model tokens).

ResRL must treat only the model's own tokens as tokens: the positive subspace is built from the positive
responses' model tokens, tool-output tokens get no residual and no weight (advantage 0), their hidden states
change nothing, and coverage stays 1.0. Checked against a direct computation with the core's
``compute_residuals`` on the model tokens alone (each response compacted to its mask == 1 tokens), for the
core call, the per-sample ``masks`` of ``StreamingGroupResiduals`` (what the actor worker uses) and the
advantages; and the hole layout itself is the one veRL's Continuous Token builder gives a tool turn.
"""

from __future__ import annotations

import pytest
import torch
from synthetic import decaying_states

from verl_resrl import ResRLConfig, compute_residuals, resrl_advantages
from verl_resrl.core.streaming import StreamingGroupResiduals
from verl_resrl.core.weights import negative_token_weights

CONFIG = ResRLConfig(rank=8, subspace="exact", min_pos_tokens=4)


def multiturn_batch(group_sizes=(4, 4, 3), length=40, width=32, seed=0):
    """Responses ``[model][tool output][model][padding]`` (some single-turn), group ids, positives, rewards."""
    g = torch.Generator().manual_seed(seed)
    group_ids, positive = [], []
    for k, size in enumerate(group_sizes):
        for i in range(size):
            group_ids.append(f"uid-{k}")
            positive.append(i < (size + 1) // 2)
    batch = len(group_ids)
    mask = torch.zeros(batch, length)
    for row in range(batch):
        first = int(torch.randint(3, 12, (), generator=g))
        if row % 3 == 2:  # no tool call: one turn
            mask[row, :first] = 1
            continue
        tool = int(torch.randint(4, 10, (), generator=g))
        second = int(torch.randint(2, 10, (), generator=g))
        mask[row, :first] = 1
        mask[row, first + tool : first + tool + second] = 1
    hidden = decaying_states((batch, length, width), g)
    is_positive = torch.tensor(positive)
    last = torch.tensor([int(m.nonzero().max()) for m in mask])
    rewards = torch.zeros(batch, length)
    rewards[torch.arange(batch), last] = is_positive.float()
    return hidden, mask, group_ids, is_positive, rewards


def compact(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's mask == 1 entries moved to the left: ``(B, T, ...)`` values and their ``(B, T)`` mask."""
    out = torch.zeros_like(values)
    out_mask = torch.zeros_like(mask)
    for row in range(mask.shape[0]):
        keep = mask[row].bool()
        n = int(keep.sum())
        out[row, :n] = values[row][keep]
        out_mask[row, :n] = 1
    return out, out_mask


def scatter_back(compacted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(mask.shape, dtype=compacted.dtype)
    for row in range(mask.shape[0]):
        keep = mask[row].bool()
        out[row][keep] = compacted[row, : int(keep.sum())]
    return out


def test_residuals_with_holes_equal_residuals_of_the_model_tokens_alone():
    hidden, mask, ids, pos, _ = multiturn_batch()
    assert bool(((mask[:, :-1] == 0) & (mask[:, 1:] == 1)).any()), "the batch must have holes inside responses"
    holed = compute_residuals(hidden, mask, ids, pos, CONFIG)

    direct_hidden, direct_mask = compact(hidden, mask)
    direct = compute_residuals(direct_hidden, direct_mask, ids, pos, CONFIG)

    assert not bool((holed.has_residual & ~mask.bool()).any()), "a tool-output token got a residual"
    assert torch.equal(holed.has_residual, scatter_back(direct.has_residual, mask))
    torch.testing.assert_close(holed.residual, scatter_back(direct.residual, mask), rtol=1e-5, atol=1e-6)
    assert holed.stats.coverage == 1.0
    assert holed.stats.computed_groups == holed.stats.mixed_groups == 3
    assert holed.stats.group_rank == direct.stats.group_rank


def test_tool_output_states_change_nothing():
    hidden, mask, ids, pos, _ = multiturn_batch(seed=1)
    base = compute_residuals(hidden, mask, ids, pos, CONFIG)
    tool = ~mask.bool()
    wild = hidden.clone()
    wild[tool] = torch.randn(int(tool.sum()), hidden.shape[-1]) * 1e3 + 50  # far from every subspace
    changed = compute_residuals(wild, mask, ids, pos, CONFIG)
    assert torch.equal(changed.has_residual, base.has_residual)
    torch.testing.assert_close(changed.residual, base.residual, rtol=0, atol=0)
    wild[tool] = float("nan")  # not even non-finite tool-output states count (no group is skipped)
    nan = compute_residuals(wild, mask, ids, pos, CONFIG)
    assert nan.stats.skipped_nonfinite == 0 and nan.stats.coverage == 1.0
    torch.testing.assert_close(nan.residual, base.residual, rtol=0, atol=0)


def test_streaming_with_per_sample_masks_matches_direct_computation():
    hidden, mask, ids, pos, _ = multiturn_batch(seed=2)
    lengths = torch.tensor([int(m.nonzero().max()) + 1 for m in mask])  # response length without padding
    stream = StreamingGroupResiduals(ids, pos, lengths, CONFIG, masks=[m[:n] for m, n in zip(mask, lengths)])
    for i in reversed(range(len(ids))):  # any order, as dynamic batch size visits samples
        stream.add(i, hidden[i, : lengths[i]])
        stream.flush()
    residual, has = stream.finish()

    direct_hidden, direct_mask = compact(hidden, mask)
    direct = compute_residuals(direct_hidden, direct_mask, ids, pos, CONFIG)
    want_res, want_has = scatter_back(direct.residual, mask), scatter_back(direct.has_residual, mask)
    for i, n in enumerate(lengths.tolist()):
        assert torch.equal(has[i], want_has[i, :n]), i
        torch.testing.assert_close(residual[i], want_res[i, :n], rtol=1e-5, atol=1e-6)
    assert stream.stats.coverage == 1.0


@pytest.mark.parametrize("norm_adv_by_std", [True, False])
def test_advantages_zero_on_tool_output_and_equal_to_model_token_computation(norm_adv_by_std):
    hidden, mask, ids, pos, rewards = multiturn_batch(seed=3)
    res = compute_residuals(hidden, mask, ids, pos, CONFIG)
    adv, _ = resrl_advantages(rewards, mask, ids, res.residual, res.has_residual, CONFIG, norm_adv_by_std)
    assert torch.isfinite(adv).all()
    assert bool((adv[~mask.bool()] == 0).all()), "a tool-output token got an advantage"

    direct_hidden, direct_mask = compact(hidden, mask)
    direct_rewards, _ = compact(rewards, mask)
    direct = compute_residuals(direct_hidden, direct_mask, ids, pos, CONFIG)
    direct_adv, _ = resrl_advantages(direct_rewards, direct_mask, ids, direct.residual, direct.has_residual, CONFIG,
                                     norm_adv_by_std)
    torch.testing.assert_close(adv, scatter_back(direct_adv, mask), rtol=1e-5, atol=1e-6)

    weights = negative_token_weights(res.residual, res.has_residual & ~pos.unsqueeze(1), mask, ids, CONFIG)
    negative_model_tokens = mask.bool() & ~pos.unsqueeze(1)
    assert bool((weights[negative_model_tokens] < 1).any())  # ResRL did weight the negatives' model tokens
    assert bool((weights[~mask.bool()] == 1).all())  # ... and left tool output alone (its advantage is 0 anyway)


def test_tool_turn_hole_layout_is_veRLs():
    """The warm-up episodes of the tool task are built with veRL's Continuous Token builder: the mask is 1 on
    the tool call and the answer, 0 on the inserted turn boundary and the tool turn."""
    from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

    from verl_resrl.demo import task as demo_task
    from verl_resrl.demo.tool_task import ToolTaskConfig, build_tokenizer, encode_episode, tool_call_text

    problems = demo_task.generate(32, seed=5)
    tokenizer = build_tokenizer(problems, ToolTaskConfig())
    builder = create_continuous_token_builder(tokenizer, hf_model_type="qwen2")
    problem = problems[0]
    prompt = builder.build_initial_tokens([{"role": "user", "content": problem.prompt}], tools=[{
        "type": "function", "function": {"name": "calculator"}}])
    ids, mask = encode_episode(builder, tokenizer, problem, use_tool=True)
    response, response_mask = ids[len(prompt):], mask[len(prompt):]
    assert mask[: len(prompt)] == [0] * len(prompt)
    model = tokenizer.decode([t for t, m in zip(response, response_mask) if m])
    tool = tokenizer.decode([t for t, m in zip(response, response_mask) if not m])
    assert model == f"{tool_call_text(problem.expression)}<|im_end|>Answer: {problem.answer}<|im_end|>"
    assert tool == (f"\n<|im_start|>user\n<tool_response>\n{problem.answer}\n</tool_response><|im_end|>\n"
                    "<|im_start|>assistant\n")
    holes = [i for i in range(1, len(response_mask) - 1) if response_mask[i] == 0]
    assert holes and response_mask[-1] == 1  # model tokens on both sides of the tool output
