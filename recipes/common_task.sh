#!/usr/bin/env bash
# Shared body of the function-calling and code recipes (run_{resrl,grpo,nsr,w_reinforce}_{fc,code}.sh): veRL
# 0.9.1 main_ppo with the math recipes' optimiser and rollout settings, the task's reward function and veRL's
# naive reward manager. The run_* scripts set TASK (fc | code) and ADV_ESTIMATOR and exec this file. The
# settings shared with the math recipes and the command itself are in _main_ppo.sh.
#
# Every setting is an environment variable; extra Hydra overrides are passed through ("$@", last wins).
# DRY_RUN=1 prints the final command instead of running it.
#
#   MODEL_PATH (Qwen/Qwen3-4B)   DATA_DIR (~/data/resrl_<task>)   TRAIN_FILE / VAL_FILE (DATA_DIR/{train,test}.parquet)
#   TRAIN_BATCH_SIZE (256 prompts)   N_ROLLOUTS (4 per prompt)   PPO_MINI_BATCH_SIZE (64 prompts)
#   MICRO_BATCH_SIZE_PER_GPU (4)   LOGPROB_MICRO_BATCH_SIZE_PER_GPU (8)
#   LR (1e-6)   LR_WARMUP_STEPS (10)   WEIGHT_DECAY (0.1)   TOTAL_EPOCHS (1)
#   MAX_PROMPT_LENGTH (fc 4096, code 2048)   MAX_RESPONSE_LENGTH (fc 1024, code 4096)
#   N_GPUS (8 per node)   NNODES (1)   ROLLOUT_TP_SIZE (1)   ROLLOUT_NAME (vllm)   GPU_MEMORY_UTILIZATION (0.6)
#   VAL_TEMPERATURE (0.6)   VAL_TOP_P (0.95)   VAL_N (1)   TEST_FREQ (10)   SAVE_FREQ (50)
#   REWARD_WORKERS (8 reward manager workers; code runs every program in a sandbox, see reward_fns/sandbox.py)
#   fc:   REWARD_STYLE (binary: 1/0; signed: +1/-1)
#   code: CODE_CONTINUOUS (False: 1 when every test passes; True: passed fraction)   CODE_TIMEOUT_S (10 per run)
#         CODE_MAX_TESTS (unset: every test; N: the first N tests of each problem, one sandboxed run per stdin test)
#   W_REINFORCE_LAMBDA (0.1; w_reinforce only)
#   PROJECT_NAME (resrl_<task>)   EXPERIMENT_NAME (<model>_<estimator>)   OUTPUT_DIR (./outputs)
#   LOGGER ([console]; e.g. [console,wandb])   PYTHON (python3)
set -euo pipefail

: "${TASK:?set by run_<estimator>_<task>.sh}"
: "${ADV_ESTIMATOR:?set by run_<estimator>_<task>.sh}"
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

case "$TASK" in
    fc)
        REWARD_FILE="$REPO_DIR/reward_fns/function_call_reward.py"
        DEFAULT_PROMPT_LENGTH=4096
        DEFAULT_RESPONSE_LENGTH=1024
        ;;
    code)
        REWARD_FILE="$REPO_DIR/reward_fns/code_reward.py"
        DEFAULT_PROMPT_LENGTH=2048
        DEFAULT_RESPONSE_LENGTH=4096
        ;;
    *)
        echo "TASK must be fc or code, got '$TASK'" >&2
        exit 2
        ;;
esac

DATA_DIR=${DATA_DIR:-$HOME/data/resrl_$TASK}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-$DEFAULT_PROMPT_LENGTH}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-$DEFAULT_RESPONSE_LENGTH}
PROJECT_NAME=${PROJECT_NAME:-resrl_$TASK}
REWARD_WORKERS=${REWARD_WORKERS:-8}

REWARD_STYLE=${REWARD_STYLE:-binary}
CODE_CONTINUOUS=${CODE_CONTINUOUS:-False}
CODE_TIMEOUT_S=${CODE_TIMEOUT_S:-10}
CODE_MAX_TESTS=${CODE_MAX_TESTS:-}

reward_overrides=(
    reward.reward_manager.name=naive
    reward.num_workers="$REWARD_WORKERS"
    reward.custom_reward_function.path="$REWARD_FILE"
    reward.custom_reward_function.name=compute_score
)
if [ "$TASK" = "fc" ]; then
    reward_overrides+=("+reward.custom_reward_function.reward_kwargs.reward_style=$REWARD_STYLE")
else
    reward_overrides+=("+reward.custom_reward_function.reward_kwargs.continuous=$CODE_CONTINUOUS"
                       "+reward.custom_reward_function.reward_kwargs.timeout_s=$CODE_TIMEOUT_S")
    if [ -n "$CODE_MAX_TESTS" ]; then
        reward_overrides+=("+reward.custom_reward_function.reward_kwargs.max_tests=$CODE_MAX_TESTS")
    fi
fi

source "$REPO_DIR/recipes/_main_ppo.sh"
run_main_ppo "$@"
