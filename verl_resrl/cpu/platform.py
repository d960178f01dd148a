"""The ``cpu`` platform for veRL's platform registry.

veRL 0.9.1 resolves its platform once per process (``verl.plugin.platform.get_platform``), from
``VERL_PLATFORM`` when set. Registering a ``PlatformBase`` subclass under the name ``cpu`` makes
``VERL_PLATFORM=cpu`` give every veRL process: device ``cpu``, collective backend ``gloo``, the no-op device
namespace of :mod:`verl_resrl.cpu.device`, and Ray resource name ``GPU`` — so the logical GPUs of
``ray.init(num_gpus=N)`` place workers exactly as real ones would (one "GPU" per rank).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Optional

from verl_resrl import verl_internals

PLATFORM_NAME = "cpu"


def _platform_class():
    """Build the platform class (defined lazily: its base class lives in veRL)."""
    platform_base = verl_internals.resolve("cpu.PlatformBase")

    class PlatformCPU(platform_base):
        """Runs veRL's trainer, FSDP2 engine and rollout on the host CPU (gloo collectives)."""

        @property
        def device_name(self) -> str:
            return "cpu"

        @property
        def vendor_name(self) -> str:
            return "cpu"

        @property
        def device_module(self) -> ModuleType:
            from verl_resrl.cpu import device

            return device

        def is_available(self) -> bool:
            return True

        def is_platform_available(self, use_smi_check=False) -> bool:
            # Never auto-detected: only an explicit VERL_PLATFORM=cpu selects it.
            return False

        def current_device(self):
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index: int) -> None:
            return None

        def synchronize(self, device_index: Optional[int] = None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            import torch

            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            self.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
            return None, None

        def communication_backend_name(self) -> str:
            return "gloo"

        def visible_devices_envvar(self) -> str:
            # Ray sets it for actors holding logical GPUs; harmless without CUDA.
            return "CUDA_VISIBLE_DEVICES"

        def ray_resource_name(self) -> str:
            return "GPU"

        def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
            return {"num_gpus": num_gpus}

        def ray_noset_envvars(self) -> list[str]:
            return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

        def is_ipc_supported(self) -> bool:
            return False

        @contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def cudart(self) -> Any:
            return None

    return PlatformCPU


def register() -> None:
    """Register the ``cpu`` platform and make veRL's engine lookup find the FSDP engine on it.

    ``EngineRegistry.get_engine_cls`` keys engines by device; veRL registers its FSDP engines for ``cuda``/``npu``
    only (``workers/engine/fsdp/transformer_impl.py``), although they are device-agnostic. veRL's own override
    ``VERL_ENGINE_DEVICE`` selects the ``cuda`` registration; it is set here (in every process) unless the
    user set it.
    """
    registry = verl_internals.resolve("cpu.PlatformRegistry")
    if registry.get(PLATFORM_NAME) is None:
        registry.register(platform=PLATFORM_NAME)(_platform_class())
    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
