"""recipes/*.sh: every recipe's final command composes against veRL 0.9.1's own Hydra config (no launch)."""

import importlib.util
import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
TRAIN_RECIPES = {"run_resrl_math.sh": "resrl", "run_grpo_math.sh": "grpo", "run_nsr_math.sh": "nsr",
                 "run_w_reinforce_math.sh": "w_reinforce"}
VERL_CONFIG_DIR = str(Path(importlib.util.find_spec("verl").submodule_search_locations[0]) / "trainer" / "config")


def dry_run(script, *args, **env):
    """The command lines a recipe prints with DRY_RUN=1, each split into argv."""
    clean = {k: v for k, v in os.environ.items() if not k.isupper() or k in ("PATH", "HOME")}
    result = subprocess.run(["bash", str(RECIPES / script), *args], capture_output=True, text=True, timeout=30,
                            env={**clean, "DRY_RUN": "1", **env})
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


def overrides_after(argv, module):
    assert argv[1:3] == ["-m", module], argv[:3]
    return argv[3:]


def compose(overrides):
    """veRL's ``ppo_trainer`` config with ``overrides``; a misspelled key raises."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=VERL_CONFIG_DIR, version_base=None):
        return hydra_compose(config_name="ppo_trainer", overrides=overrides)


@pytest.mark.parametrize("script, estimator", sorted(TRAIN_RECIPES.items()))
def test_training_recipe_composes_with_paper_defaults(script, estimator):
    (argv,) = dry_run(script)
    cfg = compose(overrides_after(argv, "verl.trainer.main_ppo"))
    assert cfg.algorithm.adv_estimator == estimator
    assert cfg.algorithm.use_kl_in_reward is False
    actor = cfg.actor_rollout_ref.actor
    assert (actor.optim.lr, actor.optim.lr_warmup_steps, actor.optim.weight_decay) == (1e-6, 10, 0.1)
    assert actor.ppo_mini_batch_size == 64 and actor.use_kl_loss is False and actor.entropy_coeff == 0
    assert actor.strategy == "fsdp2" and cfg.actor_rollout_ref.ref.strategy == "fsdp2"  # veRL's default is FSDP1
    assert (cfg.data.train_batch_size, cfg.actor_rollout_ref.rollout.n) == (256, 4)
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == (2048, 4096)
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen3-4B"
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.actor_rollout_ref.rollout.val_kwargs.temperature == 0.6
    assert cfg.trainer.total_epochs == 1
    assert cfg.reward.reward_manager.name == "length_scaled"
    assert Path(cfg.reward.custom_reward_function.path) == REPO / "reward_fns" / "math_reward.py"
    assert cfg.reward.custom_reward_function.reward_kwargs.reward_style == "binary"

    from verl_resrl.length_scaled_reward import LengthScale

    assert LengthScale.from_reward_config(cfg.reward) == LengthScale(3500, 4096, 0.7)
    if estimator == "w_reinforce":
        from verl_resrl.baselines import w_reinforce_lambda

        assert w_reinforce_lambda(cfg.algorithm) == 0.1
    else:
        assert "w_reinforce_lambda" not in cfg.algorithm


def test_recipes_differ_only_in_the_estimator():
    commands = {script: dry_run(script)[0] for script in TRAIN_RECIPES}
    stripped = {tuple(a for a in argv if not a.startswith(("algorithm.adv_estimator=", "trainer.experiment_name=",
                                                           "trainer.default_local_dir=", "+algorithm.w_reinforce")))
                for argv in commands.values()}
    assert len(stripped) == 1


def test_environment_and_extra_overrides_pass_through():
    (argv,) = dry_run("run_resrl_math.sh", "trainer.total_training_steps=2", "+algorithm.resrl.rank=8",
                      MODEL_PATH="/models/tiny", N_GPUS="2", ROLLOUT_TP_SIZE="2", TRAIN_BATCH_SIZE="8",
                      MAX_RESPONSE_LENGTH="64", OUTPUT_DIR="/tmp/out", EXPERIMENT_NAME="smoke",
                      REWARD_STYLE="signed", PYTHON="/opt/py")
    assert argv[0] == "/opt/py"
    cfg = compose(overrides_after(argv, "verl.trainer.main_ppo"))
    assert cfg.actor_rollout_ref.model.path == "/models/tiny"
    assert (cfg.trainer.n_gpus_per_node, cfg.actor_rollout_ref.rollout.tensor_model_parallel_size) == (2, 2)
    assert cfg.data.train_batch_size == 8 and cfg.trainer.total_training_steps == 2
    assert cfg.algorithm.resrl.rank == 8
    assert cfg.trainer.default_local_dir == "/tmp/out/smoke"
    assert cfg.reward.custom_reward_function.reward_kwargs.reward_style == "signed"
    assert dict(cfg.reward.reward_kwargs.length_scale) == {"start": 54, "max_len": 64, "end_scale": 0.7}


def test_misspelled_override_fails_composition():
    (argv,) = dry_run("run_grpo_math.sh", "trainer.total_epoch=2")
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="total_epoch"):
        compose(overrides_after(argv, "verl.trainer.main_ppo"))


def test_eval_recipe_composes_and_calls_evaluate():
    generate, evaluate = dry_run("eval_math.sh", MODEL_PATH="/models/resrl", N_SAMPLES="128",
                                 OUTPUT_DIR="/tmp/ev", COMPARE_WITH="/tmp/grpo.parquet")
    cfg = compose(overrides_after(generate, "verl.trainer.main_generation_server"))
    rollout = cfg.actor_rollout_ref.rollout
    assert (rollout.n, rollout.temperature, rollout.top_p, rollout.response_length) == (128, 0.6, 0.95, 8192)
    assert rollout.name == "vllm"
    assert cfg.data.output_path == "/tmp/ev/generations/resrl_n128.parquet"
    assert evaluate[1:3] == ["-m", "verl_resrl.evaluate"]
    assert evaluate[3:] == ["/tmp/grpo.parquet", "/tmp/ev/generations/resrl_n128.parquet", "--out-dir",
                            "/tmp/ev/report"]


def test_eval_recipe_requires_a_model():
    result = subprocess.run(["bash", str(RECIPES / "eval_math.sh")], capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DRY_RUN": "1"})
    assert result.returncode != 0 and "MODEL_PATH" in result.stderr


# --- function-calling and code recipes (common_task.sh) ------------------------------------------------------

TASK_RECIPES = {f"run_{estimator}_{task}.sh": (task, estimator) for task in ("fc", "code")
                for estimator in ("resrl", "grpo", "nsr", "w_reinforce")}
TASK_DEFAULTS = {"fc": ("function_call_reward.py", 4096, 1024), "code": ("code_reward.py", 2048, 4096)}


@pytest.mark.parametrize("script, task_estimator", sorted(TASK_RECIPES.items()))
def test_task_recipe_composes_with_its_reward(script, task_estimator):
    task, estimator = task_estimator
    (argv,) = dry_run(script)
    cfg = compose(overrides_after(argv, "verl.trainer.main_ppo"))
    reward_file, prompt_length, response_length = TASK_DEFAULTS[task]
    assert cfg.algorithm.adv_estimator == estimator
    assert Path(cfg.reward.custom_reward_function.path) == REPO / "reward_fns" / reward_file
    assert cfg.reward.custom_reward_function.name == "compute_score"
    assert cfg.reward.reward_manager.name == "naive"
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == (prompt_length, response_length)
    assert cfg.data.train_files == str(Path.home() / "data" / f"resrl_{task}" / "train.parquet")
    actor = cfg.actor_rollout_ref.actor
    assert (actor.optim.lr, actor.ppo_mini_batch_size, actor.strategy) == (1e-6, 64, "fsdp2")
    assert cfg.actor_rollout_ref.ref.strategy == "fsdp2"
    reward_kwargs = dict(cfg.reward.custom_reward_function.reward_kwargs)
    assert reward_kwargs == ({"reward_style": "binary"} if task == "fc" else {"continuous": False, "timeout_s": 10})
    assert ("w_reinforce_lambda" in cfg.algorithm) == (estimator == "w_reinforce")


@pytest.mark.parametrize("task", ["fc", "code"])
def test_task_recipes_differ_only_in_the_estimator(task):
    commands = [dry_run(script)[0] for script, (t, _) in TASK_RECIPES.items() if t == task]
    stripped = {tuple(a for a in argv if not a.startswith(("algorithm.adv_estimator=", "trainer.experiment_name=",
                                                           "trainer.default_local_dir=", "+algorithm.w_reinforce")))
                for argv in commands}
    assert len(stripped) == 1


def test_task_recipe_settings_pass_through():
    (argv,) = dry_run("run_resrl_code.sh", "trainer.total_training_steps=2", CODE_CONTINUOUS="True",
                      CODE_TIMEOUT_S="3", MAX_RESPONSE_LENGTH="64", DATA_DIR="/data/c", REWARD_WORKERS="1",
                      CODE_MAX_TESTS="20")
    cfg = compose(overrides_after(argv, "verl.trainer.main_ppo"))
    assert dict(cfg.reward.custom_reward_function.reward_kwargs) == {"continuous": True, "timeout_s": 3,
                                                                      "max_tests": 20}
    assert cfg.data.max_response_length == 64 and cfg.data.val_files == "/data/c/test.parquet"
    assert cfg.reward.num_workers == 1 and cfg.trainer.total_training_steps == 2
    (argv,) = dry_run("run_grpo_fc.sh", REWARD_STYLE="signed")
    cfg = compose(overrides_after(argv, "verl.trainer.main_ppo"))
    assert cfg.reward.custom_reward_function.reward_kwargs.reward_style == "signed"


def test_task_body_refuses_an_unknown_task():
    result = subprocess.run(["bash", str(RECIPES / "common_task.sh")], capture_output=True, text=True, timeout=30,
                            env={"PATH": os.environ["PATH"], "DRY_RUN": "1", "TASK": "chess", "ADV_ESTIMATOR": "grpo"})
    assert result.returncode == 2 and "TASK must be fc or code" in result.stderr


@pytest.mark.parametrize("task, reward_file, lengths", [("fc", "function_call_reward.py", (4096, 1024)),
                                                         ("code", "code_reward.py", (2048, 4096))])
def test_task_eval_recipes_score_with_their_reward(task, reward_file, lengths):
    generate, evaluate = dry_run(f"eval_{task}.sh", MODEL_PATH="/models/m", OUTPUT_DIR="/tmp/ev")
    cfg = compose(overrides_after(generate, "verl.trainer.main_generation_server"))
    assert cfg.data.train_files == str(Path.home() / "data" / f"resrl_{task}" / "test.parquet")
    assert (cfg.data.max_prompt_length, cfg.data.max_response_length) == lengths
    assert evaluate[1:3] == ["-m", "verl_resrl.evaluate"]
    assert evaluate[-2:] == ["--reward-fn", str(REPO / "reward_fns" / reward_file)]
