#!/usr/bin/env bash
# Device check: placement and dtype of every model-running command, fast = naive scoring in float32 and
# bfloat16, a 2-step DPO run, correlate, eval, pair-check and the peak GPU memory, on a tiny random model
# built offline (nothing but this repository is needed). Writes one JSON (default device-check.json).
#   scripts/device-check.sh                 on the CUDA GPU (dtype auto must give bfloat16); < 8 min
#   scripts/device-check.sh --cpu           the same on the CPU (float32); what the test suite runs
#   scripts/device-check.sh --out F.json    result file; --keep DIR keeps the work folder
# Python: $PYTHON, else ./.venv/bin/python, else python3. The GPU machine needs torch, transformers, peft,
# accelerate, trl, datasets, matplotlib, scipy, tqdm (carry wheels for any that are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TQDM_DISABLE=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$PY" scripts/device_check.py "$@"
