"""`lra bench`: training and inference speed and memory of every model, 1K to 16K.

LRA's Table 2 compared training steps per second and peak memory at 1K-4K tokens
on the byte-level text task (batch 32), relative to the Transformer. Since fused
exact attention (FlashAttention, cuDNN), the fair question is whether an
efficient model beats *that* in wall-clock time and memory, and from which
length on. This package measures it.

Shape: the LRA text classification config (4 layers, width 256, 4 heads, qkv 256,
MLP 1024, 257-symbol byte vocabulary, 2 classes, CLS pooling, batch 32, dropout
0.1). Attention dropout is 0 for every model: in `transformer` attention dropout
needs the weights and forces the explicit (materialised) path, which would make
the fused baselines impossible.

Every registered model runs, plus the Transformer twice: `transformer_xla`
(implementation=xla) and `transformer_cudnn` (implementation=cudnn, GPU with
bf16 only; elsewhere its rows say `unsupported`). Each (model, length) runs in a
fresh subprocess, so that `peak_bytes_in_use` is that configuration's own peak
and an out-of-memory or a crash becomes a row instead of ending the sweep.

The parent process never initialises an accelerator (it would take the GPU's
memory from its children): it finds the device through a probe subprocess.
Options come from the config group configs/bench/ through lra.config's compose
(`lra bench key=value` sets bench.<key>); the workers need no Hydra.

Modules: `settings` (constants, arguments, which models), `measure` (one
configuration, inside the worker subprocess), `sweep` (the parent: lanes, budget,
resume, merge, `main`), `report` (ratios, fits, CSV/Markdown/JSON/PNG).
"""

from lra.bench.sweep import main

__all__ = ["main"]
