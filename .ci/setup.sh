#!/usr/bin/env bash
# Create ./.venv with torch first (a bare `torch` requirement would pull a multi-GB CUDA build:
# take the CPU wheel, or set TORCH_SPEC / TORCH_INDEX for a GPU machine), then lora-study + dev extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_INDEX:-}" ]; then
    .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch}" --index-url "$TORCH_INDEX"
  else
    .venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
  fi
fi
.venv/bin/python -m pip install -q -e ".[dev]"
echo "ready: $(.venv/bin/python -c 'import torch, ray, peft, mlflow, optuna; print(f"torch {torch.__version__}, ray {ray.__version__}, peft {peft.__version__}, mlflow {mlflow.__version__}, optuna {optuna.__version__}")')"
