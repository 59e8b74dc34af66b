#!/usr/bin/env bash
# One call on a 4-GPU H200 machine (device kind nvidia-h200-x4), four jobs side by side:
#   GPU 0  Text, LRA config, bf16 (as scripts/gpu_real_runs.sh)
#   GPU 1  Image, LRA config, bf16
#   GPU 2  scripts/profile_train_step.py: where the fused Transformer's step time goes
#   GPU 3  the GPU tests, then `lra bench` rows of transformer_cudnn, resuming the
#          sweep whose efficiency-*.json is in .bench_prev/
# Usage: bash scripts/gpu_followup.sh OUTDIR   (carry .whl, .gpu_data, .bench_prev)
# Everything lands in OUTDIR/followup.tar.gz (the device returns at most 8 files).
set -uo pipefail
out=${1:?output folder}
work=/tmp/followup
mkdir -p "$out" "$work"/{real,bench,profile}
source scripts/gpu_setup.sh || exit 1
export PYTHONUNBUFFERED=1 LRA_DATA_DIR=/tmp/lradata LRA_RUNS_DIR=/tmp/lraruns
budget=${MAX_SECONDS:-420}
lra data prepare text task.data.source=jsonl task.data.path=.gpu_data &
lra data prepare image task.data.source=npz_jpeg task.data.path=.gpu_data/cifar10_jpeg.npz &
wait
common=(trainer.precision=bf16 trainer.max_seconds=$budget progress=false)
CUDA_VISIBLE_DEVICES=0 lra train task=text model=transformer task.data.source=jsonl \
  task.data.path=.gpu_data trainer.eval_every=2000 trainer.eval_batch_size=250 \
  "${common[@]}" >"$work/real/text.log" 2>&1 &
CUDA_VISIBLE_DEVICES=1 lra train task=image model=transformer task.data.source=npz_jpeg \
  task.data.path=.gpu_data/cifar10_jpeg.npz "${common[@]}" >"$work/real/image.log" 2>&1 &
CUDA_VISIBLE_DEVICES=2 timeout 480 python3 scripts/profile_train_step.py "$work/profile" \
  >"$work/profile/profile.log" 2>&1 &
(
  export CUDA_VISIBLE_DEVICES=3
  timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py >"$work/gpu_tests.log" 2>&1
  RESUME_FROM=.bench_prev timeout 400 bash scripts/gpu_bench.sh "$work/bench" \
    model=transformer_cudnn budget=330 >/dev/null 2>&1
) &
wait
for task in text image; do
  record=$(grep -o '/tmp/lraruns/[^ ]*/record.json' "$work/real/$task.log" | tail -1)
  [ -n "$record" ] && mkdir -p "$work/real/$task" && cp "$(dirname "$record")"/* "$work/real/$task/"
done
tar -czf "$out/followup.tar.gz" -C "$work" .
cp "$work/gpu_tests.log" "$work/profile/profile-train-step.md" "$out/" 2>/dev/null
tail -n 2 "$work"/real/*.log "$work/gpu_tests.log"; tail -n 12 "$work/bench/bench.log"
