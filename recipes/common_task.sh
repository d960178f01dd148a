#!/usr/bin/env bash
# Shared body of the function-calling and code recipes (run_{resrl,grpo,nsr,w_reinforce}_{fc,code}.sh): veRL
# 0.9.1 main_ppo with the math recipes' optimiser and rollout settings, the task's reward function and veRL's
# naive reward manager. The run_* scripts set TASK (fc | code) and ADV_ESTIMATOR and exec this file.
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

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-4B}
DATA_DIR=${DATA_DIR:-$HOME/data/resrl_$TASK}
TRAIN_FILE=${TRAIN_FILE:-$DATA_DIR/train.parquet}
VAL_FILE=${VAL_FILE:-$DATA_DIR/test.parquet}

TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-256}
N_ROLLOUTS=${N_ROLLOUTS:-4}
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-64}
MICRO_BATCH_SIZE_PER_GPU=${MICRO_BATCH_SIZE_PER_GPU:-4}
LOGPROB_MICRO_BATCH_SIZE_PER_GPU=${LOGPROB_MICRO_BATCH_SIZE_PER_GPU:-8}
LR=${LR:-1e-6}
LR_WARMUP_STEPS=${LR_WARMUP_STEPS:-10}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-1}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-$DEFAULT_PROMPT_LENGTH}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-$DEFAULT_RESPONSE_LENGTH}

N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
ROLLOUT_TP_SIZE=${ROLLOUT_TP_SIZE:-1}
ROLLOUT_NAME=${ROLLOUT_NAME:-vllm}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.6}

VAL_TEMPERATURE=${VAL_TEMPERATURE:-0.6}
VAL_TOP_P=${VAL_TOP_P:-0.95}
VAL_N=${VAL_N:-1}
TEST_FREQ=${TEST_FREQ:-10}
SAVE_FREQ=${SAVE_FREQ:-50}
REWARD_WORKERS=${REWARD_WORKERS:-8}

REWARD_STYLE=${REWARD_STYLE:-binary}
CODE_CONTINUOUS=${CODE_CONTINUOUS:-False}
CODE_TIMEOUT_S=${CODE_TIMEOUT_S:-10}
CODE_MAX_TESTS=${CODE_MAX_TESTS:-}
W_REINFORCE_LAMBDA=${W_REINFORCE_LAMBDA:-0.1}

PROJECT_NAME=${PROJECT_NAME:-resrl_$TASK}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-$(basename "$MODEL_PATH")_${ADV_ESTIMATOR}}
OUTPUT_DIR=${OUTPUT_DIR:-$PWD/outputs}
LOGGER=${LOGGER:-[console]}
PYTHON=${PYTHON:-python3}

task_overrides=()
if [ "$TASK" = "fc" ]; then
    task_overrides+=("+reward.custom_reward_function.reward_kwargs.reward_style=$REWARD_STYLE")
else
    task_overrides+=("+reward.custom_reward_function.reward_kwargs.continuous=$CODE_CONTINUOUS"
                     "+reward.custom_reward_function.reward_kwargs.timeout_s=$CODE_TIMEOUT_S")
    if [ -n "$CODE_MAX_TESTS" ]; then
        task_overrides+=("+reward.custom_reward_function.reward_kwargs.max_tests=$CODE_MAX_TESTS")
    fi
fi
if [ "$ADV_ESTIMATOR" = "w_reinforce" ]; then
    task_overrides+=("+algorithm.w_reinforce_lambda=$W_REINFORCE_LAMBDA")
fi

command=(
    "$PYTHON" -m verl.trainer.main_ppo
    algorithm.adv_estimator="$ADV_ESTIMATOR"
    algorithm.use_kl_in_reward=False
    data.train_files="$TRAIN_FILE"
    data.val_files="$VAL_FILE"
    data.train_batch_size="$TRAIN_BATCH_SIZE"
    data.max_prompt_length="$MAX_PROMPT_LENGTH"
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    data.filter_overlong_prompts=True
    data.truncation=error
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
    actor_rollout_ref.actor.strategy=fsdp2
    actor_rollout_ref.ref.strategy=fsdp2
    actor_rollout_ref.actor.optim.lr="$LR"
    actor_rollout_ref.actor.optim.lr_warmup_steps="$LR_WARMUP_STEPS"
    actor_rollout_ref.actor.optim.weight_decay="$WEIGHT_DECAY"
    actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE"
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu="$MICRO_BATCH_SIZE_PER_GPU"
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.rollout.name="$ROLLOUT_NAME"
    actor_rollout_ref.rollout.n="$N_ROLLOUTS"
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP_SIZE"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu="$LOGPROB_MICRO_BATCH_SIZE_PER_GPU"
    actor_rollout_ref.rollout.temperature=1.0
    actor_rollout_ref.rollout.val_kwargs.do_sample=True
    actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE"
    actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
    actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
    reward.reward_manager.name=naive
    reward.num_workers="$REWARD_WORKERS"
    reward.custom_reward_function.path="$REWARD_FILE"
    reward.custom_reward_function.name=compute_score
    "${task_overrides[@]}"
    trainer.project_name="$PROJECT_NAME"
    trainer.experiment_name="$EXPERIMENT_NAME"
    trainer.default_local_dir="$OUTPUT_DIR/$EXPERIMENT_NAME"
    trainer.logger="$LOGGER"
    trainer.n_gpus_per_node="$N_GPUS"
    trainer.nnodes="$NNODES"
    trainer.total_epochs="$TOTAL_EPOCHS"
    trainer.val_before_train=True
    trainer.test_freq="$TEST_FREQ"
    trainer.save_freq="$SAVE_FREQ"
    "$@"
)

if [ "${DRY_RUN:-0}" = "1" ]; then
    printf '%q ' "${command[@]}"
    echo
    exit 0
fi
exec "${command[@]}"
