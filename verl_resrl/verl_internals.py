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
    uses: tuple[str, ...] = field(default=())  # code the package relies on, verbatim in the module's source

    def resolve(self):
        obj = importlib.import_module(self.module)
        for part in self.attr.split("."):
            obj = getattr(obj, part)
        return obj

    def bind(self, *args, **kwargs) -> dict:
        """The arguments of a call to this internal by parameter name, defaults applied."""
        bound = inspect.signature(self.resolve()).bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    def check(self) -> None:
        """Raise ``AssertionError`` describing the mismatch if the internal changed shape."""
        obj = self.resolve()
        if self.params:
            names = list(inspect.signature(obj).parameters)
            missing = [p for p in self.params if p not in names]
            assert not missing, f"{self.module}.{self.attr}: parameters {missing} not in {names}"
            order = [names.index(p) for p in self.params]
            assert order == sorted(order), f"{self.module}.{self.attr}: parameter order changed: {names}"
        if self.uses:
            source = inspect.getsource(importlib.import_module(self.module))
            missing = [code for code in self.uses if code not in source]
            assert not missing, f"{self.module}: no longer contains {missing}"


INTERNALS: dict[str, VerlInternal] = {}


def declare(name: str, module: str, attr: str, why: str, params: tuple[str, ...] = (),
            uses: tuple[str, ...] = ()) -> VerlInternal:
    internal = VerlInternal(module, attr, why, params, uses)
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
declare("cpu.initialize_global_process_group_ray", "verl.utils.distributed", "initialize_global_process_group_ray",
        "wrapped (module attribute; workers import it by name after plugins load): it builds backend "
        "'cpu:gloo,cpu:gloo' on the cpu platform, which torch rejects -> 'gloo' - cpu/patches.py", ("timeout_second", "backend"))
declare("cpu.fsdp_engine_CPUOffloadPolicy", "verl.workers.engine.fsdp.transformer_impl", "CPUOffloadPolicy",
        "FSDPEngine._build_fsdp_module gives forward-only (ref) FSDP2 engines CPUOffloadPolicy(pin_memory=True); "
        "pinning needs an accelerator -> module name replaced by a never-pinning factory - cpu/patches.py")
declare("cpu.ReplayBuffer.__init__", "verl.trainer.ppo.v1.replay_buffer", "ReplayBuffer.__init__",
        "V1 ReplayBuffer polls TransferQueue every poll_interval=2.0 s (never set by the trainer): a 2 s floor "
        "per step; wrapped to use $VERL_RESRL_POLL_INTERVAL (default 0.05 s on cpu) - cpu/patches.py",
        ("self", "trainer_mode", "trainer_config", "max_off_policy_threshold", "max_off_policy_strategy",
         "sampler_kwargs", "poll_interval"))
declare("cpu.agent_loop_tq.tq", "verl.trainer.ppo.v1.agent_loop_tq", "tq",
        "the V1 agent-loop worker writes each sample and each prompt status with its own TransferQueue put; the "
        "module's tq name is replaced by a proxy that merges concurrent writes into batch puts - "
        "cpu/coalesced_puts.py",
        uses=("tq.async_kv_put(key=uid, partition_id=partition_id, tag={", "await tq.async_kv_batch_put(",
              "fields=list_of_dict_to_tensordict(fields),"))
declare("cpu.agent_loop_tq.list_of_dict_to_tensordict", "verl.trainer.ppo.v1.agent_loop_tq",
        "list_of_dict_to_tensordict",
        "builds each sample's TensorDict for its put; replaced in that module so the rows of merged writes are "
        "built once, together - cpu/coalesced_puts.py", ("list_of_dicts",))
declare("cpu._ROLLOUT_REGISTRY", "verl.workers.rollout.base", "_ROLLOUT_REGISTRY",
        "worker-side rollout classes by (name, mode): ('hf', 'async') -> HFServerAdapter - cpu/hf_rollout.py")
declare("cpu.BaseRollout", "verl.workers.rollout.base", "BaseRollout",
        "base of HFServerAdapter (update_weights receives the trainer's full parameters) - cpu/hf_rollout.py",
        ("config", "model_config", "device_mesh"))
declare("cpu.RolloutReplicaRegistry", "verl.workers.rollout.replica", "RolloutReplicaRegistry",
        "driver-side replica classes by rollout name: 'hf' -> HFReplica - cpu/hf_rollout.py")
declare("cpu.RolloutReplica", "verl.workers.rollout.replica", "RolloutReplica",
        "base of HFReplica (launch_servers, server_handle/address used by the agent loop) - cpu/hf_rollout.py",
        ("replica_rank", "config", "model_config", "gpus_per_node"))
declare("cpu.RolloutReplica.sleep", "verl.workers.rollout.replica", "RolloutReplica.sleep",
        "the trainer puts each replica to sleep right after generation and syncs the weights before the next one "
        "(fit loop and CheckpointEngineManager): HFRolloutServer.sleep may then free its weights, refilled by "
        "the next update_weights - cpu/hf_rollout.py", ("self",), uses=("server.sleep.remote()",))
declare("cpu.RayPPOTrainer.fit", "verl.trainer.ppo.ray_trainer", "RayPPOTrainer.fit",
        "the order HFRolloutServer's weight release relies on: generate_sequences, then sleep_replicas, then the "
        "update, then update_weights - cpu/hf_rollout.py",
        uses=("self.async_rollout_manager.generate_sequences(combined_gen_batch)\n"
              "                        self.checkpoint_manager.sleep_replicas()",
              "self.checkpoint_manager.update_weights(self.global_steps)"))
declare("cpu.RolloutConfig.free_cache_engine", "verl.workers.config.rollout", "RolloutConfig",
        "rollout.free_cache_engine (default True) decides whether the hf server frees its weights on sleep, as "
        "it decides for vLLM - cpu/hf_rollout.py", uses=("free_cache_engine: bool = True",))
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

# Baseline estimators (verl_resrl/baselines.py) and the length-scaled reward manager (verl_resrl/length_scaled_reward.py).
declare("baselines.register_adv_est", "verl.trainer.ppo.core_algos", "register_adv_est",
        "registers psr / nsr / w_reinforce; it raises when a *different* function is already registered under a "
        "name, so register() re-uses the same function objects - baselines.py", ("name_or_enum",))
declare("reward.register_reward_manager", "verl.experimental.reward_loop.reward_manager", "register",
        "registers the 'length_scaled' reward manager (reward.reward_manager.name, source=register); raises on a "
        "different class under the same name - length_scaled_reward.py", ("name",))
declare("reward.NaiveRewardManager", "verl.experimental.reward_loop.reward_manager.naive", "NaiveRewardManager",
        "base of LengthScaledRewardManager: async run_single(data) -> {'reward_score', 'reward_extra_info'}; "
        "data[-1] holds batch['responses'] and batch['attention_mask'] - length_scaled_reward.py",
        ("config", "tokenizer", "compute_score"))

# ResRL integration (verl_resrl/integration), active only with algorithm.adv_estimator=resrl.
declare("ADV_ESTIMATOR_REGISTRY", "verl.trainer.ppo.core_algos", "ADV_ESTIMATOR_REGISTRY",
        "estimator 'resrl' is added to the registry (register_adv_est raises on re-registration, so plugin "
        "re-imports set the entry directly) - integration/advantage.py")
declare("POLICY_LOSS_REGISTRY", "verl.trainer.ppo.core_algos", "POLICY_LOSS_REGISTRY",
        "policy loss 'resrl' is added to the registry - integration/policy_loss.py")
declare("compute_policy_loss_vanilla", "verl.trainer.ppo.core_algos", "compute_policy_loss_vanilla",
        "the 'resrl' loss is the vanilla clipped surrogate plus diagnostics - integration/policy_loss.py",
        ("old_log_prob", "log_prob", "advantages", "response_mask", "loss_agg_mode", "config", "rollout_is_weights"))
declare("compute_advantage", "verl.trainer.ppo.ray_trainer", "compute_advantage",
        "wrapped (both trainers; V1 imports it into v1.utils): estimators get no per-token extras, so with "
        "adv_estimator=resrl the wrapper passes the actor's residuals - integration/advantage.py",
        ("data", "adv_estimator", "gamma", "lam", "num_repeat", "norm_adv_by_std_in_grpo", "config"))
declare("v1.compute_advantage", "verl.trainer.ppo.v1.utils", "compute_advantage",
        "the name compute_advantage_for_multi_trajectories calls for non-GRPO estimators - integration/advantage.py",
        ("data", "adv_estimator"))
declare("compute_data_metrics", "verl.trainer.ppo.metric_utils", "compute_data_metrics",
        "wrapped: both trainers call it once per step; it carries the resrl/* metrics into the tracker "
        "- integration/advantage.py", ("batch", "use_critic"))
declare("validate_config", "verl.utils.config", "validate_config",
        "wrapped: main_ppo's driver check, before Ray starts; ResRL refusals are raised here "
        "- integration/checks.py", ("config",))
declare("PPOTrainer._balance_batch", "verl.trainer.ppo.v1.trainer_base", "PPOTrainer._balance_batch",
        "V1 per-sample balancing splits uid groups across DP ranks; replaced for resrl by whole-group shards "
        "(same upsampling and metrics) - integration/trainer.py",
        ("self", "batch", "metrics", "logging_prefix", "keep_minibatch"))
declare("PPOTrainer._compute_old_log_prob", "verl.trainer.ppo.v1.trainer_base", "PPOTrainer._compute_old_log_prob",
        "V1: tags samples (group, positive) in TransferQueue and marks the request so the actor computes "
        "residuals - integration/trainer.py", ("self", "batch", "metrics"))
declare("PPOTrainer._compute_advantage", "verl.trainer.ppo.v1.trainer_base", "PPOTrainer._compute_advantage",
        "V1 fetches a fixed field list; the wrapper fetches the residual fields for compute_advantage "
        "(and, with resrl.dump_dir, uid / input_ids / response_mask for the dump) - integration/trainer.py",
        ("self", "batch", "metrics"))
declare("v1.agent_loop_tq.input_ids", "verl.trainer.ppo.v1.agent_loop_tq", "AgentLoopWorkerTQ",
        "the resrl.dump_dir dump reads each V1 sample's input_ids from TransferQueue: prompt + response ids, "
        "unpadded - integration/trainer.py; the actor's old-log-prob request carries them the same way, where "
        "resrl.mask_think_tokens finds each response's reasoning spans - integration/worker.py",
        uses=("input_ids = torch.cat([prompts, responses], dim=0)", 'field["input_ids"] = input_ids'))
declare("PPOTrainer._get_required_batch_multiple", "verl.trainer.ppo.v1.trainer_base",
        "PPOTrainer._get_required_batch_multiple", "same upsampling as veRL's V1 balancing - integration/trainer.py",
        ("self", "dp_size"))
declare("RayPPOTrainer._balance_batch", "verl.trainer.ppo.ray_trainer", "RayPPOTrainer._balance_batch",
        "legacy balancing splits uid groups across DP ranks; replaced for resrl - integration/trainer.py",
        ("self", "batch", "metrics", "logging_prefix", "keep_minibatch"))
declare("RayPPOTrainer._compute_old_log_prob", "verl.trainer.ppo.ray_trainer", "RayPPOTrainer._compute_old_log_prob",
        "legacy keeps only the keys it knows from the actor's output; the wrapper keeps the residual fields "
        "- integration/trainer.py", ("self", "batch"))
declare("RayPPOTrainer._get_dp_size", "verl.trainer.ppo.ray_trainer", "RayPPOTrainer._get_dp_size",
        "actor DP size for legacy balancing - integration/trainer.py", ("self", "worker_group", "role"))
declare("PPOTrainer._init_tokenizer", "verl.trainer.ppo.v1.trainer_base", "PPOTrainer._init_tokenizer",
        "the V1 trainer's tokenizer (self.tokenizer, built from actor_rollout_ref.model) gives "
        "resrl.mask_think_tokens its tag ids - integration/trainer.py", ("self",),
        uses=("self.tokenizer = model_config.tokenizer",))
declare("RayPPOTrainer.__init__", "verl.trainer.ppo.ray_trainer", "RayPPOTrainer.__init__",
        "the legacy trainer's tokenizer (self.tokenizer) gives resrl.mask_think_tokens its tag ids "
        "- integration/trainer.py", ("self", "config", "tokenizer"), uses=("self.tokenizer = tokenizer",))
declare("upsample_batch_to_divisible_size", "verl.trainer.ppo.padding_utils", "upsample_batch_to_divisible_size",
        "V1 balancing pads the batch to the DP/mini-batch multiple first - integration/trainer.py")
declare("calculate_workload", "verl.utils.seqlen_balancing", "calculate_workload",
        "veRL's per-sample cost model used to balance shards - integration/trainer.py")
declare("log_seqlen_unbalance", "verl.utils.seqlen_balancing", "log_seqlen_unbalance",
        "the same balance metrics veRL logs - integration/trainer.py", ("seqlen_list", "partitions", "prefix"))
declare("TrainingWorker.infer_batch", "verl.workers.engine_workers", "TrainingWorker.infer_batch",
        "wrapped: arms the hidden-state hook for the actor's old-log-prob request only and returns the "
        "residual fields with the log-probs - integration/worker.py", ("self", "data"))
declare("FSDPEngineWithLMHead.prepare_model_outputs", "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngineWithLMHead.prepare_model_outputs",
        "wrapped: per micro-batch, the captured states are cut into response states the way log-probs are "
        "- integration/worker.py", ("self", "output", "output_args", "micro_batch", "logits_processor_func"))
declare("FSDPEngineWithLMHead._gather_and_unpad_packed", "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngineWithLMHead._gather_and_unpad_packed",
        "Ulysses gather + packed-padding removal applied to captured states - integration/worker.py",
        ("self", "tensor", "pad_size"))
declare("tu.get_non_tensor_data", "verl.utils.tensordict_utils", "get_non_tensor_data",
        "reads the request's non-tensor keys (ResRL settings, use_remove_padding) - integration/worker.py",
        ("data", "key", "default"))
declare("FSDPEngine.is_mp_src_rank_with_outputs", "verl.workers.engine.fsdp.transformer_impl",
        "FSDPEngine.is_mp_src_rank_with_outputs",
        "only the rank that returns a pass's outputs (Ulysses: SP rank 0) computes residuals; the others take "
        "part in the gather only - integration/worker.py", ("self",))
declare("get_device_id", "verl.utils.device", "get_device_id",
        "device of the one-tensor all-reduce by which all ranks agree that an old-log-prob pass failed, as the "
        "engine places its own all-reduce - integration/worker.py")
declare("left_right_2_no_padding", "verl.workers.utils.padding", "left_right_2_no_padding",
        "legacy trainer: the old-log-prob request's input_ids are nested per sample, prompt + response without "
        "padding; resrl.mask_think_tokens finds each response's reasoning spans in them - integration/worker.py",
        ("data",), uses=("input_ids_nested = torch.nested.nested_tensor_from_jagged(input_ids_rmpad.squeeze(-1), "
                         "offsets=cu_seqlens)",))
declare("no_padding_2_padding", "verl.workers.utils.padding", "no_padding_2_padding",
        "legacy trainer (padded masks): each response's length is the attention mask after the prompt, as veRL "
        "cuts log-probs - integration/worker.py", ("tensor", "data"),
        uses=("response_lens = attention_mask[:, prompt_ids.shape[1] :].sum(dim=1)",
              "values[seq_offset - resp_len - 1 : seq_offset - 1]"))

# Demo task with a calculator tool for veRL's multi-turn tool agent loop (verl_resrl/demo).
declare("demo.BaseTool", "verl.tools.base_tool", "BaseTool",
        "base class of the calculator tool; the tool agent loop calls execute(instance_id, parameters, ...) "
        "- demo/calculator_tool.py")
declare("demo.BaseTool.execute", "verl.tools.base_tool", "BaseTool.execute",
        "overridden by the calculator tool - demo/calculator_tool.py", ("self", "instance_id", "parameters"))
declare("demo.OpenAIFunctionToolSchema", "verl.tools.schemas", "OpenAIFunctionToolSchema",
        "the calculator's OpenAI function schema - demo/calculator_tool.py")
declare("demo.ToolResponse", "verl.tools.schemas", "ToolResponse", "what the calculator returns - demo/calculator_tool.py")
declare("demo.create_continuous_token_builder", "verl.utils.tokenizer.continuous_token_wiring",
        "create_continuous_token_builder",
        "the agent loop's tokenization of prompts, tool turns and turn boundaries, used to build the tool "
        "policy's warm-up episodes exactly as the agent loop will feed them - demo/tool_task.py",
        ("tokenizer", "hf_model_type"))
declare("demo.HermesToolParser", "verl.experimental.agent_loop.tool_parser", "HermesToolParser",
        "multi_turn.format=hermes: the tool call format the tool policy is taught - demo/tool_task.py",
        uses=('regex.compile(r"<tool_call>(.*?)</tool_call>", regex.DOTALL)',
              'name, arguments = function_call["name"], function_call["arguments"]'))
