#!/usr/bin/env bash
# The whole GPU path in one command, on a CUDA machine:
#   1. train recipes/minilm_full.yaml (real all-MiniLM-L6-v2) on a 4,000-review IMDB subset, bf16 autocast
#   2. export it: fp32 ONNX (checked against PyTorch), INT8 (gated) and fp16 (for the CUDA provider)
#   3. edgesent bench --device cuda: torch fp32/fp16/bf16, bitsandbytes LLM.int8/nf4, and onnxruntime's
#      CUDA provider fp32/fp16 when onnxruntime-gpu is installed (otherwise those rows say why they are skipped)
#   4. copy bench's results.json to bench/results/gpu-<device>.json (device: nvidia-smi's GPU name)
#
# Usage: bash bench/gpu_check.sh [--dry-run]
#   --dry-run  print the commands it would run (no GPU needed; tests/test_bench_cpu_precisions.py runs it)
# Env: SHARED (default ../shared: models/all-MiniLM-L6-v2, data/imdb), PY (default .venv/bin/python),
#      TRAIN_SAMPLES (default 4000), OUT (default exports/gpu_check-<timestamp>).
# Install a CUDA torch first (README "Install"); add onnxruntime-gpu==1.32.0 for the ORT CUDA rows.
. "$(dirname "$0")/env.sh"  # strict mode, repo root, SHARED, PY, no hub traffic
TRAIN_SAMPLES=${TRAIN_SAMPLES:-4000}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "error: unknown argument '$1' (usage: bash bench/gpu_check.sh [--dry-run])" >&2; exit 2 ;;
esac
run() {  # print the command; run it unless --dry-run
  echo "+ $*"
  if [ "$DRY" = 0 ]; then "$@"; fi
}

if [ "$DRY" = 1 ]; then
  device=${DEVICE:-DEVICE}
else
  command -v nvidia-smi >/dev/null || { echo "error: nvidia-smi not found: this needs a CUDA machine (try --dry-run)" >&2; exit 2; }
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" ||
    { echo "error: torch.cuda.is_available() is False: install a CUDA build of torch (README, Install)" >&2; exit 2; }
  device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9._-')
fi
out=${OUT:-exports/gpu_check-$(date +%Y%m%d-%H%M%S)}
run_dir=$out/run
bench_dir=$out/bench
result=bench/results/gpu-$device.json

run "$PY" -m edgesent train recipes/minilm_full.yaml \
  --set model.name_or_path="$SHARED/models/all-MiniLM-L6-v2" --set data.dataset="$SHARED/data/imdb" \
  --set data.max_train_samples="$TRAIN_SAMPLES" --set data.max_eval_samples=500 --set data.max_test_samples=1000 \
  --set training.epochs=1 --set training.precision=bf16 --out "$run_dir"
run "$PY" -m edgesent export "$run_dir" --int8 --fp16
run "$PY" -m edgesent bench "$run_dir/artifact" --device cuda --batch-sizes 1,8,32 --seq-lens 128,256,512 \
  --threads 1 --budget 2 --data "$SHARED/data/imdb" --split test --limit 2000 --out "$bench_dir"
run cp "$bench_dir/results.json" "$result"
echo "GPU check done: $result (report: $bench_dir/report.md)"
