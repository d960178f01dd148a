"""Run veRL's real ``main_ppo`` on CPU.

``python -m verl_resrl.cpu.launch [hydra overrides...]`` runs ``python -m verl.trainer.main_ppo`` with
``VERL_PLATFORM=cpu`` and the settings the CPU backend needs (FSDP2, sdpa attention, float32, no
torch.compile, the ``hf`` rollout, logical Ray GPUs, one TransferQueue storage unit, one reward and one
agent-loop worker). Overrides given on the command line come last and win. ``--n-gpus N`` sets the number of
trainer ranks (logical GPUs); ``--tiny DIR`` adds the tiny GRPO task of :mod:`verl_resrl.cpu.tiny_assets`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from verl_resrl.cpu.patches import POLL_INTERVAL_ENV, DEFAULT_CPU_POLL_INTERVAL


def cpu_overrides(n_gpus: int = 1) -> list[str]:
    """The Hydra overrides that make ``main_ppo`` run on CPU with ``n_gpus`` trainer ranks."""
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
    return [
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={n_gpus}",
        "trainer.nnodes=1",
        f"+ray_kwargs.ray_init.num_gpus={n_gpus}",
        "ray_kwargs.ray_init.num_cpus=16",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
        "reward.num_workers=1",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.name=hf",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.actor.strategy=fsdp2",
        "critic.strategy=fsdp2",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "+actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype=fp32",
        "+actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype=fp32",
        "actor_rollout_ref.actor.fsdp_config.model_dtype=fp32",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        "data.dataloader_num_workers=0",
    ]


def tiny_grpo_overrides(
    assets, steps: int = 2, n_gpus: int = 1, n_prompts: int = 4, group_size: int = 4, response_length: int = 16
) -> list[str]:
    """Overrides for a small GRPO run on :func:`verl_resrl.cpu.tiny_assets.build_tiny_assets` assets."""
    batch = n_prompts
    if (batch * group_size) % n_gpus:
        raise ValueError(f"{batch} prompts x {group_size} responses do not split over {n_gpus} ranks")
    micro = batch * group_size // n_gpus
    return [
        "algorithm.adv_estimator=grpo",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={assets.train_files}",
        f"data.val_files={assets.val_files}",
        f"data.train_batch_size={batch}",
        "data.max_prompt_length=32",
        f"data.max_response_length={response_length}",
        f"actor_rollout_ref.model.path={assets.model_path}",
        # Packed (remove-padding) batches are exact with sdpa on CPU but attend over the whole packed
        # micro-batch (an nnz x nnz mask): measured 3x slower per step than padded batches for 16x8 samples.
        "actor_rollout_ref.model.use_remove_padding=False",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.rollout.n={group_size}",
        "actor_rollout_ref.rollout.temperature=1.0",
        f"reward.custom_reward_function.path={assets.reward_path}",
        f"reward.custom_reward_function.name={assets.reward_name}",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=100",
        "trainer.logger=[console]",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        "trainer.project_name=verl_resrl_cpu",
        "trainer.experiment_name=tiny_grpo",
    ]


def cpu_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a CPU run: ``base`` (default ``os.environ``) plus the CPU backend's variables."""
    env = dict(os.environ if base is None else base)
    env["VERL_PLATFORM"] = "cpu"
    env.setdefault("VERL_ENGINE_DEVICE", "cuda")
    env.setdefault(POLL_INTERVAL_ENV, str(DEFAULT_CPU_POLL_INTERVAL))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("RAY_DEDUP_LOGS", "0")
    env.setdefault("HYDRA_FULL_ERROR", "1")
    env.setdefault("WANDB_MODE", "disabled")
    return env


def cpu_main_ppo_command(overrides: list[str], n_gpus: int = 1, python: str | None = None) -> list[str]:
    """``python -m verl.trainer.main_ppo`` with :func:`cpu_overrides` followed by ``overrides``."""
    return [python or sys.executable, "-m", "verl.trainer.main_ppo", *cpu_overrides(n_gpus), *overrides]


def check_command(command: list[str]) -> None:
    """Compose the Hydra config of ``command`` and run the CPU checks on it, without starting anything."""
    from hydra import compose, initialize_config_module

    from verl_resrl.cpu.checks import check_cpu_config

    overrides = command[command.index("verl.trainer.main_ppo") + 1 :]
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer", overrides=overrides)
    check_cpu_config(config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run veRL's main_ppo on CPU.", allow_abbrev=False)
    parser.add_argument("--n-gpus", type=int, default=1, help="trainer ranks (logical Ray GPUs)")
    parser.add_argument("--tiny", metavar="DIR", help="build the tiny assets in DIR and train the tiny GRPO task")
    parser.add_argument("--steps", type=int, default=2, help="training steps of the --tiny task")
    args, overrides = parser.parse_known_args(argv)
    extra = []
    if args.tiny:
        from verl_resrl.cpu.tiny_assets import build_tiny_assets

        extra = tiny_grpo_overrides(build_tiny_assets(args.tiny), steps=args.steps, n_gpus=args.n_gpus)
    command = cpu_main_ppo_command(extra + overrides, n_gpus=args.n_gpus)
    env = cpu_env()
    os.environ.update(env)
    check_command(command)
    print("+ " + " ".join(command), flush=True)
    return subprocess.call(command, env=env)


if __name__ == "__main__":
    sys.exit(main())
