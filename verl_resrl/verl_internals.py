"""Every veRL 0.9.1 internal this package depends on, in one place.

veRL is pinned to ``>=0.9.1,<0.10`` but the names below are not veRL's public API. Each entry says what the
package wraps or reads and why. ``tests/test_verl_internals.py`` resolves every entry and checks its shape
(the parameters the package relies on), so a veRL release that moves or changes one of them fails a test
instead of failing a training run.

Code elsewhere in the package gets these objects through :func:`resolve`, never by importing them directly.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field


@dataclass(frozen=True)
class VerlInternal:
    module: str
    attr: str  # dotted path inside the module, e.g. "FSDPEngine.forward_step"
    why: str
    params: tuple[str, ...] = field(default=())  # parameter names that must exist (in order) when callable

    def resolve(self):
        obj = importlib.import_module(self.module)
        for part in self.attr.split("."):
            obj = getattr(obj, part)
        return obj

    def check(self) -> None:
        """Raise ``AssertionError`` describing the mismatch if the internal changed shape."""
        obj = self.resolve()
        if self.params:
            names = list(inspect.signature(obj).parameters)
            missing = [p for p in self.params if p not in names]
            assert not missing, f"{self.module}.{self.attr}: parameters {missing} not in {names}"
            order = [names.index(p) for p in self.params]
            assert order == sorted(order), f"{self.module}.{self.attr}: parameter order changed: {names}"


INTERNALS: dict[str, VerlInternal] = {}


def declare(name: str, module: str, attr: str, why: str, params: tuple[str, ...] = ()) -> VerlInternal:
    internal = VerlInternal(module, attr, why, params)
    INTERNALS[name] = internal
    return internal


def resolve(name: str):
    return INTERNALS[name].resolve()


# --- declarations: one per internal the package touches -----------------------------------------------------

# CPU execution backend (verl_resrl/cpu), active only with VERL_PLATFORM=cpu.
declare("cpu.PlatformBase", "verl.plugin.platform.platform_base", "PlatformBase",
        "base class of the 'cpu' platform (device cpu, backend gloo, Ray resource GPU) - cpu/platform.py")
declare("cpu.PlatformRegistry", "verl.plugin.platform.platform_manager", "PlatformRegistry",
        "PlatformRegistry.register('cpu') so VERL_PLATFORM=cpu resolves in every process - cpu/platform.py")
declare("cpu.EngineRegistry.get_engine_cls", "verl.workers.engine.base", "EngineRegistry.get_engine_cls",
        "FSDP engines are registered for cuda/npu only; VERL_ENGINE_DEVICE=cuda (read here) selects the "
        "device-agnostic FSDPEngine on cpu - cpu/platform.py", ("model_type", "backend"))
declare("cpu.distributed_module", "verl.utils.distributed", "initialize_global_process_group_ray",
        "module attribute replaced by a wrapper (workers import it by name after plugins load) - cpu/patches.py")
declare("cpu.initialize_global_process_group_ray", "verl.utils.distributed", "initialize_global_process_group_ray",
        "wrapped: it builds backend 'cpu:gloo,cpu:gloo' on the cpu platform, which torch rejects -> 'gloo' "
        "- cpu/patches.py", ("timeout_second", "backend"))
declare("cpu.fsdp_engine_CPUOffloadPolicy", "verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy",
        "FSDPEngine._build_fsdp_module gives forward-only (ref) FSDP2 engines CPUOffloadPolicy(pin_memory=True); "
        "pinning needs an accelerator -> module name replaced by a never-pinning factory - cpu/patches.py")
declare("cpu.ReplayBuffer.__init__", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer.__init__",
        "V1 ReplayBuffer polls TransferQueue every poll_interval=2.0 s (never set by the trainer): a 2 s floor "
        "per step; wrapped to use $VERL_RESRL_POLL_INTERVAL (default 0.05 s on cpu) - cpu/patches.py",
        ("self", "trainer_mode", "trainer_config", "max_off_policy_threshold", "max_off_policy_strategy",
         "sampler_kwargs", "poll_interval"))
declare("cpu._ROLLOUT_REGISTRY", "verl.workers.rollout.base", "_ROLLOUT_REGISTRY",
        "worker-side rollout classes by (name, mode): ('hf', 'async') -> HFServerAdapter - cpu/hf_rollout.py")
declare("cpu.BaseRollout", "verl.workers.rollout.base", "BaseRollout",
        "base of HFServerAdapter (update_weights receives the trainer's full parameters) - cpu/hf_rollout.py",
        ("self", "config", "model_config", "device_mesh"))
declare("cpu.RolloutReplicaRegistry", "verl.workers.rollout.replica", "RolloutReplicaRegistry",
        "driver-side replica classes by rollout name: 'hf' -> HFReplica - cpu/hf_rollout.py")
declare("cpu.RolloutReplica", "verl.workers.rollout.replica", "RolloutReplica",
        "base of HFReplica (launch_servers, server_handle/address used by the agent loop) - cpu/hf_rollout.py",
        ("self", "replica_rank", "config", "model_config", "gpus_per_node"))
declare("cpu.TokenOutput", "verl.workers.rollout.replica", "TokenOutput",
        "token-in/token-out result the agent loop expects from server.generate - cpu/hf_rollout.py")
declare("cpu.HFModelConfig", "verl.workers.config", "HFModelConfig",
        "model config (local_path, tokenizer, generation_config) the replica receives as DictConfig "
        "- cpu/hf_rollout.py")
declare("cpu.omega_conf_to_dataclass", "verl.utils.config", "omega_conf_to_dataclass",
        "turns the replica's model DictConfig into HFModelConfig, as veRL's vLLM server does - cpu/hf_rollout.py",
        ("config", "dataclass_type"))
declare("cpu.validate_config", "verl.utils.config", "validate_config",
        "wrapped (main_ppo imports it by name after plugins load): the driver checks CPU-incompatible settings "
        "before Ray workers start and would hang - cpu/checks.py", ("config",))
