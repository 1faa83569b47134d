#!/usr/bin/env bash
# Run here (with network), before a GPU run: downloads bench/gpu_requirements.txt as CPython 3.12
# Linux x86_64 wheels into bench/wheels (ignored by git, about 40 MB), for bench/gpu_check.sh on a
# machine with no network. Give the GPU machine's torchvision version when it has none:
#   bash bench/gpu_prepare.sh [--torchvision 0.29.1]
set -euo pipefail
cd "$(dirname "$0")/.."
extra=()
if [ "${1:-}" = "--torchvision" ]; then extra=("torchvision==$2"); fi
rm -rf bench/wheels && mkdir -p bench/wheels
pip download --quiet --no-deps --only-binary :all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -r bench/gpu_requirements.txt "${extra[@]}" -d bench/wheels
du -sh bench/wheels
