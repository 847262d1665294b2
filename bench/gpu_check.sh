#!/usr/bin/env bash
# GPU readiness in one command, under 8 minutes on an H100/H200-class machine:
#   1. the GPU-marked tests: bf16 training, FlexAttention / SDPA ALiBi and document masks
#      against the reference, cached decoding, NCCL DDP when there are 2+ GPUs;
#   2. tokens/s and MFU (against the device's dense bf16 peak, model/hardware.py) of a
#      ~1.3B BTLM at 2,048 and 8,192 tokens: one JSON line each.
#
#   bash bench/gpu_check.sh                 # PY=path/to/python to use another interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device visible to $PY (torch $("$PY" -c 'import torch; print(torch.__version__)'))" >&2
    exit 2
fi
"$PY" -c "import torch; print('devices:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], 'torch', torch.__version__)"

start=$(date +%s)
timeout 240 "$PY" -m pytest -q -m gpu -p no:cacheprovider tests/
echo "gpu tests: $(( $(date +%s) - start )) s"

timeout 300 "$PY" bench/gpu_throughput.py --model 1.3b --seq-lens 2048,8192
echo "gpu_check: done in $(( $(date +%s) - start )) s"
