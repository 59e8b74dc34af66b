"""Where the training step's time goes: the Transformer with fused cuDNN attention
on `lra bench`'s LRA text shape (4 layers, width 256, 4 heads of 64, MLP 1024,
batch 32, CLS token, dropout 0.1, bf16), at each length.

Times, each the median of blocking repeats after warm-up:
  step            the full step, `lra.trainer.train_step` as `lra train` runs it
                  (forward, backward, grad norm, lr, AdamW), blocking every step as
                  `lra bench` does
  step_pipelined  the same steps dispatched back to back, one block at the end
                  (step - step_pipelined = host overhead per step)
  fwd_bwd         loss and gradients, no optimizer (step - fwd_bwd = the update)
  fwd_bwd_nodrop  the same without dropout (the difference is dropout's RNG and masks)
  forward         loss only
  attention       the cuDNN attention kernel alone, forward + backward, x layers
  mlp             the MLP blocks alone (with dropout), forward + backward, x layers

  python scripts/profile_train_step.py OUT_DIR [LENGTH ...]

Writes OUT_DIR/profile-train-step.{json,md}. Needs a GPU (cuDNN attention).
"""

from __future__ import annotations

import functools
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lra.models import EncoderConfig, build_model
from lra.models.transformer import even_length_attention
from lra.trainer import (TrainerConfig, TrainState, forward_loss, make_optimizer, split_model,
                         train_step_jit)

BATCH, LAYERS, DIM, HEADS, MLP, VOCAB = 32, 4, 256, 4, 1024, 257


def timed(fn, *args, repeats=20, warmup=3):
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - tick)
    return statistics.median(times) * 1e3


def profile(length: int) -> dict:
    enc = EncoderConfig(vocab_size=VOCAB, max_len=length, num_layers=LAYERS, dim=DIM,
                        num_heads=HEADS, qkv_dim=DIM, mlp_dim=MLP, dropout=0.1,
                        attention_dropout=0.0, pooling="cls", learned_pos_emb=False,
                        dtype=jnp.bfloat16)
    model = build_model("transformer", {"implementation": "cudnn"}, enc, 2, rngs=nnx.Rngs(0))
    graphdef, params, rest = split_model(model)
    rng = np.random.default_rng(0)
    batch = jax.device_put({
        "inputs": rng.integers(1, VOCAB, (BATCH, length), dtype=np.int32),
        "labels": rng.integers(0, 2, (BATCH,), dtype=np.int32),
        "weights": np.ones((BATCH,), np.float32),
    })
    opt_cfg = TrainerConfig()  # the trainer defaults; only the step's cost matters here
    tx = make_optimizer(opt_cfg)
    step_fn = functools.partial(train_step_jit, graphdef, opt_cfg)  # the step of `lra train`
    key = jax.random.key(1)

    def loss(params, batch, step, deterministic):
        return forward_loss(graphdef, params, rest, batch, jax.random.fold_in(key, step),
                            deterministic=deterministic)[0]

    @jax.jit
    def forward(params, batch, step):
        return loss(params, batch, step, False)

    @jax.jit
    def fwd_bwd(params, batch, step):
        return jax.value_and_grad(loss)(params, batch, step, False)

    @jax.jit
    def fwd_bwd_nodrop(params, batch, step):
        return jax.value_and_grad(loss)(params, batch, step, True)

    @jax.jit
    def update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    step0 = jnp.asarray(0, jnp.int32)
    out = {"length": length, "seq_len": length + 1}
    out["forward_ms"] = timed(forward, params, batch, step0)
    out["fwd_bwd_ms"] = timed(fwd_bwd, params, batch, step0)
    out["fwd_bwd_nodrop_ms"] = timed(fwd_bwd_nodrop, params, batch, step0)
    _, grads = fwd_bwd(params, batch, step0)
    opt_state = tx.init(params)
    out["optimizer_ms"] = timed(update, grads, opt_state, params)
    state = TrainState(params, opt_state, rest)

    def blocking_step():  # the step donates its state: carry it from call to call
        nonlocal state
        state, metrics = step_fn(state, step0, batch, key)
        return metrics

    out["step_ms"] = timed(blocking_step)
    n = 30
    jax.block_until_ready(blocking_step())
    tick = time.perf_counter()
    for i in range(n):
        state, metrics = step_fn(state, jnp.asarray(i, jnp.int32), batch, key)
    jax.block_until_ready(metrics)
    out["step_pipelined_ms"] = (time.perf_counter() - tick) / n * 1e3

    # The attention kernel alone, at the model's shapes.
    keys = jax.random.split(jax.random.key(2), 3)
    q, k, v = (jax.random.normal(kk, (BATCH, length + 1, HEADS, DIM // HEADS), jnp.bfloat16)
               for kk in keys)
    lengths = jnp.full((BATCH,), length + 1, jnp.int32)
    attn = jax.jit(jax.grad(
        lambda q, k, v: even_length_attention(q, k, v, lengths, "cudnn").astype(jnp.float32).sum(),
        argnums=(0, 1, 2)))
    out["attention_ms"] = timed(attn, q, k, v) * LAYERS

    mlp_graph, mlp_params, mlp_rest = split_model(model.encoder.blocks[0].mlp)
    x = jax.random.normal(jax.random.key(3), (BATCH, length + 1, DIM), jnp.bfloat16)

    @jax.jit
    def mlp(mlp_params, x):
        def f(p, x):
            block = nnx.merge(mlp_graph, p, mlp_rest)
            return block(x, deterministic=False, rngs=nnx.Rngs(4)).astype(jnp.float32).sum()
        return jax.grad(f, argnums=(0, 1))(mlp_params, x)

    out["mlp_ms"] = timed(mlp, mlp_params, x) * LAYERS
    flops = 2 * 2 * BATCH * HEADS * (length + 1) ** 2 * (DIM // HEADS) * LAYERS * 3.5
    out["attention_tflops_per_s"] = flops / (out["attention_ms"] / 1e3) / 1e12
    out["steps_per_s"] = 1e3 / out["step_ms"]
    out["steps_per_s_pipelined"] = 1e3 / out["step_pipelined_ms"]
    return out


COLUMNS = [("length", "L"), ("step_ms", "step"), ("step_pipelined_ms", "step, pipelined"),
           ("fwd_bwd_ms", "fwd+bwd"), ("fwd_bwd_nodrop_ms", "fwd+bwd, no dropout"),
           ("forward_ms", "forward"), ("optimizer_ms", "AdamW update"),
           ("attention_ms", "attention fwd+bwd (x4 layers)"), ("mlp_ms", "MLP fwd+bwd (x4 layers)"),
           ("attention_tflops_per_s", "attention TFLOP/s"), ("steps_per_s", "steps/s"),
           ("steps_per_s_pipelined", "steps/s, pipelined")]


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0])
    lengths = [int(a) for a in argv[1:]] or [1024, 2048, 3072, 4096, 8192, 16384]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for length in lengths:
        row = profile(length)
        rows.append(row)
        print(json.dumps(row), flush=True)
        (out_dir / "profile-train-step.json").write_text(json.dumps(
            {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": rows}, indent=1))
    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    for row in rows:
        lines.append("| " + " | ".join(
            str(row[k]) if k == "length" else f"{row[k]:.2f}" for k, _ in COLUMNS) + " |")
    (out_dir / "profile-train-step.md").write_text(
        f"Times in ms per step on {jax.devices()[0].device_kind} (jax {jax.__version__}), "
        "bf16, batch 32.\n\n" + "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
