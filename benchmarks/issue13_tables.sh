#!/usr/bin/env bash
# Re-creates every table of issue 13 on this machine, into benchmarks/results/ (or $OUT), in one command:
#
#     bash benchmarks/issue13_tables.sh                  # ~10 min on a quiet 2-core CPU
#     VAE=run/checkpoint.safetensors bash benchmarks/issue13_tables.sh   # a default-trained VAE you already have
#     QUICK=1 OUT=/tmp/t bash benchmarks/issue13_tables.sh               # a smoke run of every step; its numbers mean nothing
#
# 1. tune + bench, shipped faces VAE (.onnx and checkpoint): tune-<cpu>-faces-vae64.md (auto / best peer per batch)
# 2. the same for a pytorch/examples-sized DCGAN-64 generator (.onnx and checkpoint): tune-<cpu>-dcgan64.md
# 3. load + first image with a record, per kind of winner: load-<cpu>.md
# 4. the real-time filter: a VAE trained with the CLI defaults (`train vae --image-size 64 --latent-dim 32`; a
#    short run unless $VAE is given: speed does not depend on the weights), the faces VAE and a 256 px VAE, each
#    through Filter(load(ckpt)) after `tune`, against a plain onnxruntime encoder + decoder: filter-<cpu>.md
# Run it on a quiet machine (check `uptime`): each table notes the 1-min load average at its start and end.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
if [ -n "${QUICK:-}" ]; then TUNE_S=4; MIN_TIME=0.2; FILTER_S=0.3; STEPS=5; REPEATS=1
else TUNE_S=15; MIN_TIME=0.6; FILTER_S=2; STEPS=50; REPEATS=3; fi
CPU=$(python -c "from latentforge.runtime.machine import hardware; print(hardware().kind)")   # e.g. amd-epyc-avx2
mkdir -p "$OUT"
step() { echo "[$(date -u +%H:%M:%S), ${SECONDS} s, load $(cut -d' ' -f1 /proc/loadavg)] $*"; }
step "start"
python benchmarks/tune_bench.py --out "$OUT" --seconds "$TUNE_S" --min-time "$MIN_TIME" --no-compile
step "faces VAE table done"
python benchmarks/tune_bench.py --dcgan64 --out "$OUT" --seconds "$TUNE_S" --min-time "$MIN_TIME" --no-compile
step "DCGAN-64 table done"
python benchmarks/load_bench.py --out "$OUT" --repeats "$REPEATS"
step "load table done"
VAE=${VAE:-}
if [ -z "$VAE" ]; then
  RUN=$(mktemp -d)
  trap 'rm -rf "$RUN"' EXIT
  latentforge train vae --image-size 64 --latent-dim 32 --steps "$STEPS" --out "$RUN" --no-progress \
    --sample-every 100000 >/dev/null
  VAE=$RUN/checkpoint.safetensors
fi
step "VAE ready"
python benchmarks/filter_bench.py --checkpoint "$VAE" --seconds "$FILTER_S" --out "$OUT/filter-$CPU"
step "filter table done"
echo "wrote $OUT/tune-$CPU-faces-vae64.md, tune-$CPU-dcgan64.md, load-$CPU.md, filter-$CPU.md"
