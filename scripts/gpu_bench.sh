#!/usr/bin/env bash
# `lra bench` on the H200 machine, within one ~9-minute call.
#
#   bash scripts/gpu_bench.sh "$OUT" [extra lra bench key=value ...]
#
# Writes $OUT/efficiency-<device>.{csv,md,json,png} and $OUT/bench.log. Every
# registered model plus transformer_xla and transformer_cudnn, at
# 1K, 2K, 3K, 4K, 8K and 16K tokens, batch 32, bf16, training and inference.
#
# Time budget: each (model, length) runs in its own subprocess, pinned to one
# GPU; the models are spread over all visible GPUs (one lane per GPU; on a
# machine of one GPU everything is one lane). The sweep stops starting new
# configurations after budget= seconds (the rest become 'skipped' rows), a
# configuration is killed after timeout= seconds, and a model's longer lengths
# are skipped once it ran out of memory, timed out, or one length took more than
# skip_after= seconds. Repeats are automatic: about timing_s= seconds of timed
# steps (at least 3), so long lengths take fewer steps. The CSV and markdown are
# rewritten after every configuration, so even a killed run leaves its rows.
#
# Extra arguments override the defaults below, e.g. model=performer,local or
# lengths=[1024,4096] or tag=part2.
#
# To continue a sweep that ran out of time (e.g. on a machine with fewer GPUs),
# put the earlier efficiency-*.json in the working tree and name its folder:
#   RESUME_FROM=results/bench-h200 bash scripts/gpu_bench.sh "$OUT"
# Its rows are kept (except 'skipped' ones) and only the rest is measured; the
# report in $OUT then covers both calls.
set -uo pipefail

OUT="${1:-${OUT:-results}}"
shift || true
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
[ -n "${RESUME_FROM:-}" ] && RESUME_FROM="$(cd "$RESUME_FROM" && pwd)"
RUN_DIR="$PWD"

# The package installs tasks/, models/ and configs/ as lra.tasks, lra.models and
# lra.configs. Where it is not installed, a folder of links gives that layout;
# Python then runs from that folder, so that ./lra of the checkout (which lacks
# lra/models) does not shadow it.
if [ -n "${FORCE_SHIM:-}" ] || ! "$PY" -c "import lra.models" >/dev/null 2>&1; then
  SHIM="$(mktemp -d)"
  mkdir "$SHIM/lra"
  for f in "$PWD"/lra/*; do ln -s "$f" "$SHIM/lra/"; done
  ln -s "$PWD/models" "$SHIM/lra/models"
  ln -s "$PWD/tasks" "$SHIM/lra/tasks"
  ln -s "$PWD/configs" "$SHIM/lra/configs"
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
  RUN_DIR="$SHIM"
fi
cd "$RUN_DIR"

DEFAULTS=(
  "lengths=[1024,2048,3072,4096,8192,16384]"
  "batch=32"
  "precision=bf16"
  "mode=both"
  "budget=470"
  "timeout=240"
  "skip_after=150"
  "timing_s=1.5"
  "warmup=2"
)
ARGS=()
for default in "${DEFAULTS[@]}"; do
  key="${default%%=*}"
  overridden=""
  for extra in "$@"; do
    [ "${extra%%=*}" = "$key" ] && overridden=1
  done
  [ -z "$overridden" ] && ARGS+=("$default")
done
ARGS+=("$@" "out=$OUT")
if [ -n "${RESUME_FROM:-}" ]; then
  cp "$RESUME_FROM"/efficiency-*.json "$OUT"/ && ARGS+=("resume=true")
fi

{
  echo "gpu_bench: $(date -u +%Y-%m-%dT%H:%M:%SZ) $PY $("$PY" --version 2>&1)"
  "$PY" -c "import lra, lra.models; print('gpu_bench: lra from', lra.__file__)" 2>&1
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
  echo "gpu_bench: lra bench ${ARGS[*]}"
} | tee "$OUT/bench.log"

# Hard stop before the device call's 10-minute limit; the rows written so far stay.
timeout --signal=TERM --kill-after=15 560 "$PY" -u -m lra.cli bench "${ARGS[@]}" 2>&1 | tee -a "$OUT/bench.log"
status=${PIPESTATUS[0]}
echo "gpu_bench: exit status $status" | tee -a "$OUT/bench.log"
ls -la "$OUT"
exit "$status"
