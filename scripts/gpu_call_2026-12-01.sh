#!/usr/bin/env bash
# The second H200 call of 2026-12-01: one S5 slot on ListOps and Image (scripts/gpu_ssm_slots.sh),
# then `lra bench` of the models call 1 did not reach (routing, loglinear) and the four
# state-space models at 1K/4K/16K, in the time left (about 9.5 minutes in all).
#   bash scripts/gpu_call_2026-12-01.sh OUT SLOT_SECONDS
set -uo pipefail
out=${1:?output folder}; slot=${2:-150}
start=$(date +%s)
source scripts/gpu_setup.sh && set +e  # gpu_setup sets -e; an interrupted run exits 1 on purpose
work=$(mktemp -d)
bash scripts/gpu_ssm_slots.sh "$work/ssm" "$slot"
cp "$work/ssm/listops-runs.tar.gz" "$out/"
left=$(( 560 - ($(date +%s) - start) ))
echo "bench budget: $left s"
if [ "$left" -gt 60 ]; then
  timeout --signal=TERM --kill-after=15 "$left" python3 -u -m lra.cli bench \
    "model=[routing,loglinear,s5,s4d,lru,mamba]" "lengths=[1024,4096,16384]" mode=train \
    baselines=false batch=32 precision=bf16 timeout=120 skip_after=100 timing_s=1.5 warmup=2 \
    budget=$(( left - 30 )) tag=ssm out="$work/bench" 2>&1 | tee "$work/bench.log"
fi
tar -czf "$out/call2.tar.gz" -C "$work" --exclude=listops-runs.tar.gz .
ls -la "$out"
