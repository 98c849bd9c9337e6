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
# KEEP=auto trains with the blocks that agreed best with the teacher in the layers stage (same count as the
# recipe's keep_layers) instead of the recipe's; KEEP="[1,3,5]" names them. TRAIN_SAMPLES=N distils on a seeded
# N-review subset of train (data.max_train_samples) when the whole split does not fit the time at hand.
# MODELS=int8 scores only the INT8 files in the results stage (default int8,fp32). EXTRA="--set training.max_steps=900"
# adds recipe overrides to the training stages (e.g. a part of the epoch when the whole one does not fit).
# About 20 min of training per 3-block student on the 2-vCPU dev box (bf16), a few minutes per export.
. "$(dirname "$0")/env.sh"  # strict mode, repo root, SHARED, PY, no hub traffic
TEACHER=${TEACHER:-$(ls -dt exports/minilm_full_imdb-2* 2>/dev/null | head -1)}
[ -n "$TEACHER" ] && [ -d "$TEACHER/artifact" ] || { echo "error: no teacher run with artifact/ (set TEACHER=exports/<run>)" >&2; exit 2; }
STAGES=${*:-layers l3 export-l3 results}

student() {  # student NAME [extra --set ...]: train recipes/minilm_<l3|l2>_distill.yaml into exports/minilm_NAME
  local name=$1; shift
  # the in-training test is a 2,000-review sample (PyTorch), as for the teacher; the results stage scores all of it
  $PY -m edgesent train "recipes/minilm_${name%%-*}_distill.yaml" --out "exports/minilm_$name" \
    --set model.name_or_path="$TEACHER" --set distill.teacher="$TEACHER/artifact" \
    --set data.dataset=$SHARED/data/imdb --set data.max_test_samples=2000 --set training.threads=2 \
    ${TRAIN_SAMPLES:+--set data.max_train_samples=$TRAIN_SAMPLES} $(keep_option "${name%%-*}") ${EXTRA:-} "$@"
}

keep_option() {  # keep_option l3|l2: the --set for KEEP (nothing when KEEP is unset)
  [ -n "${KEEP:-}" ] || return 0
  if [ "$KEEP" = auto ]; then
    $PY - "$1" <<'PYEOF'
import json, sys
n = int(sys.argv[1][1:])
rows = [r for r in json.load(open("bench/results/distill_layers.json"))["rows"] if r["keep_layers"] != "all" and len(r["keep_layers"]) == n]
best = max(rows, key=lambda r: (r["agreement"], r["accuracy"]))
print("--set model.keep_layers=[" + ",".join(map(str, best["keep_layers"])) + "]")
PYEOF
  else
    echo "--set model.keep_layers=$KEEP"
  fi
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
      $PY -m bench.distill_results "${args[@]}" --shared $SHARED --threads 2 --models "${MODELS:-int8,fp32}" --baseline \
        --out bench/results/distill.json --plot bench/results/distill_pareto.png ;;
    *) echo "error: unknown stage '$stage' (layers l3 l2 l3-ce l2-ce export-NAME results)" >&2; exit 2 ;;
  esac
done
