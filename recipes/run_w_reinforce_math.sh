#!/usr/bin/env bash
# w_reinforce on DAPO-Math-17k with the paper's settings; see common_math.sh for the environment variables.
# Extra Hydra overrides are passed through, e.g.  bash recipes/run_w_reinforce_math.sh trainer.total_training_steps=10
ADV_ESTIMATOR=w_reinforce exec bash "$(dirname "${BASH_SOURCE[0]}")/common_math.sh" "$@"
