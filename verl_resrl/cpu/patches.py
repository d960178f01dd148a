"""Patches of veRL 0.9.1 functions that assume an accelerator; each is declared in ``verl_internals``.

All of them are applied only under ``VERL_PLATFORM=cpu`` (see :func:`verl_resrl.cpu.register`).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import os

from verl_resrl import verl_internals
from verl_resrl._import_hook import when_imported
from verl_resrl.cpu.coalesced_puts import CoalescingTransferQueue, coalescing_enabled

logger = logging.getLogger(__name__)

POLL_INTERVAL_ENV = "VERL_RESRL_POLL_INTERVAL"
DEFAULT_CPU_POLL_INTERVAL = 0.05


def _collapse_backend(backend: str | None) -> str:
    """``cpu:gloo,cpu:gloo`` (veRL's ``f"cpu:gloo,{device}:{backend}"`` on the CPU platform) → ``gloo``."""
    if backend is None:
        return "gloo"
    parts = {p.strip() for p in backend.split(",") if p.strip()}
    if all(p in ("gloo", "cpu:gloo") for p in parts):
        return "gloo"
    return backend


def patch_process_group_backend() -> None:
    """Wrap ``verl.utils.distributed.initialize_global_process_group_ray`` so its backend string is valid.

    veRL builds ``"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``; with device ``cpu`` and backend
    ``gloo`` that names the CPU device twice and ``torch.distributed`` rejects it. Workers import the function
    by name after plugins load, so replacing the module attribute reaches them.
    """
    internal = verl_internals.INTERNALS["cpu.initialize_global_process_group_ray"]
    module = importlib.import_module(internal.module)
    original = getattr(module, internal.attr)
    if getattr(original, "_verl_resrl_cpu", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=_collapse_backend(backend))

    initialize_global_process_group_ray._verl_resrl_cpu = True
    setattr(module, internal.attr, initialize_global_process_group_ray)


def _unpinned_offload_policy(policy_cls):
    @functools.wraps(policy_cls)
    def make(*args, **kwargs):
        kwargs["pin_memory"] = False
        return policy_cls(*args, **kwargs)

    make._verl_resrl_cpu = True
    return make


def _patch_fsdp_engine(module) -> None:
    """``FSDPEngine._build_fsdp_module`` gives forward-only (ref) engines ``CPUOffloadPolicy(pin_memory=True)``;
    pinning needs an accelerator. The engine module's ``CPUOffloadPolicy`` name is replaced by a factory that
    never pins (the parameters are on the CPU anyway)."""
    name = verl_internals.INTERNALS["cpu.fsdp_engine_CPUOffloadPolicy"].attr
    policy = getattr(module, name)
    if policy is not None and not getattr(policy, "_verl_resrl_cpu", False):
        setattr(module, name, _unpinned_offload_policy(policy))


def poll_interval() -> float:
    """Replay-buffer poll interval on CPU: ``$VERL_RESRL_POLL_INTERVAL`` seconds, default 0.05."""
    raw = os.environ.get(POLL_INTERVAL_ENV, "").strip()
    if not raw:
        return DEFAULT_CPU_POLL_INTERVAL
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{POLL_INTERVAL_ENV}={raw!r} is not a number of seconds (e.g. 0.05)") from exc
    if value <= 0:
        raise ValueError(f"{POLL_INTERVAL_ENV}={raw!r} must be > 0 seconds")
    return value


def _patch_replay_buffer(module) -> None:
    """The V1 ``ReplayBuffer`` sleeps ``poll_interval`` (2.0 s, never set by the trainer) between looks at
    TransferQueue, so every step waits at least 2 s for rollouts that take well under a second on a tiny CPU
    model. Its ``__init__`` is wrapped to use :func:`poll_interval`."""
    cls = getattr(module, verl_internals.INTERNALS["cpu.ReplayBuffer.__init__"].attr.split(".")[0])
    original = cls.__init__
    if getattr(original, "_verl_resrl_cpu", False):
        return
    interval = poll_interval()

    @functools.wraps(original)
    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.poll_interval = interval

    __init__._verl_resrl_cpu = True
    cls.__init__ = __init__


def _patch_agent_loop_tq(module) -> None:
    """Group-commit the V1 agent-loop worker's TransferQueue writes (:mod:`.coalesced_puts`): the module's ``tq``
    becomes a :class:`CoalescingTransferQueue` and its ``list_of_dict_to_tensordict`` defers building rows."""
    if not coalescing_enabled():
        return
    tq_name = verl_internals.INTERNALS["cpu.agent_loop_tq.tq"].attr
    rows_name = verl_internals.INTERNALS["cpu.agent_loop_tq.list_of_dict_to_tensordict"].attr
    current = getattr(module, tq_name)
    if isinstance(current, CoalescingTransferQueue):
        return
    calls = inspect.getsource(module).count(f"{rows_name}(")
    if calls != 1:  # its result must only ever reach tq.async_kv_batch_put
        logger.warning("%s calls %s %d times (expected 1): TransferQueue writes are not merged",
                       module.__name__, rows_name, calls)
        return
    proxy = CoalescingTransferQueue(current, getattr(module, rows_name))
    setattr(module, tq_name, proxy)
    setattr(module, rows_name, proxy.deferred_rows)


def register() -> None:
    patch_process_group_backend()
    when_imported(verl_internals.INTERNALS["cpu.fsdp_engine_CPUOffloadPolicy"].module, _patch_fsdp_engine)
    when_imported(verl_internals.INTERNALS["cpu.ReplayBuffer.__init__"].module, _patch_replay_buffer)
    coalescing_enabled()  # a bad $VERL_RESRL_COALESCE_PUTS fails here, in the driver, before workers start
    when_imported(verl_internals.INTERNALS["cpu.agent_loop_tq.tq"].module, _patch_agent_loop_tq)
