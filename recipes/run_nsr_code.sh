#!/usr/bin/env bash
# nsr on code (tests run in a sandbox); see common_task.sh for the environment variables.
# Extra Hydra overrides are passed through, e.g.  bash recipes/run_nsr_code.sh trainer.total_training_steps=10
TASK=code ADV_ESTIMATOR=nsr exec bash "$(dirname "${BASH_SOURCE[0]}")/common_task.sh" "$@"
