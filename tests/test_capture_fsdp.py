"""The capture hook on a model wrapped as veRL wraps it: FSDP1 (``strategy=fsdp``) and FSDP2 (``fsdp2``).

FSDP1 wraps each decoder layer (veRL's ``get_fsdp_wrap_policy``) in a ``FullyShardedDataParallel`` module, so
the layers sit under ``_fsdp_wrapped_module.`` prefixes and the hook lands on the wrapper; FSDP2 keeps module
names. One gloo rank on CPU, in a child process (the test process keeps no process group).
"""

import os

import torch
from harness import free_port

LAYERS = (-1, -2, 1)


def _capture_main(port, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    from tiny_models import tiny_qwen2
    from verl.utils.fsdp_utils import get_fsdp_wrap_policy
    from verl_resrl.core.capture import HiddenStateCapture

    dist.init_process_group("gloo", rank=0, world_size=1)
    torch.set_num_threads(1)
    reference = tiny_qwen2(hidden=32, layers=3)
    ids = torch.randint(1, 64, (2, 11), generator=torch.Generator().manual_seed(0))
    packed = torch.randint(1, 64, (1, 13), generator=torch.Generator().manual_seed(1))
    positions = torch.cat([torch.arange(6), torch.arange(7)]).unsqueeze(0)  # two sequences, packed
    with torch.no_grad():
        want_padded = reference(input_ids=ids, output_hidden_states=True).hidden_states
        want_packed = reference(input_ids=packed, position_ids=positions, output_hidden_states=True).hidden_states

    model1 = tiny_qwen2(hidden=32, layers=3)
    fsdp1 = FullyShardedDataParallel(model1, auto_wrap_policy=get_fsdp_wrap_policy(model1, config=None),
                                     device_id=torch.device("cpu"))
    fsdp2 = tiny_qwen2(hidden=32, layers=3)
    for layer in fsdp2.model.layers:
        fully_shard(layer)
    fully_shard(fsdp2)
    for strategy, model in (("fsdp", fsdp1), ("fsdp2", fsdp2)):
        for hidden_layer in LAYERS:
            capture = HiddenStateCapture(model, hidden_layer)
            with torch.no_grad(), capture.armed():
                model(input_ids=ids)
                model(input_ids=packed, position_ids=positions)
            got = capture.pop()
            errors = [float((got[0] - want_padded[hidden_layer]).abs().max()),
                      float((got[1] - want_packed[hidden_layer]).abs().max())]
            results.put((strategy, hidden_layer, capture.description, type(capture.module).__name__, len(got), errors))
    results.put(None)
    dist.destroy_process_group()


def test_capture_on_fsdp1_and_fsdp2_wrapped_models():
    mp = torch.multiprocessing.get_context("spawn")
    port = free_port()
    results = mp.Queue()
    proc = mp.Process(target=_capture_main, args=(port, results), daemon=True)
    proc.start()
    got = {}
    try:
        while (item := results.get(timeout=300)) is not None:
            strategy, hidden_layer, *rest = item
            got[strategy, hidden_layer] = rest
        proc.join(timeout=60)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
    for strategy in ("fsdp", "fsdp2"):
        for hidden_layer in LAYERS:
            description, module_type, calls, errors = got[strategy, hidden_layer]
            assert calls == 2 and max(errors) < 1e-5, (strategy, hidden_layer, errors)
            if hidden_layer == -1:
                assert description.startswith("final norm after")
            elif strategy == "fsdp":
                assert description.startswith("_fsdp_wrapped_module.model.layers[")
                assert module_type == "FullyShardedDataParallel"  # the hook sits on the FSDP1 unit
            else:
                assert description.startswith("model.layers[")
    assert got["fsdp", -2][0].endswith("[1]") and got["fsdp", 1][0].endswith("[0]")
