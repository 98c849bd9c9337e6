#!/usr/bin/env bash
# Full-data real-weights pipeline: all-MiniLM-L6-v2 + IMDB (25k train / 25k test) from ../shared.
# Reproduces sections 1-2 of bench/RESULTS.md. Usage: bash bench/real_minilm_full.sh [stage...]
# Stages (default: all, in order): train train2 export accuracy bench.
#   train   one epoch of recipes/minilm_full_imdb.yaml from the pretrained weights (run minilm_full_imdb-*)
#   train2  one more epoch from the train-stage weights at lr 5e-5 (run minilm_full_imdb_e2-*): same
#           recipe, same seed, so the same validation rows are carved out and none of them is trained on
#   export, accuracy, bench  on RUN=exports/<run> (default: the newest e2 run, else the newest stage-1 run)
# About 40 min per training stage and 25 min of evaluation on the 2-vCPU dev box; outputs land in bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
STAGES=${*:-train train2 export accuracy bench}
stage1() { ls -dt exports/minilm_full_imdb-2* 2>/dev/null | head -1; }
newest() { ls -dt exports/minilm_full_imdb_e2-2* exports/minilm_full_imdb-2* 2>/dev/null | head -1; }

for stage in $STAGES; do
  case $stage in
    train)
      # the in-training test is a 2,000-review sample (PyTorch); the whole test split is scored below on ONNX
      .venv/bin/edgesent train recipes/minilm_full_imdb.yaml \
        --set model.name_or_path=$SHARED/models/all-MiniLM-L6-v2 --set data.dataset=$SHARED/data/imdb \
        --set data.max_test_samples=2000 --set training.threads=2 ;;
    train2)
      run1=$(stage1); init=$run1/e1-init
      mkdir -p "$init" && cp "$run1"/model/* "$run1"/tokenizer/* "$init"/   # weights + tokenizer in one folder
      .venv/bin/edgesent train recipes/minilm_full_imdb.yaml --set name=minilm_full_imdb_e2 \
        --set model.name_or_path="$init" --set data.dataset=$SHARED/data/imdb \
        --set training.lr=5e-5 --set training.warmup_ratio=0.02 \
        --set data.max_test_samples=2000 --set training.threads=2 ;;
    export)
      # INT8 accuracy gate on the whole carved validation split (1,250 reviews)
      .venv/bin/edgesent export "${RUN:-$(newest)}" --int8 ;;
    accuracy)
      # fp32 and INT8 ONNX on every test review of IMDB, SST-2 and Rotten Tomatoes, plus TF-IDF + LR
      .venv/bin/python bench/real_accuracy.py "${RUN:-$(newest)}/artifact" --threads 2 --baseline \
        --out bench/results/real_accuracy.json ;;
    bench)
      # latency/throughput/accuracy of every variant on 1,000 test reviews -> report.md, latency.png, pareto.png
      out=$(mktemp -d)/bench
      .venv/bin/edgesent bench "${RUN:-$(newest)}/artifact" --batch-sizes 1,8 --seq-lens 128,256 --threads 1,2 \
        --budget 1 --data $SHARED/data/imdb --split test --limit 1000 --out "$out"
      cp "$out"/report.md "$out"/latency.png "$out"/pareto.png bench/results/ ;;
    *) echo "unknown stage '$stage' (train, train2, export, accuracy, bench)" >&2; exit 2 ;;
  esac
done
