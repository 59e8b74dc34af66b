#!/usr/bin/env bash
# S5 with its papers' presets on ListOps and Image, one time-limited slot each, on one GPU.
#
#   bash scripts/gpu_ssm_slots.sh OUT [SLOT_SECONDS]
#
# Carry .whl (Hydra wheels) and .gpu (cifar10_jpeg.npz; runs/ from an earlier slot, if
# any). Both runs share the GPU (each gets 45% of its memory) and stop at the first
# evaluation after SLOT_SECONDS of training, with status `interrupted` and a checkpoint.
# Running the script again with .gpu/runs carried back continues them where they
# stopped (`lra train` resumes the unfinished run of the same configuration and seed).
# ListOps's run folder (small checkpoints) comes back as OUT/listops-runs.tar.gz, to be
# unpacked into .gpu/runs for the next slot; Image's checkpoints are too large to bring
# back (about 90 MB each), so only its record and metrics come back.
set -uo pipefail
out=${1:?output folder}
slot=${2:-170}
mkdir -p "$out" .gpu/runs
source scripts/gpu_setup.sh && set +e  # gpu_setup sets -e; an interrupted run exits 1 on purpose
export PYTHONUNBUFFERED=1 LRA_DATA_DIR=/tmp/lradata XLA_PYTHON_CLIENT_MEM_FRACTION=0.45
lra data prepare image task.data.source=npz_jpeg task.data.path=.gpu/cifar10_jpeg.npz \
  >"$out/prepare-image.log" 2>&1 &
prep=$!
common=(trainer.max_seconds="$slot" progress=false)
lra train task=listops model=s5 experiment=s5_listops runs_dir=.gpu/runs "${common[@]}" \
  >"$out/s5-listops.log" 2>&1 &
listops=$!
wait "$prep" || { echo "image prepare failed"; tail -3 "$out/prepare-image.log"; }
lra train task=image model=s5 experiment=s5_image task.data.source=npz_jpeg \
  task.data.path=.gpu/cifar10_jpeg.npz runs_dir=/tmp/imageruns "${common[@]}" \
  >"$out/s5-image.log" 2>&1 &
image=$!
wait "$listops"; echo "s5 listops exit $?"; wait "$image"; echo "s5 image exit $?"
tail -n 2 "$out/s5-listops.log" "$out/s5-image.log"
tar -czf "$out/listops-runs.tar.gz" -C .gpu runs
tar -czf "$out/image-run.tar.gz" --exclude=checkpoints -C /tmp imageruns
ls -la "$out"
