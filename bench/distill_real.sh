#!/usr/bin/env bash
# Distilled MiniLM students on IMDB from ../shared: the "Distillation" section of bench/RESULTS.md.
# Usage: TEACHER=exports/minilm_full_imdb-<stamp> bash bench/distill_real.sh [stage...]
# Stages (default: layers l3 export-l3 results):
#   layers     accuracy of layer-dropped teachers before training, on 1,000 of the run's validation reviews
#   l3 | l2    train recipes/minilm_l3_distill.yaml / minilm_l2_distill.yaml (teacher logits cached in exports/.cache)
#   l3-ce | l2-ce  the same students with cross-entropy only (no distill section): what distillation adds
#   export-NAME    edgesent export --int8 of exports/minilm_NAME (e.g. export-l3, export-l3-ce)
#   results    teacher, every exported student and TF-IDF on all IMDB / SST-2 / Rotten Tomatoes test reviews,
#              p50 b1x128 and b1x256 on 1 thread -> bench/results/distill.json
# TEACHER defaults to the newest exports/minilm_full_imdb-* run (it needs artifact/: bash bench/real_minilm_full.sh export).
# About 20 min of training per 3-block student on the 2-vCPU dev box (bf16), a few minutes per export.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
PY=${PY:-.venv/bin/python}
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TOKENIZERS_PARALLELISM=false
TEACHER=${TEACHER:-$(ls -dt exports/minilm_full_imdb-2* 2>/dev/null | head -1)}
[ -n "$TEACHER" ] && [ -d "$TEACHER/artifact" ] || { echo "error: no teacher run with artifact/ (set TEACHER=exports/<run>)" >&2; exit 2; }
STAGES=${*:-layers l3 export-l3 results}

student() {  # student NAME [extra --set ...]: train recipes/minilm_<l3|l2>_distill.yaml into exports/minilm_NAME
  local name=$1; shift
  # the in-training test is a 2,000-review sample (PyTorch), as for the teacher; the results stage scores all of it
  $PY -m edgesent train "recipes/minilm_${name%%-*}_distill.yaml" --out "exports/minilm_$name" \
    --set model.name_or_path="$TEACHER" --set distill.teacher="$TEACHER/artifact" \
    --set data.dataset=$SHARED/data/imdb --set data.max_test_samples=2000 --set training.threads=2 "$@"
}

for stage in $STAGES; do
  case $stage in
    layers) $PY -m bench.distill_layers "$TEACHER" --limit 1000 --threads 2 --out bench/results/distill_layers.json ;;
    l3|l2) student "$stage" ;;
    l3-ce|l2-ce) student "$stage" --set distill=null --set name="minilm_${stage/-/_}" ;;
    export-*) $PY -m edgesent export "exports/minilm_${stage#export-}" --int8 ;;
    results)
      args=("teacher=$TEACHER/artifact")
      for s in l3 l3-ce l2 l2-ce; do [ -f "exports/minilm_$s/artifact/edgesent.json" ] && args+=("$s=exports/minilm_$s/artifact"); done
      $PY -m bench.distill_results "${args[@]}" --shared $SHARED --threads 2 --baseline --out bench/results/distill.json ;;
    *) echo "error: unknown stage '$stage' (layers l3 l2 l3-ce l2-ce export-NAME results)" >&2; exit 2 ;;
  esac
done
