#!/usr/bin/env bash
# Evaluate a model on code (HumanEval; programs run in the sandbox):
# eval_math.sh's generation, then Avg@N / pass@k scored with reward_fns/code_reward.py. Same variables as
# eval_math.sh; defaults here: EVAL_FILE (~/data/resrl_code/test.parquet), MAX_PROMPT_LENGTH (2048),
# MAX_RESPONSE_LENGTH (4096), REWARD_FN (reward_fns/code_reward.py).
REPO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
EVAL_FILE=${EVAL_FILE:-$HOME/data/resrl_code/test.parquet} \
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048} MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-4096} \
REWARD_FN=${REWARD_FN:-$REPO_DIR/reward_fns/code_reward.py} \
    exec bash "$REPO_DIR/recipes/eval_math.sh" "$@"
