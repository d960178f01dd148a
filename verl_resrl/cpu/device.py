"""The ``torch.<device>``-like namespace veRL gets from ``get_torch_device()`` on the CPU platform.

veRL calls accelerator functions through ``get_torch_device()`` (``empty_cache``, ``synchronize``,
``set_device``, memory statistics, RNG state, streams). On the CPU platform there is nothing to free, wait for
or select, so those are no-ops; memory statistics read 0; RNG state is the CPU generator's; streams and events
are ``torch.cpu``'s.

``is_available()`` answers whether an *accelerator* is usable and is therefore ``False``: veRL uses it to skip
accelerator-only work (memory accounting, ``map_location``), which is exactly right on CPU.
"""

from __future__ import annotations

import psutil
import torch

Stream = torch.cpu.Stream
StreamContext = torch.cpu.StreamContext
current_stream = torch.cpu.current_stream
stream = torch.cpu.stream


def Event(*args, **kwargs):  # noqa: N802 - mirrors torch.cuda.Event
    """A CPU event (recording and waiting complete immediately)."""
    return torch.Event(device="cpu")


def is_available() -> bool:
    return False


def is_initialized() -> bool:
    return True


def current_device() -> str:
    """The device id veRL passes to ``.to(...)`` / ``torch.device(...)``: the string ``"cpu"`` (an int would mean CUDA)."""
    return "cpu"


def device_count() -> int:
    return 1


def set_device(device=None) -> None:
    return None


def synchronize(device=None) -> None:
    return None


def get_device_name(device=None) -> str:
    return "cpu"


def empty_cache() -> None:
    return None


def ipc_collect() -> None:
    return None


def set_per_process_memory_fraction(fraction: float, device=None) -> None:
    return None


def reset_peak_memory_stats(device=None) -> None:
    return None


def reset_accumulated_memory_stats(device=None) -> None:
    return None


def memory_allocated(device=None) -> int:
    return 0


def max_memory_allocated(device=None) -> int:
    return 0


def memory_reserved(device=None) -> int:
    return 0


def max_memory_reserved(device=None) -> int:
    return 0


def mem_get_info(device=None) -> tuple[int, int]:
    """(free, total) bytes of host memory."""
    vm = psutil.virtual_memory()
    return vm.available, vm.total


def manual_seed(seed: int) -> None:
    torch.manual_seed(seed)


def manual_seed_all(seed: int) -> None:
    torch.manual_seed(seed)


def get_rng_state(device=None) -> torch.Tensor:
    return torch.get_rng_state()


def set_rng_state(state: torch.Tensor, device=None) -> None:
    torch.set_rng_state(state)
