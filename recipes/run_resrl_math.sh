#!/usr/bin/env bash
# resrl on DAPO-Math-17k with the paper's settings; see common_math.sh for the environment variables.
# Extra Hydra overrides are passed through, e.g.  bash recipes/run_resrl_math.sh trainer.total_training_steps=10
ADV_ESTIMATOR=resrl exec bash "$(dirname "${BASH_SOURCE[0]}")/common_math.sh" "$@"
