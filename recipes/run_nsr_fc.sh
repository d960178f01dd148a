#!/usr/bin/env bash
# nsr on function calling (BFCL); see common_task.sh for the environment variables.
# Extra Hydra overrides are passed through, e.g.  bash recipes/run_nsr_fc.sh trainer.total_training_steps=10
TASK=fc ADV_ESTIMATOR=nsr exec bash "$(dirname "${BASH_SOURCE[0]}")/common_task.sh" "$@"
