"""Train the demo's starting policy with veRL's real ``main_ppo`` on CPU and find the trained HF checkpoint.

:func:`demo_overrides` gives the Hydra overrides of one RL run on the demo task (``n`` = 8 responses per
prompt, the exact-answer reward of :mod:`verl_resrl.demo.task`, no KL, the estimator to compare); the final
checkpoint is saved with ``hf_model`` among ``actor.checkpoint.save_contents`` so that
``<run>/ckpt/global_step_N/actor/huggingface`` is a plain Hugging Face model directory.
:func:`train` runs it (via :func:`verl_resrl.cpu.launch.cpu_main_ppo_command`) with its output teed to a log
file and a one-line progress report per step.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from verl_resrl.cpu.launch import cpu_env, cpu_main_ppo_command
from verl_resrl.cpu.runs import parse_step_metrics
from verl_resrl.demo import task as demo_task

ESTIMATORS = ("grpo", "nsr", "w_reinforce", "resrl")


@dataclass(frozen=True)
class RLSettings:
    steps: int = 40
    prompts_per_step: int = 16
    n: int = 8
    lr: float = 3e-4
    temperature: float = 1.0
    max_prompt_length: int = 48
    max_response_length: int = 64
    seed: int = 0
    mini_batches: int = 1  # actor updates per step (ppo_mini_batch_size = prompts_per_step / mini_batches)

    def __post_init__(self):
        if self.mini_batches < 1 or self.prompts_per_step % self.mini_batches:
            raise ValueError(f"mini_batches ({self.mini_batches}) must divide prompts_per_step "
                             f"({self.prompts_per_step})")


def write_data(data_dir, n_test: int = 128) -> tuple[str, str]:
    """The task's training split (the warm-up's problems) and held-out split as veRL parquet files."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    train, test = demo_task.splits(demo_task.N_TRAIN_PROBLEMS, n_test)
    return (demo_task.write_parquet(train, data_dir / "train.parquet", "train"),
            demo_task.write_parquet(test, data_dir / "test.parquet", "test"))


def demo_overrides(policy_dir, train_file: str, val_file: str, run_dir, estimator: str = "resrl",
                   settings: RLSettings = RLSettings()) -> list[str]:
    """Hydra overrides of one demo RL run (one trainer rank); the final step saves an HF checkpoint.

    With ``mini_batches`` > 1 each step takes that many actor updates on consecutive mini-batches of the step's
    samples (the first on-policy, the later ones off-policy and clipped, as in the paper's recipe)."""
    s = settings
    batch = s.prompts_per_step * s.n
    mini_batch_prompts = s.prompts_per_step // s.mini_batches
    overrides = [
        f"algorithm.adv_estimator={estimator}",
        "algorithm.use_kl_in_reward=False",
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        f"data.train_batch_size={s.prompts_per_step}",
        f"data.max_prompt_length={s.max_prompt_length}",
        f"data.max_response_length={s.max_response_length}",
        f"data.seed={s.seed}",
        f"actor_rollout_ref.model.path={policy_dir}",
        "actor_rollout_ref.model.use_remove_padding=False",  # padded batches are faster on CPU (see cpu/launch.py)
        f"actor_rollout_ref.actor.optim.lr={s.lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_batch_prompts}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={mini_batch_prompts * s.n}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={batch}",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={batch}",
        "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0",
        f"actor_rollout_ref.rollout.n={s.n}",
        f"actor_rollout_ref.rollout.temperature={s.temperature}",
        f"actor_rollout_ref.rollout.seed={s.seed}",
        "actor_rollout_ref.actor.checkpoint.save_contents=[model,hf_model]",
        f"reward.custom_reward_function.path={demo_task.__file__}",
        "reward.custom_reward_function.name=compute_score",
        f"trainer.total_training_steps={s.steps}",
        "trainer.total_epochs=1000",
        "trainer.logger=[console]",
        "trainer.val_before_train=False",
        "trainer.resume_mode=disable",
        "trainer.test_freq=-1",
        f"trainer.save_freq={s.steps}",
        f"trainer.default_local_dir={Path(run_dir) / 'ckpt'}",
        "trainer.project_name=verl_resrl_demo",
        f"trainer.experiment_name={estimator}_seed{s.seed}",
    ]
    if estimator == "resrl":
        overrides.append(f"+algorithm.resrl.seed={s.seed}")
    return overrides


def hf_checkpoint(run_dir, step: int) -> Path:
    """The HF model directory veRL saved at ``step`` (``ckpt/global_step_N/actor/huggingface``)."""
    path = Path(run_dir) / "ckpt" / f"global_step_{step}" / "actor" / "huggingface"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no HF checkpoint at {path}")
    return path


@dataclass
class TrainResult:
    returncode: int
    seconds: float
    log_path: str
    steps: dict[int, dict[str, float]]


_STEP = re.compile(r"step:(\d+) - ")


def _progress(line: str, total: int, start: float) -> str | None:
    match = _STEP.search(line)
    if match is None:
        return None
    metrics = parse_step_metrics(line).get(int(match.group(1)), {})
    parts = [f"step {match.group(1)}/{total}"]
    for key, label in (("critic/score/mean", "reward"), ("timing_s/step", "s/step"),
                       ("resrl/neg_weight_mean", "resrl w-")):
        if key in metrics:
            parts.append(f"{label} {metrics[key]:.3f}")
    parts.append(f"{time.time() - start:.0f} s")
    return "  ".join(parts)


def train(overrides: list[str], run_dir, total_steps: int, timeout: float = 3600, echo=print,
          verbose: bool = False) -> TrainResult:
    """Run ``main_ppo`` on CPU; its whole output goes to ``run_dir/train.log``, one progress line per step to
    ``echo`` (everything with ``verbose``). The process group is killed when it ends or overruns. Checkpoints of
    an earlier run in ``run_dir/ckpt`` are removed first (the run starts from the starting policy)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(run_dir / "ckpt", ignore_errors=True)
    log_path = run_dir / "train.log"
    command = cpu_main_ppo_command(overrides)
    start = time.time()
    lines = []
    with open(log_path, "w") as log:
        log.write("+ " + " ".join(command) + "\n")
        proc = subprocess.Popen(command, cwd=run_dir, env=cpu_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True, bufsize=1)
        try:
            for line in proc.stdout:
                log.write(line)
                lines.append(line)
                if verbose:
                    echo(line.rstrip())
                else:
                    report = _progress(line, total_steps, start)
                    if report:
                        echo(f"[demo rl] {report}")
                if time.time() - start > timeout:
                    echo(f"[demo rl] killed after {timeout} s")
                    break
            proc.wait(timeout=max(1, timeout - (time.time() - start)))
        except subprocess.TimeoutExpired:
            pass
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    output = "".join(lines)
    return TrainResult(proc.returncode, time.time() - start, str(log_path), parse_step_metrics(output))


if __name__ == "__main__":  # pragma: no cover - use recipes/quickstart.sh or benchmarks/learning.py
    sys.exit("use recipes/quickstart.sh or benchmarks/learning.py")
