#!/usr/bin/env bash
# On a machine with a CUDA GPU, in one run of a few minutes: build the fused ops with their CUDA kernels, run the
# GPU parity tests, check the kernels with compute-sanitizer memcheck, and time them (bandwidth vs a measured
# device-to-device copy; CUDA-graph replay vs eager launches of the torch backend). Everything printed also goes
# to benchmarks/results/gpu-<card>.txt; commit that file.
#     bash benchmarks/gpu_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null || { echo "gpu_suite.sh needs an NVIDIA GPU (nvidia-smi not found)" >&2; exit 1; }
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA GPU: install a CUDA build of torch')"
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr -cs 'A-Za-z0-9' '-' | sed 's/-$//')
out=benchmarks/results/gpu-$card.txt
mkdir -p benchmarks/results
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
{
  echo "== $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  echo "== latentforge build-ops"
  latentforge build-ops || status=1
  echo "== GPU tests (parity, opcheck, CUDA graphs) and the CPU op tests beside them"
  python -m pytest -q -p no:cacheprovider tests/test_ops.py tests/test_torch_backend.py -rs || status=1
  echo "== compute-sanitizer --tool memcheck"
  if command -v compute-sanitizer >/dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/gpu_ops.py memcheck || status=1
  else
    echo "compute-sanitizer not found (it ships with the CUDA toolkit): memcheck NOT run"; status=1
  fi
  echo "== timings"
  python benchmarks/gpu_ops.py bench || status=1
  echo "== exit status $status"
} 2>&1 | tee "$log" || true   # a failed step is in the log and the exit status below
cp "$log" "$out"
echo "wrote $out"
grep -q "== exit status 0" "$out"
