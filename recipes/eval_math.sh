#!/usr/bin/env bash
# Evaluate a model the paper's way: N_SAMPLES responses per problem with vLLM (T=0.6, top-p 0.95, up to 8192
# tokens) through veRL's main_generation_server, then Avg@N and pass@k with `python -m verl_resrl.evaluate`.
# N_SAMPLES=16 gives Avg@16; N_SAMPLES=128 gives pass@1..128.
#
#   MODEL_PATH (required: a HF model dir, e.g. a merged checkpoint)   EVAL_FILE (~/data/resrl_math/test.parquet)
#   RUN_NAME (basename of MODEL_PATH)   OUTPUT_DIR (./eval_outputs)   N_SAMPLES (16)
#   TEMPERATURE (0.6)   TOP_P (0.95)   MAX_RESPONSE_LENGTH (8192)   MAX_PROMPT_LENGTH (2048)
#   N_GPUS (8)   NNODES (1)   ROLLOUT_TP_SIZE (1)   GPU_MEMORY_UTILIZATION (0.85)   PYTHON (python3)
#   COMPARE_WITH (space-separated earlier generation files, evaluated alongside for one table/plot)
#   REWARD_FN (file defining compute_score for the scoring step; default: verl_resrl.evaluate's math reward)
# Extra Hydra overrides for the generation step are passed through ("$@"). DRY_RUN=1 prints both commands.
set -euo pipefail

MODEL_PATH=${MODEL_PATH:?set MODEL_PATH to the model to evaluate}
EVAL_FILE=${EVAL_FILE:-$HOME/data/resrl_math/test.parquet}
RUN_NAME=${RUN_NAME:-$(basename "$MODEL_PATH")}
OUTPUT_DIR=${OUTPUT_DIR:-$PWD/eval_outputs}
N_SAMPLES=${N_SAMPLES:-16}
TEMPERATURE=${TEMPERATURE:-0.6}
TOP_P=${TOP_P:-0.95}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8192}
N_GPUS=${N_GPUS:-8}
NNODES=${NNODES:-1}
ROLLOUT_TP_SIZE=${ROLLOUT_TP_SIZE:-1}
GPU_MEMORY_UTILIZATION=${GPU_MEMORY_UTILIZATION:-0.85}
PYTHON=${PYTHON:-python3}
COMPARE_WITH=${COMPARE_WITH:-}
REWARD_FN=${REWARD_FN:-}

GENERATIONS="$OUTPUT_DIR/generations/${RUN_NAME}_n${N_SAMPLES}.parquet"
MAX_MODEL_LEN=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))

generate=(
    "$PYTHON" -m verl.trainer.main_generation_server
    data.train_files="$EVAL_FILE"
    +data.output_path="$GENERATIONS"
    data.max_prompt_length="$MAX_PROMPT_LENGTH"
    data.max_response_length="$MAX_RESPONSE_LENGTH"
    actor_rollout_ref.model.path="$MODEL_PATH"
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.n="$N_SAMPLES"
    actor_rollout_ref.rollout.temperature="$TEMPERATURE"
    actor_rollout_ref.rollout.top_p="$TOP_P"
    actor_rollout_ref.rollout.prompt_length="$MAX_PROMPT_LENGTH"
    actor_rollout_ref.rollout.response_length="$MAX_RESPONSE_LENGTH"
    actor_rollout_ref.rollout.max_model_len="$MAX_MODEL_LEN"
    actor_rollout_ref.rollout.max_num_batched_tokens="$MAX_MODEL_LEN"
    actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP_SIZE"
    actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEMORY_UTILIZATION"
    trainer.n_gpus_per_node="$N_GPUS"
    trainer.nnodes="$NNODES"
    "$@"
)
read -r -a earlier <<<"$COMPARE_WITH"
reward_args=()
if [ -n "$REWARD_FN" ]; then
    reward_args=(--reward-fn "$REWARD_FN")
fi
evaluate=("$PYTHON" -m verl_resrl.evaluate "${earlier[@]}" "$GENERATIONS" --out-dir "$OUTPUT_DIR/report"
          "${reward_args[@]}")

if [ "${DRY_RUN:-0}" = "1" ]; then
    printf '%q ' "${generate[@]}"; echo
    printf '%q ' "${evaluate[@]}"; echo
    exit 0
fi
"${generate[@]}"
"${evaluate[@]}"
