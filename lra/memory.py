"""Will the training step fit? XLA's own answer, before the run starts.

A full LRA config on a small machine (ListOps at 2,000 tokens, 6 layers, batch 32
on a 24 GiB CPU) otherwise dies mid-compile or mid-step with an allocator
traceback. XLA knows the step's buffers once it is compiled
(`Compiled.memory_analysis()`), so the estimate costs no extra compile when the
caller runs the compiled step it returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lra.errors import LraError

GIB = 1024 ** 3


def human_size(n: int) -> str:
    """143 GiB, 2.5 GiB, 300 MiB: as precise as a refusal needs."""
    if n >= 10 * GIB:
        return f"{n / GIB:.0f} GiB"
    if n >= GIB:
        return f"{n / GIB:.1f} GiB"
    return f"{n / 1024 ** 2:.0f} MiB"


def compiled_bytes(compiled: Any) -> int | None:
    """Peak bytes of one call of a compiled function: its arguments, outputs and
    temporaries, less the outputs written into donated arguments (counted twice
    otherwise). None where the backend gives no analysis."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without it raise various errors
        return None
    if stats is None:
        return None
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)
    return int(total)


def compile_with_estimate(jitted: Any, *args: Any) -> tuple[Any, int | None]:
    """Compile `jitted` for these arguments: the compiled function (call it instead
    of `jitted`, the compile is not cached for it) and its peak bytes."""
    compiled = jitted.lower(*args).compile()
    return compiled, compiled_bytes(compiled)


def available_ram_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable of /proc/meminfo (Linux), what a new allocation can get; None elsewhere."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def device_memory_bytes(device: Any) -> int | None:
    """What one device can hold: the allocator's limit on accelerators, the
    machine's available RAM on CPU; None where neither is known."""
    if device.platform == "cpu":
        return available_ram_bytes()
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001
        return None
    limit = (stats or {}).get("bytes_limit")
    return int(limit) if limit else None


def check_fits(estimate_bytes: int | None, device: Any, *, available: int | None = None) -> None:
    """One-line refusal when the step needs more memory than the device has.
    Unknown figures (no analysis, no limit) let the run go ahead."""
    available = device_memory_bytes(device) if available is None else available
    if estimate_bytes is None or available is None or estimate_bytes <= available:
        return
    where = "this machine has" if device.platform == "cpu" else "this device has"
    free = " free" if device.platform == "cpu" else ""
    raise LraError(
        f"the training step needs about {human_size(estimate_bytes)}, {where} "
        f"{human_size(available)}{free}; use a GPU, a smaller batch "
        "(trainer.batch_size=...) or trainer.precision=bf16"
    )
