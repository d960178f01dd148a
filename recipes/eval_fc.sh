#!/usr/bin/env bash
# Evaluate a model on function calling (BFCL test categories; the reward reads each row's tool schemas):
# eval_math.sh's generation, then Avg@N / pass@k scored with reward_fns/function_call_reward.py. Same variables as
# eval_math.sh; defaults here: EVAL_FILE (~/data/resrl_fc/test.parquet), MAX_PROMPT_LENGTH (4096),
# MAX_RESPONSE_LENGTH (1024), REWARD_FN (reward_fns/function_call_reward.py).
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EVAL_FILE=${EVAL_FILE:-$HOME/data/resrl_fc/test.parquet} \
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-4096} MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-1024} \
REWARD_FN=${REWARD_FN:-$REPO_DIR/reward_fns/function_call_reward.py} \
    exec bash "$REPO_DIR/recipes/eval_math.sh" "$@"
