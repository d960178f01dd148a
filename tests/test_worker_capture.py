"""The actor-side path with veRL's own micro-batching: captured states, response alignment, invariances.

A tiny Qwen2 model plays the actor; veRL's ``prepare_micro_batches`` splits a rank's batch (fixed size or
dynamic, which reorders samples); each micro-batch goes through the model packed (remove-padding) or padded,
the hook's output is cut into response states by :func:`verl_resrl.integration.worker.response_states` and
streamed into :class:`StreamingGroupResiduals`, exactly as in the FSDP engine.
"""

import dataclasses
import types

import pytest
import torch

from tiny_models import tiny_qwen2
from verl_resrl import ResRLConfig, compute_residuals
from verl_resrl.core.capture import HiddenStateCapture
from verl_resrl.core.partition import group_balanced_partition
from verl_resrl.core.streaming import StreamingGroupResiduals


def _engine(use_ulysses_sp=False):
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    fake = types.SimpleNamespace(use_ulysses_sp=use_ulysses_sp)
    fake._gather_and_unpad_packed = types.MethodType(FSDPEngineWithLMHead._gather_and_unpad_packed, fake)
    return fake


def make_rollouts(groups=4, n=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    prompts, responses, uids = [], [], []
    for g in range(groups):
        prompt = torch.randint(1, 64, (int(torch.randint(3, 9, (1,), generator=gen)),), generator=gen)
        for _ in range(n):
            prompts.append(prompt)
            responses.append(torch.randint(1, 64, (int(torch.randint(1, 14, (1,), generator=gen)),), generator=gen))
            uids.append(f"uid-{g}")
    positive = torch.tensor([i % n < n // 2 for i in range(len(uids))])
    return prompts, responses, uids, positive


def positive_tokens(responses, uids, positive) -> dict:
    """Positive tokens per group: the randomized range finder runs where this exceeds rank + oversample."""
    out = {}
    for r, u, p in zip(responses, uids, positive.tolist()):
        out[u] = out.get(u, 0) + (len(r) if p else 0)
    return out


def rank_batch(prompts, responses, idx, micro, dynamic):
    from verl.utils import tensordict_utils as tu

    seqs = [torch.cat([prompts[i], responses[i]]) for i in idx]
    data = tu.get_tensordict({
        "input_ids": torch.nested.as_nested_tensor(seqs, layout=torch.jagged),
        "response_mask": torch.nested.as_nested_tensor([torch.ones_like(responses[i]) for i in idx],
                                                       layout=torch.jagged),
        "resrl_sample_index": torch.arange(len(idx)),
    }, non_tensor_dict={"use_dynamic_bsz": dynamic, "micro_batch_size_per_gpu": micro, "max_token_len_per_gpu": 40,
                        "use_remove_padding": True})
    return data


def forward_micro_batch(model, capture, seqs, remove_padding):
    """The model's hooked layer output for one micro-batch: packed (1, nnz, H) or right-padded (B, S, H).

    The FSDP engine's packed forward isolates sequences (varlen attention); plain transformers does not, so
    the packed output is assembled from per-sequence forwards, each through the armed hook.
    """
    with torch.no_grad(), capture.armed():
        if remove_padding:
            for s in seqs:
                model(input_ids=s.unsqueeze(0))
        else:
            width = max(len(s) for s in seqs)
            ids = torch.stack([torch.nn.functional.pad(s, (0, width - len(s))) for s in seqs])
            model(input_ids=ids, attention_mask=torch.stack([torch.arange(width) < len(s) for s in seqs]).long())
    outputs = capture.pop()
    return torch.cat(outputs, dim=1) if remove_padding else outputs[0]


def run_rank(model, prompts, responses, uids, positive, idx, config, micro=2, dynamic=False, remove_padding=True,
             legacy=False):
    """One rank's residuals, the stream set up from the request as the worker does (lengths, masks)."""
    from verl.workers.engine.utils import prepare_micro_batches

    from verl_resrl.integration.worker import _response_lengths, _response_masks, response_states

    data = (legacy_batch if legacy else rank_batch)(prompts, responses, idx, micro, dynamic)
    stream = StreamingGroupResiduals([uids[i] for i in idx], positive[idx], _response_lengths(data), config,
                                     masks=_response_masks(data))
    capture = HiddenStateCapture(model, config.hidden_layer)
    batches, order = prepare_micro_batches(data)
    if dynamic:
        assert order is not None
    for mb in batches:
        hidden = forward_micro_batch(model, capture, list(mb["input_ids"].unbind()), remove_padding)
        from verl.utils import tensordict_utils as tu

        tu.assign_non_tensor(mb, use_remove_padding=remove_padding)
        for i, states in zip(mb["resrl_sample_index"].tolist(), response_states(_engine(), hidden, {"pad_size": 0}, mb)):
            stream.add(i, states)
        stream.flush()
    residual, has = stream.finish()
    return {idx[j]: (residual[j], has[j]) for j in range(len(idx))}


@pytest.fixture(scope="module")
def model():
    return tiny_qwen2(hidden=48, layers=3)


def test_captured_response_states_are_the_models_hidden_states(model):
    """Packed or padded, the state for response token t is hidden_states[-2] at the position predicting it."""
    from verl.workers.engine.utils import prepare_micro_batches

    from verl_resrl.integration.worker import response_states

    prompts, responses, uids, _ = make_rollouts(groups=2, n=3)
    idx = list(range(len(uids)))
    for remove_padding in (True, False):
        data = rank_batch(prompts, responses, idx, micro=3, dynamic=False)
        capture = HiddenStateCapture(model, -2)
        for mb in prepare_micro_batches(data)[0]:
            hidden = forward_micro_batch(model, capture, list(mb["input_ids"].unbind()), remove_padding)
            from verl.utils import tensordict_utils as tu

            tu.assign_non_tensor(mb, use_remove_padding=remove_padding)
            got = response_states(_engine(), hidden, {"pad_size": 0}, mb)
            for i, states in zip(mb["resrl_sample_index"].tolist(), got):
                seq = torch.cat([prompts[i], responses[i]]).unsqueeze(0)
                with torch.no_grad():
                    want = model(input_ids=seq, output_hidden_states=True).hidden_states[-2][0]
                n = len(responses[i])
                torch.testing.assert_close(states, want[-n - 1 : -1], atol=1e-5, rtol=1e-5)


def test_packed_padding_tail_is_removed(model):
    from verl_resrl.integration.worker import response_states
    from verl.utils import tensordict_utils as tu

    prompts, responses, _, _ = make_rollouts(groups=1, n=2)
    data = rank_batch(prompts, responses, [0, 1], micro=2, dynamic=False)
    tu.assign_non_tensor(data, use_remove_padding=True)
    total = sum(len(p) + len(r) for p, r in zip(prompts, responses))
    hidden = torch.arange(total + 3, dtype=torch.float32).reshape(1, -1, 1).expand(1, -1, 2)
    states = response_states(_engine(), hidden, {"pad_size": 3}, data)
    end0 = len(prompts[0]) + len(responses[0])
    assert states[0][:, 0].tolist() == list(range(end0 - len(responses[0]) - 1, end0 - 1))
    assert states[1][-1, 0].item() == total - 2


def test_residuals_do_not_depend_on_micro_batching_dynamic_bsz_or_dp_split(model):
    prompts, responses, uids, positive = make_rollouts(groups=4, n=4)
    config = ResRLConfig(rank=4, oversample=4)
    assert max(positive_tokens(responses, uids, positive).values()) > 8  # the randomized range finder runs
    everything = list(range(len(uids)))
    reference = run_rank(model, prompts, responses, uids, positive, everything, config, micro=16)
    variants = [
        run_rank(model, prompts, responses, uids, positive, everything, config, micro=1),
        run_rank(model, prompts, responses, uids, positive, everything, config, micro=8),
        run_rank(model, prompts, responses, uids, positive, everything, config, dynamic=True),
        run_rank(model, prompts, responses, uids, positive, everything, config, micro=4, remove_padding=False),
    ]
    shards, split = group_balanced_partition(uids, [len(p) + len(r) for p, r in zip(prompts, responses)], 2)
    assert split == 0
    dp2 = {}
    for shard in shards:
        dp2.update(run_rank(model, prompts, responses, uids, positive, shard, config, micro=2))
    variants.append(dp2)
    computed = 0
    for variant in variants:
        for i in everything:
            assert torch.equal(variant[i][1], reference[i][1])
            torch.testing.assert_close(variant[i][0], reference[i][0], atol=1e-5, rtol=1e-5)
            computed += int(reference[i][1].any())
    assert computed > 0


def test_streaming_equals_one_batched_call(model):
    prompts, responses, uids, positive = make_rollouts(groups=3, n=4, seed=1)
    config = ResRLConfig(rank=4, oversample=4)
    assert max(positive_tokens(responses, uids, positive).values()) > 8  # the randomized range finder runs
    got = run_rank(model, prompts, responses, uids, positive, list(range(len(uids))), config, micro=3)
    width = max(len(r) for r in responses)
    hidden = torch.zeros(len(uids), width, 48)
    mask = torch.zeros(len(uids), width)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        with torch.no_grad():
            h = model(input_ids=torch.cat([p, r]).unsqueeze(0), output_hidden_states=True).hidden_states[-2][0]
        hidden[i, : len(r)] = h[-len(r) - 1 : -1]
        mask[i, : len(r)] = 1
    want = compute_residuals(hidden, mask, uids, positive, config)
    for i, r in enumerate(responses):
        torch.testing.assert_close(got[i][0], want.residual[i, : len(r)], atol=1e-5, rtol=1e-5)


def legacy_batch(prompts, responses, idx, micro, dynamic, tool_tokens=()):
    """A rank's batch as the legacy trainer sends it: left-padded prompts and right-padded responses (wider than
    the longest, as ``max_response_length``) through veRL's own ``left_right_2_no_padding``.

    ``tool_tokens``: ``(row, position)`` response tokens masked out of ``response_mask`` (multi-turn tool output).
    """
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    width_p, width_r = max(len(prompts[i]) for i in idx), max(len(responses[i]) for i in idx) + 3
    prompt_ids, response_ids = torch.zeros(len(idx), width_p, dtype=torch.long), torch.zeros(len(idx), width_r,
                                                                                              dtype=torch.long)
    attention = torch.zeros(len(idx), width_p + width_r, dtype=torch.long)
    for row, i in enumerate(idx):
        prompt_ids[row, width_p - len(prompts[i]):] = prompts[i]
        response_ids[row, : len(responses[i])] = responses[i]
        attention[row, width_p - len(prompts[i]) : width_p + len(responses[i])] = 1
    response_mask = attention[:, width_p:].clone()
    for row, position in tool_tokens:
        response_mask[row, position] = 0
    data = tu.get_tensordict({
        "prompts": prompt_ids, "responses": response_ids, "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
        "attention_mask": attention, "position_ids": (attention.cumsum(-1) - 1).clamp(min=0),
        "response_mask": response_mask, "resrl_sample_index": torch.arange(len(idx)),
    }, non_tensor_dict={"use_dynamic_bsz": dynamic, "micro_batch_size_per_gpu": micro, "max_token_len_per_gpu": 40,
                        "use_remove_padding": True})
    return left_right_2_no_padding(data)


def test_legacy_trainer_batches_with_responses_of_different_lengths(model):
    """Padded masks (legacy trainer): each sample's states are those veRL's no_padding_2_padding cuts for it."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.engine.utils import prepare_micro_batches
    from verl.workers.utils.padding import no_padding_2_padding

    from verl_resrl.integration.worker import _response_lengths, _response_masks, response_states

    prompts, responses, _, _ = make_rollouts(groups=3, n=3, seed=2)
    idx = list(range(len(prompts)))
    assert len({len(r) for r in responses}) > 3 and len({len(p) for p in prompts}) > 1
    tool_tokens = [(1, 0), (4, len(responses[4]) - 1)]
    full = legacy_batch(prompts, responses, idx, micro=4, dynamic=False, tool_tokens=tool_tokens)
    assert not full["response_mask"].is_nested and full["input_ids"].is_nested

    with torch.no_grad():  # per-sequence hidden_states[-2], packed as the engine's output, cut by veRL
        packed = torch.cat([model(input_ids=torch.cat([prompts[i], responses[i]]).unsqueeze(0),
                                  output_hidden_states=True).hidden_states[-2][0] for i in idx])
    want = no_padding_2_padding(packed, full)  # (B, max_response_length, H)
    lengths = [len(responses[i]) for i in idx]
    assert _response_lengths(full).tolist() == lengths
    masks = _response_masks(full)
    for row, n in enumerate(lengths):
        expected = torch.ones(n, dtype=torch.bool)
        for r, position in tool_tokens:
            if r == row:
                expected[position] = False
        assert torch.equal(masks[row], expected)

    for remove_padding, dynamic in ((True, False), (True, True), (False, False)):
        data = legacy_batch(prompts, responses, idx, micro=3, dynamic=dynamic)
        seen = []
        for mb in prepare_micro_batches(data)[0]:
            hidden = forward_micro_batch(model, HiddenStateCapture(model, -2), list(mb["input_ids"].unbind()),
                                         remove_padding)
            tu.assign_non_tensor(mb, use_remove_padding=remove_padding)
            for i, states in zip(mb["resrl_sample_index"].tolist(), response_states(_engine(), hidden,
                                                                                    {"pad_size": 0}, mb)):
                assert states.shape[0] == lengths[i]
                torch.testing.assert_close(states, want[i, : lengths[i]], atol=1e-5, rtol=1e-5)
                seen.append(i)
        assert sorted(seen) == idx


def test_legacy_and_nested_batches_give_the_same_residuals(model):
    prompts, responses, uids, positive = make_rollouts(groups=3, n=4, seed=3)
    config = ResRLConfig(rank=4)
    nested = run_rank(model, prompts, responses, uids, positive, list(range(len(uids))), config, micro=4)
    legacy = run_rank(model, prompts, responses, uids, positive, list(range(len(uids))), config, micro=4, legacy=True)
    assert any(h.any() for _, h in nested.values())
    for i in nested:
        assert torch.equal(legacy[i][1], nested[i][1])
        torch.testing.assert_close(legacy[i][0], nested[i][0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("legacy", [False, True])
def test_think_tokens_are_masked_out_of_the_stream(monkeypatch, legacy):
    """``mask_think_tokens``: the stream's per-sample masks drop each response's reasoning spans, found in the
    request's nested prompt + response ids (V1 and legacy requests alike); off, they are the response masks."""
    from verl_resrl.core.think import response_think_masks
    from verl_resrl.integration import worker

    prompts, responses, uids, positive = make_rollouts(groups=3, n=3, seed=4)
    open_id, close_id = 5, 6
    prompts = [torch.cat([p, torch.tensor([open_id])]) if i % 2 else p for i, p in enumerate(prompts)]
    responses = [torch.cat([r, torch.tensor([open_id, 9, close_id, 7])]) if i % 3 == 0 else r
                 for i, r in enumerate(responses)]
    idx = list(range(len(uids)))
    data = (legacy_batch if legacy else rank_batch)(prompts, responses, idx, micro=3, dynamic=False)
    data["resrl_group"] = torch.tensor([int(u.split("-")[1]) for u in uids])
    data["resrl_positive"] = positive.long()
    monkeypatch.setattr(worker, "_capture_for", lambda engine, layer: None)
    engine = types.SimpleNamespace(is_mp_src_rank_with_outputs=lambda: True)

    off = worker._open_session(engine, data, ResRLConfig(rank=4)).stream.masks
    assert all(torch.equal(m, t) for m, t in zip(off, worker._response_masks(data)))

    config = ResRLConfig(rank=4, mask_think_tokens=True, think_token_ids=(open_id, close_id))
    on = worker._open_session(engine, data, config).stream.masks
    think = response_think_masks([torch.cat([prompts[i], responses[i]]) for i in idx],
                                 [len(r) for r in responses], open_id, close_id)
    assert any(t.any() for t in think) and any(not t.all() for t in think)
    for m, t, full in zip(on, think, worker._response_masks(data)):
        assert torch.equal(m, full & ~t)
    with pytest.raises(RuntimeError, match="names no think_token_ids"):
        worker._open_session(engine, data, dataclasses.replace(config, think_token_ids=None))
