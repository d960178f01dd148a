#!/usr/bin/env bash
# Shared body of the math recipes (run_{resrl,grpo,nsr,w_reinforce}_math.sh): veRL 0.9.1 main_ppo with the
# paper's settings. The run_* scripts set ADV_ESTIMATOR and exec this file; nothing else differs. The settings
# shared with the other tasks' recipes and the command itself are in _main_ppo.sh.
#
# Every setting below is an environment variable with the paper-aligned default; extra Hydra overrides are
# passed through ("$@", last wins). DRY_RUN=1 prints the final command instead of running it.
#
#   MODEL_PATH (Qwen/Qwen3-4B)   DATA_DIR (~/data/resrl_math)   TRAIN_FILE / VAL_FILE (DATA_DIR/{train,test}.parquet)
#   TRAIN_BATCH_SIZE (256 prompts)   N_ROLLOUTS (4 per prompt)   PPO_MINI_BATCH_SIZE (64 prompts)
#   MICRO_BATCH_SIZE_PER_GPU (4)   LOGPROB_MICRO_BATCH_SIZE_PER_GPU (8)
#   LR (1e-6)   LR_WARMUP_STEPS (10)   WEIGHT_DECAY (0.1)   TOTAL_EPOCHS (1)
#   MAX_PROMPT_LENGTH (2048)   MAX_RESPONSE_LENGTH (4096)
#   N_GPUS (8 per node)   NNODES (1)   ROLLOUT_TP_SIZE (1)   ROLLOUT_NAME (vllm)   GPU_MEMORY_UTILIZATION (0.6)
#   VAL_TEMPERATURE (0.6)   VAL_TOP_P (0.95)   VAL_N (1)   TEST_FREQ (10)   SAVE_FREQ (50)
#   REWARD_STYLE (binary: 1/0; signed: +1/-1)
#   LENGTH_SCALE_START (3500 at 4096-token responses)   LENGTH_SCALE_MAX_LEN (MAX_RESPONSE_LENGTH)
#   LENGTH_SCALE_END (0.7)   W_REINFORCE_LAMBDA (0.1; w_reinforce only)
#   PROJECT_NAME (resrl_math)   EXPERIMENT_NAME (<model>_<estimator>)   OUTPUT_DIR (./outputs)
#   LOGGER ([console]; e.g. [console,wandb])   PYTHON (python3)
set -euo pipefail

: "${ADV_ESTIMATOR:?set by run_<estimator>_math.sh}"
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

DATA_DIR=${DATA_DIR:-$HOME/data/resrl_math}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-4096}
PROJECT_NAME=${PROJECT_NAME:-resrl_math}

REWARD_STYLE=${REWARD_STYLE:-binary}
LENGTH_SCALE_MAX_LEN=${LENGTH_SCALE_MAX_LEN:-$MAX_RESPONSE_LENGTH}
LENGTH_SCALE_START=${LENGTH_SCALE_START:-$((LENGTH_SCALE_MAX_LEN * 3500 / 4096))}
LENGTH_SCALE_END=${LENGTH_SCALE_END:-0.7}

reward_overrides=(
    reward.reward_manager.name=length_scaled
    reward.custom_reward_function.path="$REPO_DIR/reward_fns/math_reward.py"
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.reward_style="$REWARD_STYLE"
    +reward.reward_kwargs.length_scale.start="$LENGTH_SCALE_START"
    +reward.reward_kwargs.length_scale.max_len="$LENGTH_SCALE_MAX_LEN"
    +reward.reward_kwargs.length_scale.end_scale="$LENGTH_SCALE_END"
)

source "$REPO_DIR/recipes/_main_ppo.sh"
run_main_ppo "$@"
