#!/usr/bin/env bash
# Sparse Transformer and Reformer configured as their papers scale them, on the H200.
#
# With LRA's fixed block_size=50 and num_buckets=10, both cost a fixed fraction of L^2
# (results/efficiency-nvidia-h200.md). Their papers keep the cost sub-quadratic by
# scaling with length: Child et al. use a stride/block of about sqrt(L) (L*sqrt(L)),
# Kitaev et al. a fixed chunk of 64 tokens, i.e. num_buckets = L/64 (L * 64).
# This runs `lra bench` once per (model, length) with those options, four GPUs in
# parallel, then merges the rows into one report:
#   OUTDIR/efficiency-nvidia-h200-paper_scaling.{csv,md,json,png}
# Usage: bash scripts/gpu_bench_paper_scaling.sh OUTDIR   (carry .whl)
set -uo pipefail
out=${1:?output folder}
parts=/tmp/paper_scaling
mkdir -p "$out" "$parts"
source scripts/gpu_setup.sh || exit 1
configs=(
  "sparse_transformer block_size 128 16384" "reformer num_buckets 256 16384"
  "sparse_transformer block_size 91 8192"   "reformer num_buckets 128 8192"
  "sparse_transformer block_size 64 4096"   "reformer num_buckets 64 4096"
  "sparse_transformer block_size 55 3072"   "reformer num_buckets 48 3072"
  "sparse_transformer block_size 45 2048"   "reformer num_buckets 32 2048"
  "sparse_transformer block_size 32 1024"   "reformer num_buckets 16 1024"
)
lanes=$(nvidia-smi -L | wc -l)
for lane in $(seq 0 $((lanes - 1))); do
  (
    for i in "${!configs[@]}"; do
      [ $((i % lanes)) -eq "$lane" ] || continue
      read -r model key value length <<<"${configs[$i]}"
      CUDA_VISIBLE_DEVICES=$lane timeout 200 python3 -m lra.cli bench model=$model \
        "$model.$key=$value" "lengths=[$length]" baselines=false plot=false \
        timing_s=1.5 tag="$model-$length" out="$parts" 2>&1 | grep -E '^\[|error' 
    done
  ) &
done
wait
python3 -m lra.cli bench merge="$(ls "$parts"/*.json | paste -sd,)" tag=paper_scaling out="$out"
