#!/usr/bin/env bash
# grpo on function calling (BFCL); see common_task.sh for the environment variables.
# Extra Hydra overrides are passed through, e.g.  bash recipes/run_grpo_fc.sh trainer.total_training_steps=10
TASK=fc ADV_ESTIMATOR=grpo exec bash "$(dirname "${BASH_SOURCE[0]}")/common_task.sh" "$@"
