#!/usr/bin/env bash
# Sourced by common_math.sh and common_task.sh, never run on its own: the settings every training recipe shares
# (model, batch sizes, optimiser, rollout, validation, trainer) and the main_ppo command built from them.
#
# The caller sets ADV_ESTIMATOR, DATA_DIR, PROJECT_NAME, MAX_PROMPT_LENGTH and MAX_RESPONSE_LENGTH (its own
# defaults) and the array reward_overrides (its reward manager and reward function), then calls
# run_main_ppo "$@". Every variable below keeps a value the caller's environment already gives it.
#
#   DEVICE (gpu; cpu: veRL's real main_ppo on the package's CPU backend, verl_resrl/cpu: its environment
#           variables and Hydra overrides -- FSDP2 over gloo, the hf rollout, float32, N_GPUS logical GPUs --
#           are added before the caller's overrides)
#   ROLLOUT_TEMPERATURE (1.0)   USE_REMOVE_PADDING (True)   GRADIENT_CHECKPOINTING (True)
#   TOTAL_TRAINING_STEPS (unset: TOTAL_EPOCHS decides)   VAL_BEFORE_TRAIN (True)   SEED (unset: veRL's data shuffling seed)

MODEL_PATH=${MODEL_PATH:-Qwen/Qwen3-4B}
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
W_REINFORCE_LAMBDA=${W_REINFORCE_LAMBDA:-0.1}

EXPERIMENT_NAME=${EXPERIMENT_NAME:-$(basename "$MODEL_PATH")_${ADV_ESTIMATOR}}
OUTPUT_DIR=${OUTPUT_DIR:-$PWD/outputs}
LOGGER=${LOGGER:-[console]}
PYTHON=${PYTHON:-python3}

DEVICE=${DEVICE:-gpu}
ROLLOUT_TEMPERATURE=${ROLLOUT_TEMPERATURE:-1.0}
USE_REMOVE_PADDING=${USE_REMOVE_PADDING:-True}
GRADIENT_CHECKPOINTING=${GRADIENT_CHECKPOINTING:-True}
VAL_BEFORE_TRAIN=${VAL_BEFORE_TRAIN:-True}

# DEVICE=cpu: export the CPU backend's environment (values already set are kept) and fill device_overrides.
device_overrides=()
setup_device() {
    case "$DEVICE" in
        gpu) ;;
        cpu)
            eval "$("$PYTHON" -c 'import os, shlex
from verl_resrl.cpu.launch import cpu_env
for key, value in cpu_env().items():
    if os.environ.get(key) != value:
        print(f"export {key}={shlex.quote(value)}")')"
            mapfile -t device_overrides < <("$PYTHON" -c "from verl_resrl.cpu.launch import cpu_overrides
print('\n'.join(cpu_overrides($N_GPUS)))")
            [ "${#device_overrides[@]}" -gt 0 ] || { echo "DEVICE=cpu: verl_resrl.cpu is not importable with $PYTHON" >&2; exit 1; }
            ;;
        *) echo "DEVICE must be gpu or cpu, got '$DEVICE'" >&2; exit 1 ;;
    esac
}

run_main_ppo() {
    local estimator_overrides=()
    if [ "$ADV_ESTIMATOR" = "w_reinforce" ]; then
        estimator_overrides+=("+algorithm.w_reinforce_lambda=$W_REINFORCE_LAMBDA")
    fi
    local trainer_overrides=()
    if [ -n "${TOTAL_TRAINING_STEPS:-}" ]; then
        trainer_overrides+=("trainer.total_training_steps=$TOTAL_TRAINING_STEPS")
    fi
    if [ -n "${SEED:-}" ]; then
        trainer_overrides+=("data.seed=$SEED")
    fi
    setup_device
    local command=(
        "$PYTHON" -m verl.trainer.main_ppo
        algorithm.adv_estimator="$ADV_ESTIMATOR"
        algorithm.use_kl_in_reward=False
        "${estimator_overrides[@]}"
        data.train_files="$TRAIN_FILE"
        data.val_files="$VAL_FILE"
        data.train_batch_size="$TRAIN_BATCH_SIZE"
        data.max_prompt_length="$MAX_PROMPT_LENGTH"
        data.max_response_length="$MAX_RESPONSE_LENGTH"
        data.filter_overlong_prompts=True
        data.truncation=error
        actor_rollout_ref.model.path="$MODEL_PATH"
        actor_rollout_ref.model.use_remove_padding="$USE_REMOVE_PADDING"
        actor_rollout_ref.model.enable_gradient_checkpointing="$GRADIENT_CHECKPOINTING"
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
        actor_rollout_ref.rollout.temperature="$ROLLOUT_TEMPERATURE"
        actor_rollout_ref.rollout.val_kwargs.do_sample=True
        actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE"
        actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
        actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
        "${reward_overrides[@]}"
        trainer.project_name="$PROJECT_NAME"
        trainer.experiment_name="$EXPERIMENT_NAME"
        trainer.default_local_dir="$OUTPUT_DIR/$EXPERIMENT_NAME"
        trainer.logger="$LOGGER"
        trainer.n_gpus_per_node="$N_GPUS"
        trainer.nnodes="$NNODES"
        trainer.total_epochs="$TOTAL_EPOCHS"
        trainer.val_before_train="$VAL_BEFORE_TRAIN"
        trainer.test_freq="$TEST_FREQ"
        trainer.save_freq="$SAVE_FREQ"
        "${trainer_overrides[@]}"
        "${device_overrides[@]}"
        "$@"
    )
    if [ "${DRY_RUN:-0}" = "1" ]; then
        printf '%q ' "${command[@]}"
        echo
        exit 0
    fi
    exec "${command[@]}"
}
