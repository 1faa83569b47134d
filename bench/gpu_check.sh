#!/usr/bin/env bash
# One bounded run on a GPU machine (at most GPU_CHECK_BUDGET_S seconds, 470 by default: it stops
# itself). The machine needs python with a CUDA torch (and torchvision); everything else comes from
# bench/wheels, made beforehand by bench/gpu_prepare.sh on a machine with network, and installed here
# with no network into a venv that sees the machine's torch. What it prints: bench/gpu_check.py.
#   bash bench/gpu_check.sh [--dry-run] [gpu_check.py options]
#   (--dry-run: CPU, tiny model, about a minute; tests/e2e/test_gpu_check.py runs it in CI)
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${GPU_CHECK_BUDGET_S:-470}
start=$(date +%s)
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
dry_run=false
for arg in "$@"; do [ "$arg" = "--dry-run" ] && dry_run=true; done
if ! $dry_run && compgen -G "bench/wheels/*.whl" > /dev/null; then  # the dry run tests this checkout's venv
  venv=${TMPDIR:-/tmp}/t4v-gpu-check-venv
  [ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install --quiet --no-index --no-deps bench/wheels/*.whl
  python=$venv/bin/python
  echo "installed $(ls bench/wheels/*.whl | wc -l) carried wheels into $venv"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
left=$(( budget - ($(date +%s) - start) ))
# the Python side keeps 20 s for its own cleanup; timeout stops everything at the budget regardless
PYTHONPATH=.:.pkg exec timeout --kill-after=10 "$left" "$python" bench/gpu_check.py --budget-s $(( left - 20 )) "$@"
