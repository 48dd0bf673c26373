#!/usr/bin/env bash
# The shapes model from an empty folder, then its measurements: `kvideo recipe shapes` with the stages
# that do not depend on each other run side by side (two lanes of one thread each on a 2-core CPU), then
# the quality table of the issue (96 prompts x 2 seeds), FVD with a trained detector and the speed check.
#
#   examples/train_shapes.sh OUT            # everything; rerun it to resume after an interruption
#   examples/train_shapes.sh OUT train      # only the recipe (OUT/model is the finished model)
#   examples/train_shapes.sh OUT measure    # only the measurements (after train)
#
# RECIPE_ARGS adds options to every `kvideo recipe` call, e.g. a quick trial of the whole flow:
#   RECIPE_ARGS="--videos 216 --steps-scale 0.002" examples/train_shapes.sh /tmp/trial train
# On a 2-core CPU the recipe takes about two hours, the measurements about one more; each lane logs to
# OUT/logs/. A stage that fails stops the run (the other lane finishes its current stage first).
set -euo pipefail

OUT=${1:?usage: examples/train_shapes.sh OUT [train|measure|all]}
WHAT=${2:-all}
case "$WHAT" in train|measure|all) ;; *) echo "unknown part '$WHAT': train, measure or all" >&2; exit 2 ;; esac
HERE=$(cd "$(dirname "$0")/.." && pwd)
CORES=$(nproc)
LANE_THREADS=$(( CORES > 2 ? CORES / 2 : 1 ))
mkdir -p "$OUT/logs"
FAILED="$OUT/logs/FAILED"
rm -f "$FAILED"

# run NAME THREADS STAGE...: one `kvideo recipe` process; marks the run failed if it fails
run() {
    local name=$1 threads=$2
    shift 2
    if ! OMP_NUM_THREADS=$threads kvideo recipe shapes "$OUT" --quiet ${RECIPE_ARGS:-} --stages "$@" >"$OUT/logs/$name.log" 2>&1; then
        echo "$name failed (stages $*): see $OUT/logs/$name.log" | tee -a "$FAILED" >&2
        return 1
    fi
}

# after STAGE...: wait until each stage has its record; give up when another lane failed
after() {
    for stage in "$@"; do
        until [ -f "$OUT/records/$stage.json" ]; do
            [ -f "$FAILED" ] && return 1
            sleep "${POLL_SECONDS:-20}"
        done
    done
}

train() {
    echo "recipe: data and movq ($CORES threads)"
    run first "$CORES" data movq
    echo "recipe: two lanes of $LANE_THREADS thread(s): logs in $OUT/logs/"
    ( run lane1 "$LANE_THREADS" text cache-keyframe image keyframe-all keyframe-detail &&
      after interpolation-motion decoder && run model "$LANE_THREADS" model ) &
    local lane1=$!
    ( run lane2 "$LANE_THREADS" cache-interpolation decoder interpolation data-motion cache-interpolation-motion \
          interpolation-motion &&
      after image && run keyframe "$LANE_THREADS" keyframe ) &
    local lane2=$!
    local status=0
    wait "$lane1" || status=1
    wait "$lane2" || status=1
    [ "$status" = 0 ] || { echo "the recipe stopped: $(cat "$FAILED" 2>/dev/null)" >&2; exit 1; }
    echo "recipe done: $OUT/model"
}

measure() {
    local bench="$HERE/benchmarks/bench_shapes.py" q="$OUT/quality"
    echo "measure: quality table (96 prompts x 2 seeds, fps medium): shipped, temporal-off, keyframe-temporal"
    OMP_NUM_THREADS=$CORES python "$bench" quality "$OUT" "$q" >"$OUT/logs/quality.log" 2>&1
    grep -h '^[a-z-]* {' "$OUT/logs/quality.log"
    echo "measure: FVD (detector trained on the training clips)"
    OMP_NUM_THREADS=$CORES python "$bench" fvd "$OUT" "$OUT/fvd" --quality-dir "$q" \
        --variants shipped temporal-off >"$OUT/logs/fvd.log" 2>&1
    grep -h '^FVD\|^detector' "$OUT/logs/fvd.log"
    echo "measure: speed of the quick start's generation"
    (cd "$OUT" && OMP_NUM_THREADS=$CORES python "$bench" speed --weights model)
}

case "$WHAT" in
    train) train ;;
    measure) measure ;;
    all) train && measure ;;
esac
