import pytest
import torch

from allocations import peak_allocated_bytes
from cuda_emulation import refuse_half_precision_linalg
from synthetic import make_batch
from verl_resrl import ResRLConfig, compute_residuals
from verl_resrl.core import residual as residual_module
from verl_resrl.core import streaming as streaming_module
from verl_resrl.core.streaming import StreamingGroupResiduals


def batch(groups=4, per_group=4, length=80, width=96, dtype=torch.float32, seed=0, min_len=None):
    gen = torch.Generator().manual_seed(seed)
    hidden, mask, gids, pos, _ = make_batch([per_group] * groups, length=length, width=width, generator=gen,
                                            min_len=min_len or length // 2, dtype=dtype, interleave=True)
    return hidden, mask, gids, pos


def stream_of(hidden, mask, gids, pos, cfg):
    lengths = mask.sum(dim=1).long()
    stream = StreamingGroupResiduals(gids, pos, lengths, cfg)
    return stream, [hidden[i, : int(n)].clone() for i, n in enumerate(lengths)]


def run_in_micro_batches(stream, states, order, micro):
    for lo in range(0, len(order), micro):
        for i in order[lo : lo + micro]:
            stream.add(i, states[i])
        stream.flush()
    return stream.finish()


def assert_matches_batch(hidden, mask, gids, pos, cfg, residual, has):
    full = compute_residuals(hidden, mask, gids, pos, cfg)
    for i, n in enumerate(mask.sum(dim=1).long().tolist()):
        assert torch.equal(has[i], full.has_residual[i, :n])
        torch.testing.assert_close(residual[i], full.residual[i, :n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("micro", [1, 3, 16])
def test_micro_batched_in_any_order_equals_the_whole_batch(micro):
    hidden, mask, gids, pos = batch()
    cfg = ResRLConfig(rank=16)  # > 64 positive tokens per group, H = 96: the range finder runs
    stream, states = stream_of(hidden, mask, gids, pos, cfg)
    order = torch.randperm(len(gids), generator=torch.Generator().manual_seed(micro)).tolist()
    residual, has = run_in_micro_batches(stream, states, order, micro)
    assert_matches_batch(hidden, mask, gids, pos, cfg, residual, has)
    assert stream.stats.computed_groups == 4 and not stream.states


def test_final_flush_runs_in_chunks_of_groups(monkeypatch):
    hidden, mask, gids, pos = batch(groups=8)
    cfg = ResRLConfig(rank=16)
    calls = []

    def counted(hidden, *args, **kwargs):
        calls.append(len(set(args[1])))
        return compute_residuals(hidden, *args, **kwargs)

    monkeypatch.setattr(streaming_module, "compute_residuals", counted)
    monkeypatch.setattr(streaming_module, "_FLUSH_ELEMENTS", 2 * 4 * 80 * 96)  # two groups' padded states
    stream, states = stream_of(hidden, mask, gids, pos, cfg)
    for i in range(len(gids)):
        stream.add(i, states[i])
    residual, has = stream.finish()
    assert calls == [2, 2, 2, 2]
    assert_matches_batch(hidden, mask, gids, pos, cfg, residual, has)


def test_flush_holds_little_more_than_the_states_it_is_given(monkeypatch):
    """The padded buffer is built per chunk of groups from states dropped as they are copied: the peak is the
    held states plus one chunk, not a second copy of them (with dynamic batch size a rank can hold its whole
    shard's states at the final flush)."""
    hidden, mask, gids, pos = batch(groups=8, length=128, width=256, dtype=torch.bfloat16, min_len=120)
    monkeypatch.setattr(streaming_module, "_FLUSH_ELEMENTS", 4 * 128 * 256)  # one group
    monkeypatch.setattr(residual_module, "_CHUNK_ELEMENTS", 2 * 128 * 256)  # the residual math's own buffers
    monkeypatch.setattr(residual_module, "_BLOCK_ELEMENTS", 64 * 256)
    cfg = ResRLConfig(rank=16)
    lengths = mask.sum(dim=1).long()

    def capture_then_finish():  # states are allocated inside the measured window, as the forward pass does
        stream = StreamingGroupResiduals(gids, pos, lengths, cfg)
        for i, n in enumerate(lengths.tolist()):
            stream.add(i, hidden[i, :n].clone())
        return stream.finish()

    peak, (residual, has) = peak_allocated_bytes(capture_then_finish)
    held = int(lengths.sum()) * 256 * hidden.element_size()
    outputs = sum(r.nbytes + h.nbytes for r, h in zip(residual, has))
    # about 1.25 here; about 3 when all groups were padded together
    assert peak < outputs + 1.5 * held, (peak / held, outputs / held)
    assert_matches_batch(hidden, mask, gids, pos, cfg, residual, has)


@pytest.mark.parametrize("subspace", ["exact", "randomized"])
def test_flush_under_bf16_autocast_is_the_fp32_result(subspace, monkeypatch):
    """The actor's forward pass (where flush() runs) is under bf16 autocast on GPU; CUDA has no bf16 QR/SVD."""
    hidden, mask, gids, pos = batch(dtype=torch.bfloat16)
    cfg = ResRLConfig(rank=16, subspace=subspace)
    order = list(range(len(gids)))
    expected = run_in_micro_batches(*stream_of(hidden, mask, gids, pos, cfg), order, 5)
    refuse_half_precision_linalg(monkeypatch)
    stream, states = stream_of(hidden, mask, gids, pos, cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = run_in_micro_batches(stream, states, order, 5)
    assert stream.stats.computed_groups == 4
    for a, b in zip(got[0] + got[1], expected[0] + expected[1]):
        assert torch.equal(a, b)


def test_bad_input_is_reported():
    cfg = ResRLConfig()
    stream = StreamingGroupResiduals(["a", "a"], torch.tensor([1, 0]), torch.tensor([3, 2]), cfg)
    with pytest.raises(ValueError, match="captured 2 response states for 3"):
        stream.add(0, torch.zeros(2, 8))
    stream.add(0, torch.zeros(3, 8))
    with pytest.raises(ValueError, match="captured twice"):
        stream.add(0, torch.zeros(3, 8))


def test_samples_never_captured_get_no_residual():
    hidden, mask, gids, pos = batch(groups=2)
    cfg = ResRLConfig(rank=16)
    stream, states = stream_of(hidden, mask, gids, pos, cfg)
    for i in range(len(gids) - 1):  # the last sample never arrives: its group is computed by the final flush
        stream.add(i, states[i])
    stream.flush()
    residual, has = stream.finish()
    assert not has[-1].any() and residual[-1].shape == (int(mask[-1].sum()),)
    assert stream.stats.groups == 2
