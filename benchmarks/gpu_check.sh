#!/usr/bin/env bash
# Issue 26's one GPU run, within 8 minutes on one H100 / H200: writes OUT/gpu_check.json and OUT/gpu_check.md
# (official-size random weights built on the GPU; the parts and their budget: benchmarks/gpu_check.py).
#
#   benchmarks/gpu_check.sh [OUT] [gpu_check.py options]       # default OUT: gpu_check_out
#   benchmarks/gpu_check.sh out --preset tiny --device cpu     # the CPU test form (seconds)
#
# The Python budget (--budget-s, 420 s by default) stops it starting new parts; `timeout` ends it at 470 s
# whatever happens, and the JSON and table written after each part survive that.
set -euo pipefail
out="${1:-gpu_check_out}"
shift || true
mkdir -p "$out"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$here/..${PYTHONPATH:+:$PYTHONPATH}"
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$out/nvidia-smi.csv" || true
fi
status=0
timeout --signal=INT --kill-after=10 470 python "$here/gpu_check.py" --json-out "$out/gpu_check.json" \
  --markdown-out "$out/gpu_check.md" "$@" || status=$?
if [ "$status" != 0 ] && [ -f "$out/gpu_check.md" ]; then  # cut short: the table of the parts that finished
  cat "$out/gpu_check.md"
fi
exit "$status"
