#!/usr/bin/env bash
# grpo on DAPO-Math-17k with the paper's settings; see common_math.sh for the environment variables.
# Extra Hydra overrides are passed through, e.g.  bash recipes/run_grpo_math.sh trainer.total_training_steps=10
ADV_ESTIMATOR=grpo exec bash "$(dirname "${BASH_SOURCE[0]}")/common_math.sh" "$@"
