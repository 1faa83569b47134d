#!/usr/bin/env bash
# One script for a GPU machine. Installs nothing: it needs this checkout and a Python with torch
# (CUDA) and open_clip importable (the project's .venv, or a python given as $PYTHON).
# Prints frames/s and MFU of the torch backend on ViT-B-16 (35.1 GFLOP per 224px image) at
# fp32/fp16/bf16, eager and torch.compile, batch 64..512; then text encoding (PUT /vocab) CPU vs GPU.
#   bash bench/gpu_check.sh [--batches 64 128 256 512] [--seconds 5]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true
PYTHONPATH=. exec "$PYTHON" bench/gpu_throughput.py "$@"
