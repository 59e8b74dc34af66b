#!/usr/bin/env bash
# Make the GPU machine ready: it has jax/flax/optax/orbax/pandas but not Hydra.
# Carry .whl (hydra-core, omegaconf, antlr4 wheels) and source this script.
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null 2>&1 || {
  echo "editable install failed" >&2; exit 1; }
python3 -c "import jax, flax, lra.models, lra.tasks; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
