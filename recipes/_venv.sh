# Sourced (bash) by recipes/quickstart.sh: create or reuse .venv/ at the repository root and install torch (CPU
# build) and verl-resrl (editable) when missing. Shared with tests/run.sh's approach; same variables:
#   TORCH_SPEC  torch requirement installed when the venv has no torch (default: the CPU build torch==2.13.0)
#   PYTHON      interpreter used to create the venv (default: python3)
#   VENV_EXTRAS pip extras of verl-resrl to install, e.g. "[test]" (default: none)
# Must be sourced from the repository root. Sets VENV_PY to the venv's python.

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV_EXTRAS=${VENV_EXTRAS:-}
VENV_LOG=${VENV_LOG:-.venv-install.log}
VENV_PY=.venv/bin/python

_venv_install() {
    if ! "$VENV_PY" -m pip install "$@" >>"$VENV_LOG" 2>&1; then
        tail -n 40 "$VENV_LOG"
        echo "[venv] pip install $* failed (full log: $VENV_LOG)" >&2
        return 1
    fi
}

setup_venv() {
    if [ ! -x "$VENV_PY" ]; then
        echo "[venv] creating .venv with $($PYTHON --version)"
        "$PYTHON" -m venv .venv || return 1
    fi
    : >"$VENV_LOG"
    if ! "$VENV_PY" -c "import torch" 2>/dev/null; then
        echo "[venv] installing $TORCH_SPEC (log: $VENV_LOG)"
        _venv_install "$TORCH_SPEC" || return 1
    fi
    if ! "$VENV_PY" -c "import verl, verl_resrl" 2>/dev/null || [ -n "$VENV_EXTRAS" ]; then
        echo "[venv] installing verl-resrl${VENV_EXTRAS} (editable; log: $VENV_LOG)"
        _venv_install -e ".${VENV_EXTRAS}" || return 1
    fi
    "$VENV_PY" -c "import torch, verl, verl_resrl; print('[venv] torch', torch.__version__, '| verl', verl.__version__, '| verl_resrl', verl_resrl.__version__)"
}
