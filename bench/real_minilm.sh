#!/usr/bin/env bash
# Real-weights pipeline on this workplace: all-MiniLM-L6-v2 + IMDB from ../shared.
# Reproduces the "Real MiniLM" rows of bench/RESULTS.md. Usage: bash bench/real_minilm.sh [TRAIN_N] [TEST_N]
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
TRAIN_N=${1:-2000}
TEST_N=${2:-1000}
.venv/bin/edgesent train recipes/minilm_lora.yaml \
  --set model.name_or_path=$SHARED/models/all-MiniLM-L6-v2 --set data.dataset=$SHARED/data/imdb \
  --set data.max_train_samples=$TRAIN_N --set data.max_eval_samples=300 --set data.max_test_samples=$TEST_N \
  --set data.max_length=128 --set training.epochs=1 --set training.threads=2 --set name=real-minilm-lora
RUN=$(ls -dt exports/real-minilm-lora-* | head -1)
.venv/bin/edgesent export "$RUN" --int8
.venv/bin/edgesent bench "$RUN/artifact" --batch-sizes 1,8 --seq-lens 128 --threads 1,2 --budget 1 \
  --data $SHARED/data/imdb --split test --limit $TEST_N
