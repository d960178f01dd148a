#!/usr/bin/env bash
# Quickstart: a CPU demo that learns. Sets up .venv/ (as tests/run.sh does), takes the starting policy shipped with
# the package (a 1.9 M-parameter Qwen2, hidden size 256, warmed up on multi-term arithmetic with a short chain of
# thought; its sha256 is checked, so every machine starts from the same weights), trains it with ResRL through
# veRL's real main_ppo on CPU, and prints pass@k on held-out problems before and after. It trains
# with the learning study's selected ResRL configuration (lr 3e-5, 4 mini-batches per step, lambda = 1.0; see
# BENCHMARKS.md section 1).
#
#   bash recipes/quickstart.sh                  # 30 ResRL steps
#   bash recipes/quickstart.sh --pos-weight 0.1 # the paper's lambda instead
#   STEPS=10 bash recipes/quickstart.sh         # shorter
#   ESTIMATOR=grpo bash recipes/quickstart.sh   # another estimator: grpo | nsr | w_reinforce | resrl
#   bash recipes/quickstart.sh --seed 1         # another RL seed (the evaluation's seed stays fixed)
#
# Variables: STEPS (default 30), ESTIMATOR (resrl), OUT_DIR (outputs/quickstart), VERBOSE=1 (veRL's whole
# output instead of one line per step), TORCH_SPEC / PYTHON (see recipes/_venv.sh). Extra arguments go to
# python -m verl_resrl.demo.quickstart (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

start=$(date +%s)
echo "== setup: .venv (torch CPU build + verl-resrl, first run only)"
# shellcheck source=recipes/_venv.sh
source recipes/_venv.sh
VENV_EXTRAS="[demo]" setup_venv
echo "   ready in $(( $(date +%s) - start )) s"

args=()
[ "${VERBOSE:-0}" = "1" ] && args+=(--verbose)
"$VENV_PY" -u -m verl_resrl.demo.quickstart "${args[@]}" "$@"
echo "quickstart finished in $(( $(date +%s) - start )) s"
