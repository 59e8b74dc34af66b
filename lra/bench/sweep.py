"""The sweep, in the parent process: one worker subprocess per (model, length),
one lane per GPU, a time budget, resume and merge, and the entry point `main`."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from lra.bench.measure import is_oom, probe, run_config
from lra.bench.report import format_bytes, load_peer, peer_comparison, write_outputs
from lra.bench.settings import (
    COLUMNS, PEAK_TFLOPS, PEER_TARGET_RATIO, RESULT_MARK, STATUSES, parse_args,
    resolve_models, unsupported_reason, usage,
)
from lra.errors import LraError


# JAX_PLATFORMS as it was before main() pinned this (orchestrating) process to the
# CPU; the measuring subprocesses get the original back. None: it was not set.
_CHILD_PLATFORMS: dict[str, str | None] = {}


def _child_env(settings: dict[str, Any], gpu: str | None, backend: str) -> dict[str, str]:
    env = dict(os.environ)
    if "JAX_PLATFORMS" in _CHILD_PLATFORMS:
        original = _CHILD_PLATFORMS["JAX_PLATFORMS"]
        if original is None:
            env.pop("JAX_PLATFORMS", None)
        else:
            env["JAX_PLATFORMS"] = original
    if backend == "gpu":
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", str(settings["mem_fraction"]))
    return env


def _stderr_tail(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    interesting = [line for line in lines if "Error" in line or "error" in line or "Killed" in line]
    return ((interesting or lines or ["(no output)"])[-1])[:400]


def run_isolated(spec: dict[str, Any], env: dict[str, str], timeout: float,
                 workdir: Path) -> dict[str, Any]:
    """run_config in a fresh Python process; a crash or timeout becomes a row."""
    handle, spec_path = tempfile.mkstemp(prefix="spec-", suffix=".json", dir=workdir)
    os.close(handle)
    result_path = spec_path.replace("spec-", "result-")
    Path(spec_path).write_text(json.dumps(spec))
    command = [sys.executable, "-m", "lra.bench", "--worker", spec_path, result_path]
    tick = time.perf_counter()
    try:
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"status": "timeout", "message": f"did not finish within {timeout:.0f} s (killed)",
                "wall_s": round(time.perf_counter() - tick, 3)}
    finally:
        Path(spec_path).unlink(missing_ok=True)
    wall = round(time.perf_counter() - tick, 3)
    result = Path(result_path)
    if proc.returncode == 0 and result.is_file():
        row = json.loads(result.read_text())
        result.unlink(missing_ok=True)
        row["wall_s"] = wall  # the whole subprocess: start-up, build, compile, timing
        return row
    result.unlink(missing_ok=True)
    tail = _stderr_tail(proc.stderr)
    if proc.returncode in (-9, 137) or is_oom(proc.stderr or ""):
        return {"status": "oom", "message": f"process killed or out of memory (exit {proc.returncode}): {tail}",
                "wall_s": wall}
    return {"status": "error", "message": f"worker exited with {proc.returncode}: {tail}", "wall_s": wall}


def device_slug(device_kind: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", device_kind.lower()).strip("-")
    return slug or "device"


class Sweep:
    """Runs the configurations, keeps the rows and rewrites the outputs after each."""

    def __init__(self, settings, entries, device, paths, command, previous=None,
                 earlier_commands=(), peer=None):
        previous = previous or {}
        self.settings = settings
        self.peer = peer  # rows of the PyTorch peer's JSON (peer=), or None
        self.entries = entries
        self.device = device
        self.paths = paths
        self.command = command
        self.earlier_commands = list(earlier_commands)
        # Earlier rows of models or lengths that this run does not cover stay in the report
        # as they were (a resume that measures one model again keeps the others); covered
        # ones are kept unless 'skipped' or 'error', which run again.
        covered = {(e["name"], length) for e in entries for length in settings["lengths"]}
        self.rows: list[dict[str, Any]] = [
            {k: v for k, v in row.items() if k in COLUMNS}
            for key, row in previous.items() if key not in covered]
        self.previous = {key: row for key, row in previous.items()
                         if key in covered and row.get("status") not in ("skipped", "error")}
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.total = len(self.rows) + len(covered)
        self.peak_flops = None
        if settings["peak_tflops"] is not None:
            self.peak_flops = settings["peak_tflops"] * 1e12
        elif device["backend"] == "gpu":
            self.peak_flops = PEAK_TFLOPS[settings["precision"]] * 1e12

    def spec(self, entry, length, cache_dir: str | None = None) -> dict[str, Any]:
        s = self.settings
        return {
            "cache_dir": cache_dir,
            "name": entry["name"], "base": entry["base"], "options": entry["options"],
            "length": length, "batch": s["batch"], "mode": s["mode"], "precision": s["precision"],
            "warmup": s["warmup"], "repeats": s["repeats"], "timing_s": s["timing_s"],
            "seed": s["seed"], "memory_limit": s["memory_limit"], "peak_flops": self.peak_flops,
            "encoder": {k: s[k] for k in ("vocab", "classes", "layers", "dim", "heads", "qkv_dim",
                                          "mlp_dim", "dropout", "attention_dropout", "pooling")},
        }

    def base_row(self, entry, length) -> dict[str, Any]:
        s = self.settings
        return {
            "device": self.device["slug"], "backend": self.device["backend"],
            "model": entry["name"], "base_model": entry["base"],
            "options": json.dumps(entry["options"], sort_keys=True), "length": length,
            "seq_len": length + (1 if s["pooling"] == "cls" else 0), "batch": s["batch"],
            "precision": s["precision"], "mode": s["mode"],
        }

    def precheck(self, entry, length) -> str | None:
        """The model's own config check at this length, here, without a subprocess."""
        import jax.numpy as jnp

        from lra.models import EncoderConfig, check_model

        s = self.settings
        enc = EncoderConfig(
            vocab_size=s["vocab"], max_len=length, num_layers=s["layers"], dim=s["dim"],
            num_heads=s["heads"], qkv_dim=s["qkv_dim"], mlp_dim=s["mlp_dim"], dropout=s["dropout"],
            attention_dropout=s["attention_dropout"], pooling=s["pooling"],
            dtype={"bf16": jnp.bfloat16, "fp32": jnp.float32}[s["precision"]],
        )
        try:
            check_model(entry["base"], dict(entry["options"]), enc)
        except LraError as err:
            return f"LraError: {err}"
        return None

    def remaining(self) -> float | None:
        if self.settings["budget"] is None:
            return None
        return self.settings["budget"] - (time.perf_counter() - self.start)

    def emit(self, entry, length, result, kept: bool = False) -> None:
        row = {**self.base_row(entry, length), **result}
        if not self.settings["isolate"] and not kept:
            row["peak_bytes_train"] = row["peak_bytes_infer"] = None  # not isolated: meaningless
        with self.lock:
            self.rows.append(row)
            done = len(self.rows)
            write_outputs(self, plot=False)
        print(progress_line(row, done, self.total) + (" (kept from the earlier run)" if kept else ""),
              flush=True)

    def run_model(self, entry, gpu, workdir, lane: int = 0) -> None:
        s = self.settings
        stop = None
        for length in s["lengths"]:
            reason = unsupported_reason(entry["name"], self.device["backend"], s["precision"])
            left = self.remaining()
            kept = self.previous.get((entry["name"], length))
            if kept is not None and kept["options"] != json.dumps(entry["options"], sort_keys=True):
                kept = None  # measured with other model options: run again
            if kept is not None:
                result = {k: v for k, v in kept.items() if k in COLUMNS and v is not None}
            elif reason:
                result = {"status": "unsupported", "message": reason}
            elif stop:
                result = {"status": "skipped", "message": stop}
            elif left is not None and left < 10:
                result = {"status": "skipped", "message": "time budget spent"}
            elif s["isolate"] and (problem := self.precheck(entry, length)):
                result = {"status": "error", "message": problem}
            elif s["isolate"]:
                timeout = s["timeout"] if left is None else min(s["timeout"], left)
                env = _child_env(s, gpu, self.device["backend"])
                cache = workdir / f"jax-cache-lane{lane}"  # one process at a time uses it
                result = run_isolated(self.spec(entry, length, str(cache)), env, timeout, workdir)
                if result["status"] == "timeout" and timeout < s["timeout"]:
                    result.update(status="skipped",
                                  message=f"time budget spent (killed after {timeout:.0f} s)")
            else:
                result = run_config(self.spec(entry, length))
            self.emit(entry, length, result, kept=kept is not None)
            status = result["status"]
            if status in ("oom", "timeout") and not stop:
                stop = f"not run: {status} at length {length}"
            elif (status == "ok" and s["skip_after"] is not None
                  and result.get("wall_s", 0) > s["skip_after"] and not stop):
                stop = (f"not run: length {length} took {result['wall_s']:.0f} s "
                        f"> skip_after={s['skip_after']:.0f} s")

    def run(self) -> None:
        s = self.settings
        workdir = Path(tempfile.mkdtemp(prefix=".bench-", dir=self.paths["dir"]))
        try:
            if not s["isolate"]:
                for entry in self.entries:
                    self.run_model(entry, None, workdir)
                return
            work: queue.Queue = queue.Queue()
            for entry in self.entries:
                work.put(entry)
            gpus = self.gpu_slots()

            def lane(index, gpu):
                while True:
                    try:
                        entry = work.get_nowait()
                    except queue.Empty:
                        return
                    self.run_model(entry, gpu, workdir, index)

            threads = [threading.Thread(target=lane, args=(index, gpu), daemon=True)
                       for index, gpu in enumerate(gpus)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def gpu_slots(self) -> list[str | None]:
        workers = self.settings["workers"]
        if self.device["backend"] != "gpu":
            return [None] * (workers or 1)
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = ([v.strip() for v in visible.split(",") if v.strip()] if visible
               else [str(i) for i in range(self.device["device_count"])])
        count = min(workers or len(ids), len(ids))
        return ids[:max(count, 1)]


def progress_line(row: dict[str, Any], done: int, total: int) -> str:
    head = f"[{done:>3}/{total}] {row['model']:<20} L={row['length']:<6} {row['status']:<11}"
    if row["status"] != "ok":
        return f"{head} {row.get('message', '')}"
    parts = []
    if row.get("train_steps_per_s"):
        parts.append(f"{row['train_steps_per_s']:.3g} steps/s")
    if row.get("infer_examples_per_s"):
        parts.append(f"{row['infer_examples_per_s']:.4g} ex/s")
    memory = row.get("peak_bytes_train") or row.get("peak_bytes_infer") \
        or row.get("compiled_bytes_train") or row.get("compiled_bytes_infer")
    if memory:
        parts.append(format_bytes(memory))
    compile_s = (row.get("compile_train_s") or 0) + (row.get("compile_infer_s") or 0)
    if compile_s:
        parts.append(f"compile {compile_s:.1f} s")
    parts.append(f"wall {row.get('wall_s', 0):.1f} s")
    return f"{head} " + ", ".join(parts)





def _probe_device(settings: dict[str, Any]) -> dict[str, Any]:
    if not settings["isolate"]:
        return probe()
    env = _child_env(settings, None, "unknown")
    if env.get("JAX_PLATFORMS", "").strip().lower() == "cpu":  # no need to ask a subprocess
        from lra.records import package_versions

        return {"backend": "cpu", "device_kind": "cpu", "device_count": 1, "platform": "cpu",
                "versions": package_versions()}
    with tempfile.TemporaryDirectory(prefix="lra-bench-probe-") as tmp:
        result = Path(tmp) / "probe.json"
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        try:
            proc = subprocess.run([sys.executable, "-m", "lra.bench", "--probe", str(result)],
                                  env=env, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            raise LraError("the device probe did not answer within 300 s")
        if proc.returncode != 0 or not result.is_file():
            raise LraError(f"the device probe failed: {_stderr_tail(proc.stderr)}")
        return json.loads(result.read_text())


# Settings that change what a row measures: rows kept by resume=true must agree on them.
SIGNATURE = ("batch", "precision", "mode", "layers", "dim", "heads", "qkv_dim", "mlp_dim", "vocab",
             "classes", "dropout", "attention_dropout", "pooling", "seed", "memory_limit")


def load_previous(path: Path, settings: dict[str, Any],
                  device: dict[str, Any] | None = None) -> tuple[dict, list[str]]:
    """Rows of an earlier run's JSON, by (model, length), and the commands that made
    them; refused where the earlier run measured something else."""
    try:
        record = json.loads(path.read_text())
        before = record["settings"]
        rows = record["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LraError(f"cannot resume from {path}: {err}; move it away or use another out= or tag=")
    different = [k for k in SIGNATURE if before.get(k) != settings[k]]
    if device is not None and record.get("device", {}).get("slug") != device.get("slug"):
        different.append("device")
    if different:
        detail = ", ".join(f"{k}={before.get(k)} (now {settings[k]})" if k in settings else
                           f"device={record.get('device', {}).get('slug')} (now {device['slug']})"
                           for k in different)
        raise LraError(f"cannot resume from {path}: it was measured with {detail}; "
                       "use another out= or tag=, or the same settings")
    commands = [*record.get("earlier_commands", []), record.get("command", "")]
    return {(r["model"], int(r["length"])): r for r in rows if r.get("status")}, commands


def merge(settings: dict[str, Any]) -> int:
    """merge=a.json,b.json: one report of sweeps made in several calls (later files win
    for the same model and length), without measuring anything."""
    paths_in = [Path(p) for p in settings["merge"]]
    for path in paths_in:
        if not path.is_file():
            raise LraError(f"merge: no file {path}; give the efficiency-*.json files of `lra bench`")
    first = json.loads(paths_in[0].read_text())
    device, base = first["device"], first["settings"]
    for key in SIGNATURE:
        settings[key] = base.get(key)
    for key in ("lengths", "isolate", "timing_s", "repeats", "warmup"):
        settings[key] = base.get(key, settings[key])
    peer = load_peer(settings["peer"], settings) if settings["peer"] else first.get("peer")
    rows, commands = {}, []
    for path in paths_in:
        kept, made_by = load_previous(path, settings, device)
        rows.update(kept)
        commands += made_by
    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    paths = _output_paths(out, device["slug"], settings["tag"])
    sweep = Sweep(settings, [], device, paths, commands[-1], rows, commands[:-1], peer)
    sweep.peak_flops = first.get("peak_flops")
    write_outputs(sweep, plot=settings["plot"])
    print(f"lra bench: merged {len(rows)} row(s) of {len(paths_in)} file(s) -> {paths['md']}")
    return 0


def _output_paths(out: Path, slug: str, tag: str | None) -> dict[str, Any]:
    from lra.records import utc_now

    stem = f"{RESULT_MARK}-{slug}" + (f"-{tag}" if tag else "")
    return {"dir": out, "csv": out / f"{stem}.csv", "md": out / f"{stem}.md",
            "png": out / f"{stem}.png", "json": out / f"{stem}.json", "date": utc_now()}


def main(args: list[str]) -> int:
    if any(a in ("-h", "--help", "help") for a in args):
        print(usage())
        return 0
    settings = parse_args(args)
    if settings["merge"]:
        return merge(settings)
    peer = load_peer(settings["peer"], settings) if settings["peer"] else None
    if settings["isolate"] and "jax" not in sys.modules:
        # This process only orchestrates: keep it off the accelerator, whose memory
        # belongs to the measured subprocesses (they get the original setting back).
        _CHILD_PLATFORMS.setdefault("JAX_PLATFORMS", os.environ.get("JAX_PLATFORMS"))
        os.environ["JAX_PLATFORMS"] = "cpu"
    entries = resolve_models(settings)
    device = _probe_device(settings)
    device["slug"] = device_slug(device["device_kind"])
    out = Path(settings["out"])
    out.mkdir(parents=True, exist_ok=True)
    paths = _output_paths(out, device["slug"], settings["tag"])
    command = "lra bench " + " ".join(args)
    previous, earlier = {}, []
    if settings["resume"] and paths["json"].is_file():
        previous, earlier = load_previous(paths["json"], settings, device)
        print(f"lra bench: resume=true: {len(previous)} row(s) of {paths['json']}", flush=True)
    elif settings["resume"]:
        print(f"lra bench: resume=true, but there is no {paths['json']} yet; running everything",
              flush=True)
    sweep = Sweep(settings, entries, device, paths, command, previous, earlier, peer)
    print(f"lra bench: {len(entries)} model(s) x {len(settings['lengths'])} length(s) on "
          f"{device['device_kind']} ({device['backend']}), {settings['precision']}, "
          f"batch {settings['batch']}, mode {settings['mode']}", flush=True)
    sweep.run()
    result = write_outputs(sweep, plot=settings["plot"])
    rows = result["rows"]
    if result["plot_note"] and not result["plot_note"].startswith("Plot:"):
        print(f"lra bench: {result['plot_note']}")
    if peer is not None and settings["mode"] in ("train", "both"):
        for t in peer_comparison(rows, peer):
            if t["ratio_cudnn"] is not None:
                print(f"lra bench: L={t['length']}: transformer_cudnn {t['transformer_cudnn']:.3g} steps/s "
                      f"vs the PyTorch peer {t['peer']:.3g}: {t['ratio_cudnn']:.2f}x "
                      f"({'meets' if t['meets_target'] else 'misses'} the {PEER_TARGET_RATIO}x goal)")
    counts = {status: sum(r["status"] == status for r in rows) for status in STATUSES}
    summary = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    written = [paths["csv"], paths["md"], paths["json"]]
    if settings["plot"] and paths["png"].exists() and (result["plot_note"] or "").startswith("Plot:"):
        written.append(paths["png"])
    print(f"lra bench: {summary} -> " + ", ".join(str(p) for p in written))
    return 1 if counts["error"] else 0
