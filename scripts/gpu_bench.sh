#!/usr/bin/env bash
# `lra bench` on the H200 machine, within one ~9-minute device call, side by side
# with the PyTorch peer (issue 11), in three stages of the same job:
#   1. the peer, shared/bench/peer_torch_lra.py (copy it to .gpu/peer_torch_lra.py and
#      carry .gpu; the GPU machine's python3 has torch), at 1K-16K, cls pooling,
#      dropout 0.1 -> $OUT/peer_torch_lra_cls_0.1.json;
#   2. `lra bench model=transformer_cudnn` at the same lengths with peer= that file:
#      the per-length ratio lra/peer, measured minutes apart on the same GPU;
#   3. the full bench of every registered model (plus transformer_xla and
#      transformer_cudnn) in the time left, its report with the peer table too.
#
#   bash scripts/gpu_bench.sh "$OUT" [extra lra bench key=value ...]   (carry .gpu and .whl)
#   PEER_ONLY=1 bash scripts/gpu_bench.sh "$OUT"     # stages 1 and 2 only
#
# Writes $OUT/efficiency-<device>.{csv,md,json,png} (stage 3), $OUT/bench.log,
# $OUT/peer_torch_lra_cls_0.1.json, and $OUT/peer-vs-lra.tar.gz (stage 2's report
# and logs; its markdown also as $OUT/efficiency-<device>-peer.md).
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
RUN_DIR_SRC="$PWD"  # the checkout (where .gpu/ is carried)

# lra bench composes its options with Hydra (configs/bench/): the GPU machine lacks it,
# so carry .whl and let scripts/gpu_setup.sh install it (and lra, editable).
if ! "$PY" -c "import hydra" >/dev/null 2>&1; then
  source scripts/gpu_setup.sh || { echo "gpu_bench: carry .whl (hydra-core, omegaconf, antlr4)"; exit 2; }
  set +e  # gpu_setup.sh sets -e; a failed stage here must not end the job
fi

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

START=$(date +%s)
# Seconds left until $1 seconds after the start (at least 1).
left() { local n=$(( ${1} - ($(date +%s) - START) )); [ "$n" -lt 1 ] && n=1; echo "$n"; }
{
  echo "gpu_bench: $(date -u +%Y-%m-%dT%H:%M:%SZ) $PY $("$PY" --version 2>&1)"
  "$PY" -c "import lra, lra.models; print('gpu_bench: lra from', lra.__file__)" 2>&1
  nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
} | tee "$OUT/bench.log"

# Stage 1: the PyTorch peer.
PEER_LENGTHS="1024,2048,4096,8192,16384"
PEER_SCRIPT="$RUN_DIR_SRC/.gpu/peer_torch_lra.py"
PEER_JSON="$OUT/peer_torch_lra_cls_0.1.json"
PEER_WORK="$(mktemp -d)"
if [ -f "$PEER_SCRIPT" ]; then
  echo "gpu_bench: stage 1: python3 $PEER_SCRIPT pooling=cls dropout=0.1 lengths=$PEER_LENGTHS" | tee -a "$OUT/bench.log"
  OUT="$OUT" timeout --signal=TERM --kill-after=10 240 python3 "$PEER_SCRIPT" pooling=cls dropout=0.1 \
    lengths="$PEER_LENGTHS" 2>&1 | tee "$PEER_WORK/peer.log" | tee -a "$OUT/bench.log"
else
  echo "gpu_bench: no $PEER_SCRIPT: no peer (cp ../shared/bench/peer_torch_lra.py .gpu/ and carry .gpu)" | tee -a "$OUT/bench.log"
fi
PEER_ARG=()
[ -f "$PEER_JSON" ] && PEER_ARG=("peer=$PEER_JSON")

# Stage 2: transformer_cudnn at the peer's lengths, in the same job.
if [ ${#PEER_ARG[@]} -gt 0 ]; then
  STAGE2=("model=transformer_cudnn" "baselines=false" "lengths=[$PEER_LENGTHS]" "batch=32"
          "precision=bf16" "mode=train" "timing_s=1.5" "warmup=2" "timeout=120" "plot=false"
          "tag=peer" "out=$PEER_WORK" "${PEER_ARG[@]}")
  echo "gpu_bench: stage 2: lra bench ${STAGE2[*]}" | tee -a "$OUT/bench.log"
  timeout --signal=TERM --kill-after=15 "$(left 400)" "$PY" -u -m lra.cli bench "${STAGE2[@]}" 2>&1 \
    | tee "$PEER_WORK/bench-peer.log" | tee -a "$OUT/bench.log"
  cp "$PEER_WORK"/efficiency-*-peer.md "$OUT"/ 2>/dev/null
  tar -czf "$OUT/peer-vs-lra.tar.gz" -C "$PEER_WORK" . 2>/dev/null
fi
[ -n "${PEER_ONLY:-}" ] && { ls -la "$OUT"; exit 0; }

# Stage 3: the full bench in the time left (the rows written so far stay on a stop).
BUDGET=$(left 520)
[ "$BUDGET" -lt 60 ] && { echo "gpu_bench: $BUDGET s left: no full bench" | tee -a "$OUT/bench.log"; exit 0; }
case " $* " in *" budget="*) ;; *) ARGS=("budget=$((BUDGET - 40))" "${ARGS[@]}") ;; esac
ARGS+=("${PEER_ARG[@]}")
echo "gpu_bench: stage 3: lra bench ${ARGS[*]}" | tee -a "$OUT/bench.log"
timeout --signal=TERM --kill-after=15 "$BUDGET" "$PY" -u -m lra.cli bench "${ARGS[@]}" 2>&1 | tee -a "$OUT/bench.log"
status=${PIPESTATUS[0]}
echo "gpu_bench: exit status $status" | tee -a "$OUT/bench.log"
ls -la "$OUT"
exit "$status"
