"""An error in the ResRL work of one data-parallel rank must not hang the others.

Two processes (gloo, CPU) each hold an FSDP2-sharded tiny Qwen2 — every forward all-gathers parameters, so a
rank that left the micro-batch loop early would leave its peer blocked in the next all-gather. Each rank runs
the package's wrapped ``infer_batch`` / ``prepare_model_outputs`` over its own batch in micro-batches, as the
FSDP engine does; an error is forced on one rank at each place where the data can make ResRL raise (setting up
the pass, adding a sample's states, computing a group, the final flush). Both ranks must raise, quickly, the
failing one its own error and the other an error naming the failing rank, and the next pass must work.

The same two processes then form one Ulysses group over the same batch (each rank holds half of every packed
micro-batch, veRL's own ``_gather_and_unpad_packed`` gathers it): the rank that returns the outputs gets the
residuals of the whole sequences, the other one computes none, and an error on the computing rank still lets
the other finish its gathers.
"""

import os
import time
import types

import pytest
import torch
from harness import free_port

PASS_SECONDS = 30  # a pass here takes ~1 s; a rank blocked in a collective waits for the 90 s gloo timeout
# (layout, StreamingGroupResiduals method that raises, rank it raises on); "sp": both ranks form one Ulysses
# group on the same batch, rank 0 returns the outputs
SCENARIOS = [("dp", "add", 1), ("dp", "flush", 0), ("dp", "finish", 1), ("dp", "__init__", 0), ("dp", None, None),
             ("sp_reference", None, None), ("sp", None, None), ("sp", "add", 0), ("dp", None, None)]


class Forced(ValueError):
    pass


def _rank_batch(rank, config):
    from verl.utils import tensordict_utils as tu

    gen = torch.Generator().manual_seed(rank)
    seqs, masks, groups = [], [], []
    for g in range(2):
        prompt = torch.randint(1, 64, (5,), generator=gen)
        for _ in range(4):
            response = torch.randint(1, 64, (int(torch.randint(4, 12, (1,), generator=gen)),), generator=gen)
            seqs.append(torch.cat([prompt, response]))
            masks.append(torch.ones_like(response))
            groups.append(g)
    return tu.get_tensordict({
        "input_ids": torch.nested.as_nested_tensor(seqs, layout=torch.jagged),
        "response_mask": torch.nested.as_nested_tensor(masks, layout=torch.jagged),
        "resrl_group": torch.tensor(groups), "resrl_positive": torch.tensor([i % 4 < 2 for i in range(8)]).long(),
    }, non_tensor_dict={"resrl": config.to_dict(), "use_dynamic_bsz": False, "micro_batch_size_per_gpu": 2,
                        "use_remove_padding": True})


def _engine(module, ulysses: bool, returns_outputs: bool):
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    engine = types.SimpleNamespace(module=module, use_ulysses_sp=ulysses,
                                   is_mp_src_rank_with_outputs=lambda: returns_outputs)
    engine._gather_and_unpad_packed = types.MethodType(FSDPEngineWithLMHead._gather_and_unpad_packed, engine)
    return engine


def _engine_pass(prepare_model_outputs):
    """The FSDP engine's forward-only loop: micro-batches, packed forward, prepare_model_outputs each."""
    from verl.workers.engine.utils import prepare_micro_batches

    def infer_batch(worker, data):
        for micro_batch in prepare_micro_batches(data)[0]:
            ids = micro_batch["input_ids"]
            positions = torch.cat([torch.arange(n) for n in ids.offsets().diff().tolist()]).unsqueeze(0)
            with torch.no_grad():
                output = worker.engine.module(input_ids=ids.values().unsqueeze(0), position_ids=positions,
                                              use_cache=False)
            prepare_model_outputs(worker.engine, output, {"pad_size": 0}, micro_batch, None)
        return {"log_probs": torch.zeros(len(data))}

    return infer_batch


class StatesBySlice(torch.nn.Module):
    """Stands for a model under Ulysses: its ``layers[0]`` outputs this rank's slice of the packed states."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()])
        self.norm = torch.nn.Identity()

    def forward(self, states):
        for layer in self.layers:
            states = layer(states)
        return self.norm(states)


def _ulysses_pass(prepare_model_outputs, sp_rank: int | None):
    """Packed states of each micro-batch, deterministic in the token ids; with ``sp_rank`` padded to an even
    length and sliced in two along the sequence as Ulysses does, gathered back by veRL's engine method."""
    from verl.workers.engine.utils import prepare_micro_batches

    table = torch.randn(64, 24, generator=torch.Generator().manual_seed(0))

    def infer_batch(worker, data):
        for micro_batch in prepare_micro_batches(data)[0]:
            ids = micro_batch["input_ids"].values()
            states = (table[ids] + 0.01 * torch.arange(len(ids)).unsqueeze(1)).unsqueeze(0)  # (1, nnz, H)
            pad = 0
            if sp_rank is not None:
                pad = len(ids) % 2
                states = torch.nn.functional.pad(states, (0, 0, 0, pad)).chunk(2, dim=1)[sp_rank]
            worker.engine.module(states)
            prepare_model_outputs(worker.engine, None, {"pad_size": pad}, micro_batch, None)
        return {"log_probs": torch.zeros(len(data))}

    return infer_batch


def _rank_main(rank, port, results):
    os.environ.update(VERL_PLATFORM="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import datetime

    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from tiny_models import tiny_qwen2
    from verl_resrl import ResRLConfig
    from verl_resrl.core.streaming import StreamingGroupResiduals
    from verl_resrl.integration import worker as resrl_worker

    dist.init_process_group("gloo", rank=rank, world_size=2, timeout=datetime.timedelta(seconds=90))
    torch.set_num_threads(1)
    model = tiny_qwen2(hidden=32, layers=2)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)

    fail = {"at": None}
    originals = {name: getattr(StreamingGroupResiduals, name) for name in ("__init__", "add", "flush", "finish")}

    def forced(name):
        def method(self, *args, **kwargs):
            calls = fail.setdefault(name, 0) + 1
            fail[name] = calls
            if fail["at"] == name and (name != "add" or calls == 3):  # "add": in the second micro-batch
                raise Forced(f"forced error in StreamingGroupResiduals.{name} on rank {rank}")
            return originals[name](self, *args, **kwargs)
        return method

    for name in originals:
        setattr(StreamingGroupResiduals, name, forced(name))
    from verl.utils.ulysses import set_ulysses_sequence_parallel_group

    set_ulysses_sequence_parallel_group(dist.new_group([0, 1]))
    prepare = resrl_worker._wrap_prepare_model_outputs(lambda self, output, output_args, micro_batch, f: {})
    layouts = {
        "dp": (_engine(model, False, True), _engine_pass(prepare), rank),
        "sp_reference": (_engine(StatesBySlice(), False, True), _ulysses_pass(prepare, None), 0),
        "sp": (_engine(StatesBySlice(), True, rank == 0), _ulysses_pass(prepare, rank), 0),
    }
    config = ResRLConfig(rank=4)
    for step, (layout, at, failing) in enumerate(SCENARIOS):
        engine, engine_pass, data_seed = layouts[layout]
        infer_batch = resrl_worker._wrap_infer_batch(engine_pass)
        fail.clear()
        fail["at"] = at if failing == rank else None
        start = time.perf_counter()
        try:
            output = infer_batch(types.SimpleNamespace(engine=engine), _rank_batch(data_seed, config))
            outcome = ("ok", None if output is None else output["resrl_residual"].values().tolist())
        except Exception as exc:  # what the Ray worker would send back to the driver
            outcome = (type(exc).__name__, str(exc))
        calls = {name: fail.get(name, 0) for name in ("add", "flush", "finish")}
        results.put((rank, step, outcome, calls, time.perf_counter() - start))
    dist.destroy_process_group()


def test_an_error_on_one_rank_raises_on_both_without_hanging():
    mp = torch.multiprocessing.get_context("spawn")
    port = free_port()
    results = mp.Queue()
    procs = [mp.Process(target=_rank_main, args=(rank, port, results), daemon=True) for rank in (0, 1)]
    for p in procs:
        p.start()
    got = {}
    try:
        deadline = time.monotonic() + 240 + PASS_SECONDS * len(SCENARIOS)
        while len(got) < 2 * len(SCENARIOS):
            rank, step, outcome, calls, seconds = results.get(timeout=max(1.0, deadline - time.monotonic()))
            got[rank, step] = outcome, calls, seconds
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    for step, (layout, at, failing) in enumerate(SCENARIOS):
        for rank in (0, 1):
            (kind, value), calls, seconds = got[rank, step]
            assert seconds < PASS_SECONDS, (step, rank, seconds, value)
            if failing is None:
                assert kind == "ok", (step, rank, value)
            elif rank == failing:
                assert kind == "Forced" and f"StreamingGroupResiduals.{at} on rank {rank}" in value, value
            else:
                assert kind == "RuntimeError" and f"ResRL failed on rank(s) [{failing}]" in value, value
    reference = torch.tensor(got[0, SCENARIOS.index(("sp_reference", None, None))][0][1])
    assert reference.abs().sum() > 0
    (_, source), _, _ = got[0, SCENARIOS.index(("sp", None, None))]
    (_, follower), follower_calls, _ = got[1, SCENARIOS.index(("sp", None, None))]
    torch.testing.assert_close(torch.tensor(source), reference)  # the gathered states are the whole sequence's
    assert follower is None and follower_calls == {"add": 0, "flush": 0, "finish": 0}  # no residual math


if __name__ == "__main__":
    pytest.main([__file__, "-q"])
