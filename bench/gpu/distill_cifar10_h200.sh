#!/usr/bin/env bash
# Fair distillation benchmark on one H200-class GPU: config/distill/bench_cifar10_gpu.yaml,
# 6 arms x 4 paired seeds as 24 parallel processes, sized for < 10 minutes (see the config).
#
#   bench/gpu/distill_cifar10_h200.sh                      # GPU run -> bench/results/distill_cifar10_gpu.*
#   bench/gpu/distill_cifar10_h200.sh --device cpu --smoke # the same path on CPU, toy size
#
# Options: --device cuda|cpu, --smoke (config/distill/bench_smoke.yaml), --out DIR (results),
# --work DIR (run folders; keep it to resume), --parallel N. Environment: PY (python with the
# requirements installed; default .venv/bin/python, else python3), VL2SPIKE_DATA_ROOT (data root
# holding cifar10.tar). Needs the proxy teacher asset and the packages of requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/../.."

DEVICE=cuda
SMOKE=0
OUT=bench/results
WORK=""
PARALLEL=()
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --smoke) SMOKE=1; shift ;;
    --out) OUT="$2"; shift 2 ;;
    --work) WORK="$2"; shift 2 ;;
    --parallel) PARALLEL=(--parallel "$2"); shift 2 ;;
    *) echo "unknown option $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if [ "$SMOKE" = 1 ]; then
  CONFIG=config/distill/bench_smoke.yaml
  JSON="$OUT/distill_smoke_$DEVICE.json"
  WORK="${WORK:-out/bench_distill_smoke_$DEVICE}"
  EXTRA=(--set "teacher.path=$WORK/proxy_teacher_smoke.safetensors")
else
  CONFIG=config/distill/bench_cifar10_gpu.yaml
  JSON="$OUT/distill_cifar10_gpu.json"
  WORK="${WORK:-out/bench_distill_gpu}"
  EXTRA=()
fi
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DEVICE" != cpu ]; then
  nvidia-smi --query-gpu=name,memory.total --format=csv || true
  # CUDA MPS lets the 24 processes' small kernels run side by side instead of time-sliced.
  if command -v nvidia-cuda-mps-control >/dev/null 2>&1; then
    nvidia-cuda-mps-control -d 2>/dev/null && echo "CUDA MPS started" || echo "CUDA MPS not started"
  fi
fi
start=$(date +%s)
"$PY" -c 'import sys; from vl2spike_ros.cli import main; sys.exit(main(sys.argv[1:]))' \
  bench distill --config "$CONFIG" --json "$JSON" --work-dir "$WORK" \
  --set "device=$DEVICE" "${EXTRA[@]}" "${PARALLEL[@]}"
echo "distill_cifar10_h200.sh: $(( $(date +%s) - start )) s wall clock -> $JSON"
