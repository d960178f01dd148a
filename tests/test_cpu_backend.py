"""Fast tests of the CPU backend (verl_resrl.cpu): inert without VERL_PLATFORM=cpu, active with it, bad-input
errors, launcher command, and the HF rollout's sampling / log-probs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from verl_resrl.cpu import launch
from verl_resrl.cpu.checks import CPUConfigError
from verl_resrl.cpu.coalesced_puts import COALESCE_ENV
from verl_resrl.cpu.patches import POLL_INTERVAL_ENV, _collapse_backend, poll_interval
from verl_resrl.cpu.runs import parse_step_metrics

PROBE = r"""
import json, sys
import verl
from verl.plugin.platform.platform_manager import PlatformRegistry
from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry
import verl.utils.distributed as dist
import verl.utils.config as vc
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer
import verl.trainer.ppo.v1.agent_loop_tq as agent_loop_tq
out = {
    "cpu_registered": getattr(sys.modules.get("verl_resrl.cpu"), "_registered", False),
    "cpu_platform": PlatformRegistry.get("cpu") is not None,
    "hf_adapter": ("hf", "async") in _ROLLOUT_REGISTRY,
    "hf_replica": "hf" in RolloutReplicaRegistry._registry,
    "dist_wrapped": getattr(dist.initialize_global_process_group_ray, "_verl_resrl_cpu", False),
    "validate_wrapped": getattr(vc.validate_config, "_verl_resrl_cpu", False),
    "replay_wrapped": getattr(ReplayBuffer.__init__, "_verl_resrl_cpu", False),
    "tq_coalesced": type(agent_loop_tq.tq).__name__ == "CoalescingTransferQueue",
}
if out["cpu_platform"] and PlatformRegistry.get("cpu") is not None and "--active" in sys.argv:
    from verl.plugin.platform import get_platform
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.rollout.base import get_rollout_class
    p = get_platform()
    out.update(device=p.device_name, backend=p.communication_backend_name(), resource=p.ray_resource_name(),
               device_id=p.current_device(), accel=p.device_module.is_available(),
               engine=EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
               adapter=get_rollout_class("hf").__name__)
print("PROBE" + json.dumps(out))
"""


def _probe(env_update: dict, *args) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_ENGINE_DEVICE")}
    env.update(env_update)
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("PROBE"))
    return json.loads(line[len("PROBE") :])


def test_inert_without_verl_platform_cpu():
    out = _probe({})
    assert out == {
        "cpu_registered": False,
        "cpu_platform": False,
        "hf_adapter": False,
        "hf_replica": False,
        "dist_wrapped": False,
        "validate_wrapped": False,
        "replay_wrapped": False,
        "tq_coalesced": False,
    }


def test_active_with_verl_platform_cpu():
    out = _probe({"VERL_PLATFORM": "cpu"}, "--active")
    assert out["cpu_registered"] and out["cpu_platform"] and out["hf_adapter"] and out["hf_replica"]
    assert out["dist_wrapped"] and out["validate_wrapped"] and out["replay_wrapped"] and out["tq_coalesced"]
    assert out["device"] == "cpu" and out["backend"] == "gloo" and out["resource"] == "GPU"
    assert out["device_id"] == "cpu" and out["accel"] is False
    assert out["engine"] == "FSDPEngineWithLMHead"
    assert out["adapter"] == "HFServerAdapter"


def test_backend_string_collapses_to_gloo():
    assert _collapse_backend("cpu:gloo,cpu:gloo") == "gloo"
    assert _collapse_backend(None) == "gloo"
    assert _collapse_backend("cpu:gloo") == "gloo"
    assert _collapse_backend("cpu:gloo,cuda:nccl") == "cpu:gloo,cuda:nccl"


def test_poll_interval_env(monkeypatch):
    monkeypatch.delenv(POLL_INTERVAL_ENV, raising=False)
    assert poll_interval() == 0.05
    monkeypatch.setenv(POLL_INTERVAL_ENV, "0.5")
    assert poll_interval() == 0.5
    monkeypatch.setenv(POLL_INTERVAL_ENV, "soon")
    with pytest.raises(ValueError, match=POLL_INTERVAL_ENV):
        poll_interval()


def test_writes_are_not_merged_when_the_rows_builder_has_other_callers(tmp_path, monkeypatch, caplog):
    import importlib

    import transfer_queue

    from verl_resrl.cpu.patches import _patch_agent_loop_tq

    (tmp_path / "agent_loop_like.py").write_text(
        "import transfer_queue as tq\n"
        "from verl.utils.tensordict_utils import list_of_dict_to_tensordict\n"
        "def put(rows):\n    return tq.async_kv_batch_put(keys=[], partition_id='t', "
        "fields=list_of_dict_to_tensordict(rows), tags=[])\n"
        "def elsewhere(rows):\n    return list_of_dict_to_tensordict(rows)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("agent_loop_like")
    _patch_agent_loop_tq(module)
    assert module.tq is transfer_queue
    assert "not merged" in caplog.text


def test_coalesced_puts_can_be_turned_off():
    assert _probe({"VERL_PLATFORM": "cpu", COALESCE_ENV: "0"})["tq_coalesced"] is False


# --- launcher and bad-input checks ---------------------------------------------------------------------------


def test_launcher_command_and_env():
    cmd = launch.cpu_main_ppo_command(["trainer.total_training_steps=5", "actor_rollout_ref.rollout.n=8"], n_gpus=2)
    assert cmd[1:3] == ["-m", "verl.trainer.main_ppo"]
    for item in (
        "trainer.n_gpus_per_node=2",
        "+ray_kwargs.ray_init.num_gpus=2",
        "ray_kwargs.ray_init.num_cpus=16",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "reward.num_workers=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
    ):
        assert item in cmd
    assert cmd[-2:] == ["trainer.total_training_steps=5", "actor_rollout_ref.rollout.n=8"]  # user's last: they win
    env = launch.cpu_env({"PATH": "/bin"})
    assert env["VERL_PLATFORM"] == "cpu" and env["PATH"] == "/bin" and float(env[POLL_INTERVAL_ENV]) > 0
    with pytest.raises(ValueError):
        launch.cpu_overrides(0)


def test_launcher_defaults_pass_the_checks():
    launch.check_command(launch.cpu_main_ppo_command([], n_gpus=2))


@pytest.mark.parametrize(
    "overrides, n_gpus, message",
    [
        (["actor_rollout_ref.rollout.name=vllm"], 1, "actor_rollout_ref.rollout.name=hf"),
        (["actor_rollout_ref.rollout.name=nonsense"], 1, "'nonsense'"),
        (["actor_rollout_ref.actor.strategy=fsdp"], 1, "actor_rollout_ref.actor.strategy=fsdp2"),
        (
            ["actor_rollout_ref.model.override_config.attn_implementation=flash_attention_2"],
            1,
            "attn_implementation=sdpa",
        ),
        (["trainer.n_gpus_per_node=4"], 2, "ray_kwargs.ray_init.num_gpus=4"),
    ],
)
def test_bad_inputs_name_the_setting_and_fix(overrides, n_gpus, message):
    with pytest.raises(CPUConfigError, match=message.replace("[", r"\[").replace("+", r"\+")):
        launch.check_command(launch.cpu_main_ppo_command(overrides, n_gpus=n_gpus))


def test_missing_fake_gpus_and_default_attention_are_rejected():
    from hydra import compose, initialize_config_module

    from verl_resrl.cpu.checks import check_cpu_config

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer", overrides=["actor_rollout_ref.rollout.name=hf",
                                                               "actor_rollout_ref.actor.strategy=fsdp2",
                                                               "algorithm.adv_estimator=grpo"])
    with pytest.raises(CPUConfigError, match="flash_attention_2.*the default"):
        check_cpu_config(config)
    from omegaconf import open_dict

    with open_dict(config):
        config.actor_rollout_ref.model.override_config.attn_implementation = "sdpa"
    with pytest.raises(CPUConfigError, match=r"\+ray_kwargs.ray_init.num_gpus="):
        check_cpu_config(config)


def test_real_main_ppo_driver_rejects_bad_setting_before_ray_starts(tmp_path):
    """The check runs inside ``python -m verl.trainer.main_ppo`` itself (wrapped validate_config)."""
    cmd = launch.cpu_main_ppo_command(["actor_rollout_ref.actor.strategy=fsdp"], n_gpus=1)
    start = time.time()
    proc = subprocess.run(cmd, env=launch.cpu_env(), capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode != 0
    assert "CPUConfigError" in proc.stderr and "actor_rollout_ref.actor.strategy=fsdp2" in proc.stderr
    assert "ray init kwargs" not in proc.stdout  # failed before ray.init
    assert time.time() - start < 120


# --- hf rollout ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_resrl.cpu.tiny_assets import build_tiny_assets

    assets = build_tiny_assets(tmp_path_factory.mktemp("tiny"))
    model = AutoModelForCausalLM.from_pretrained(assets.model_path, attn_implementation="sdpa").eval()
    return model, AutoTokenizer.from_pretrained(assets.model_path)


def _requests(prompts, settings, max_tokens=8):
    from verl_resrl.cpu.hf_rollout import _Request

    return [_Request(p, max_tokens, settings, True, None) for p in prompts]


def test_filter_logits_top_k_top_p():
    from verl_resrl.cpu.hf_rollout import filter_logits

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, -1, 0.7)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, -1, 0.5)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(filter_logits(logits, -1, 1.0)).all()


def test_batched_generation_matches_single_and_logprobs_match_forward(tiny_model):
    from verl_resrl.cpu.hf_rollout import SamplingSettings, generate_batch

    model, tok = tiny_model
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
               for q in ("3+5=", "12+30=", "7+7=")]
    prompts = [p["input_ids"] if isinstance(p, dict) or hasattr(p, "keys") else p for p in prompts]
    greedy = SamplingSettings(temperature=0.0, top_p=1.0, top_k=-1, ignore_eos=True)
    batch = _requests(prompts, greedy)
    generate_batch(model, batch, {tok.eos_token_id}, tok.pad_token_id, torch.Generator().manual_seed(0))
    for prompt, req in zip(prompts, batch):
        single = _requests([prompt], greedy)
        generate_batch(model, single, {tok.eos_token_id}, tok.pad_token_id, torch.Generator().manual_seed(0))
        assert single[0].token_ids == req.token_ids
        assert len(req.token_ids) == 8
        with torch.no_grad():
            full = torch.tensor([prompt + req.token_ids])
            logp = torch.log_softmax(model(full).logits[0, len(prompt) - 1 : -1].float(), -1)
            ref = logp.gather(-1, torch.tensor(req.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(req.log_probs), ref, atol=1e-4)


def test_sampling_temperature_logprobs_and_eos_stop(tiny_model):
    from verl_resrl.cpu.hf_rollout import SamplingSettings, generate_batch

    model, tok = tiny_model
    prompt = tok.apply_chat_template([{"role": "user", "content": "1+1="}], add_generation_prompt=True)
    prompt = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    settings = SamplingSettings(temperature=0.7, top_p=0.9, top_k=50, ignore_eos=False)
    reqs = _requests([prompt] * 4, settings, max_tokens=12)
    generate_batch(model, reqs, {tok.eos_token_id}, tok.pad_token_id, torch.Generator().manual_seed(1))
    for req in reqs:
        with torch.no_grad():
            full = torch.tensor([prompt + req.token_ids])
            logp = torch.log_softmax(model(full).logits[0, len(prompt) - 1 : -1].float() / 0.7, -1)
            ref = logp.gather(-1, torch.tensor(req.token_ids)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(req.log_probs), ref, atol=1e-4)
        assert len(req.token_ids) <= 12
        assert tok.eos_token_id not in req.token_ids[:-1]  # stops at the first EOS
    # an EOS-only vocabulary stops after one token
    eos_only = SamplingSettings(temperature=1.0, top_p=1.0, top_k=1, ignore_eos=False)
    model_bias = model.lm_head.weight.data.clone()
    try:
        model.lm_head.weight.data[tok.eos_token_id] *= 0
        model.lm_head.weight.data[tok.eos_token_id] += 5 * model_bias.norm(dim=-1).max()
        one = _requests([prompt], eos_only, max_tokens=12)
        generate_batch(model, one, {tok.eos_token_id}, tok.pad_token_id, torch.Generator().manual_seed(0))
        assert one[0].token_ids == [tok.eos_token_id]
    finally:
        model.lm_head.weight.data.copy_(model_bias)


def test_parse_step_metrics():
    out = "junk\n(TaskRunner pid=1) step:2 - actor/grad_norm:0.5 - num_turns/min:np.int32(2) - x:abc - y:-1e-05\n"
    assert parse_step_metrics(out) == {2: {"actor/grad_norm": 0.5, "num_turns/min": 2.0, "y": -1e-05}}
