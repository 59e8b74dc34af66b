#!/usr/bin/env bash
# Real-data Transformer runs on one H200 (issue: Text and Image with the LRA config).
# Usage (from the repository root, with .whl and .gpu_data carried):
#   bash scripts/gpu_real_runs.sh OUTDIR
# .gpu_data holds copies of the staged IMDb JSONL files and the CIFAR-10 npz.
# Both runs use LRA's configs in bf16 compute, run side by side on the one GPU,
# and stop at the first evaluation after MAX_SECONDS (record: stopped_by).
set -euo pipefail
out=${1:?output folder}
source scripts/gpu_setup.sh
export PYTHONUNBUFFERED=1 LRA_DATA_DIR=/tmp/lradata LRA_RUNS_DIR=/tmp/lraruns
budget=${MAX_SECONDS:-470}
lra data prepare text task.data.source=jsonl task.data.path=.gpu_data
lra data prepare image task.data.source=npz_jpeg task.data.path=.gpu_data/cifar10_jpeg.npz
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
# Text: LRA evaluated on the whole test split every 100 steps; 200 full passes over
# 25,000 reviews do not fit our budget, so we evaluate every 2,000 steps in batches of 250.
lra train task=text model=transformer task.data.source=jsonl task.data.path=.gpu_data \
  trainer.precision=bf16 trainer.eval_every=2000 trainer.eval_batch_size=250 \
  trainer.max_seconds=$budget progress=false >"$out/text.log" 2>&1 &
text_pid=$!
lra train task=image model=transformer task.data.source=npz_jpeg \
  task.data.path=.gpu_data/cifar10_jpeg.npz trainer.precision=bf16 \
  trainer.max_seconds=$budget progress=false >"$out/image.log" 2>&1 &
image_pid=$!
status=0
wait $text_pid || status=1
wait $image_pid || status=1
for task in text image; do
  dir=$(dirname "$(ls -t /tmp/lraruns/$task/transformer/*/record.json | head -1)")
  cp "$dir/record.json" "$out/${task}_record.json"
  cp "$dir/metrics.jsonl" "$out/${task}_metrics.jsonl"
done
tail -n 2 "$out/text.log" "$out/image.log"
exit $status
