#!/usr/bin/env bash
# Full-data real-weights pipeline: all-MiniLM-L6-v2 + IMDB (25k train / 25k test) from ../shared.
# Reproduces sections 1 and 5 of bench/RESULTS.md. Usage: bash bench/real_minilm_full.sh [stage...]
# Stages (default: all, in order): train export accuracy bench.
#   train     one epoch of recipes/minilm_full_imdb.yaml from the pretrained weights
#   export    edgesent export --int8 (the gate runs on the run's 1,250 validation reviews)
#   accuracy  fp32 and INT8 on the whole IMDB, SST-2 and Rotten Tomatoes test splits (+ TF-IDF baseline)
#   bench     edgesent bench on 1,000 test reviews -> bench/results/report.md, latency.png, pareto.png
# RUN=exports/<run> picks the run for the later stages (default: the newest minilm_full_imdb run).
# About 40 min of training and 25 min of evaluation on the 2-vCPU dev box.
. "$(dirname "$0")/env.sh"  # strict mode, repo root, SHARED, PY, no hub traffic
STAGES=${*:-train export accuracy bench}
target() {  # RUN, else the newest run of the recipe; fails with one line when there is none
  local run=${RUN:-$(ls -dt exports/minilm_full_imdb-2* 2>/dev/null | head -1)}
  [ -n "$run" ] || { echo "error: no exports/minilm_full_imdb-* run: run the train stage first or set RUN=exports/<run>" >&2; return 2; }
  echo "$run"
}

for stage in $STAGES; do
  case $stage in
    train)
      # the in-training test is a 2,000-review sample (PyTorch); the whole test split is scored below on ONNX
      .venv/bin/edgesent train recipes/minilm_full_imdb.yaml \
        --set model.name_or_path=$SHARED/models/all-MiniLM-L6-v2 --set data.dataset=$SHARED/data/imdb \
        --set data.max_test_samples=2000 --set training.threads=2 ;;
    export)
      # INT8 accuracy gate on the whole carved validation split (1,250 reviews)
      run=$(target); .venv/bin/edgesent export "$run" --int8 ;;
    accuracy)
      # fp32 and INT8 ONNX on every test review of IMDB, SST-2 and Rotten Tomatoes, plus TF-IDF + LR
      run=$(target); $PY -m bench.real_accuracy "$run/artifact" --threads 2 --baseline \
        --out bench/results/real_accuracy.json ;;
    bench)
      # latency/throughput/accuracy of every variant on 1,000 test reviews -> report.md, latency.png, pareto.png
      run=$(target); out=$(mktemp -d)/bench
      .venv/bin/edgesent bench "$run/artifact" --batch-sizes 1,8 --seq-lens 128,256 --threads 1,2 \
        --budget 1 --data $SHARED/data/imdb --split test --limit 1000 --out "$out"
      cp "$out"/report.md "$out"/latency.png "$out"/pareto.png bench/results/ ;;
    *) echo "unknown stage '$stage' (train, export, accuracy, bench)" >&2; exit 2 ;;
  esac
done
