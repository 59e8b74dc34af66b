"""Rows to reports: derived ratios, crossovers, growth fits, the PyTorch peer
comparison, and the CSV, Markdown, JSON and PNG files."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from lra.bench.settings import BASELINES, COLUMNS, PEER_TARGET_RATIO, linear_models
from lra.errors import LraError

if TYPE_CHECKING:
    from lra.bench.sweep import Sweep


def finalise_rows(rows: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """Memory column and ratios to both Transformer baselines at the same length."""
    out = []
    for row in rows:
        row = {column: row.get(column) for column in COLUMNS}
        train = mode in ("train", "both")
        peak = row["peak_bytes_train"] if train else row["peak_bytes_infer"]
        compiled = row["compiled_bytes_train"] if train else row["compiled_bytes_infer"]
        if peak:
            row["memory_bytes"], row["memory_source"] = peak, "peak_bytes_in_use"
        elif compiled:
            row["memory_bytes"], row["memory_source"] = compiled, "compiled"
        out.append(row)
    ok = {(r["model"], r["length"]): r for r in out if r["status"] == "ok"}
    for row in out:
        for base in BASELINES:
            ref = ok.get((base, row["length"]))
            steps = memory = infer = None
            if row["status"] == "ok" and ref is not None:
                steps = _ratio(row["train_steps_per_s"], ref["train_steps_per_s"])
                infer = _ratio(row["infer_examples_per_s"], ref["infer_examples_per_s"])
                if row["memory_source"] == ref["memory_source"]:
                    memory = _ratio(row["memory_bytes"], ref["memory_bytes"])
            row[f"steps_ratio_vs_{base}"] = steps
            row[f"memory_ratio_vs_{base}"] = memory
            row[f"infer_ratio_vs_{base}"] = infer
    order = {name: i for i, name in enumerate(dict.fromkeys(r["model"] for r in rows))}
    out.sort(key=lambda r: (order[r["model"]], r["length"]))
    return out


def _ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _out_of_reach(row: dict[str, Any]) -> bool:
    """The configuration failed for its size: out of memory or time, or skipped after that."""
    if row["status"] in ("oom", "timeout"):
        return True
    message = row.get("message") or ""
    return row["status"] == "skipped" and message.startswith(("not run: oom", "not run: timeout"))


def crossover(rows: list[dict[str, Any]], model: str, baseline: str) -> str:
    """The shortest length from which `model` trains faster than `baseline` at every
    longer measured length (a baseline that ran out of memory counts as slower)."""
    by_len = {}
    for r in rows:
        if r["model"] in (model, baseline):
            by_len.setdefault(r["length"], {})[r["model"]] = r
    lengths = sorted(by_len)
    base_rows = [by_len[L].get(baseline) for L in lengths if by_len[L].get(baseline)]
    if base_rows and all(b["status"] == "unsupported" for b in base_rows):
        return f"n/a ({baseline} unsupported here)"
    if not any(b["status"] in ("ok", "oom", "skipped", "timeout") for b in base_rows):
        return f"n/a ({baseline} did not run)"
    wins: list[tuple[int, bool | None, str]] = []
    for L in lengths:
        m, b = by_len[L].get(model), by_len[L].get(baseline)
        if m is None or m["status"] != "ok" or not m.get("train_steps_per_s"):
            wins.append((L, None, ""))
            continue
        if b is not None and b["status"] == "ok" and b.get("train_steps_per_s"):
            wins.append((L, m["train_steps_per_s"] > b["train_steps_per_s"], ""))
        elif b is not None and _out_of_reach(b):
            wins.append((L, True, f" ({baseline} {b['status']})"))
        else:
            wins.append((L, None, ""))
    measured = [w for w in wins if w[1] is not None]
    if not measured:
        return "no comparable lengths"
    start = None
    for L, win, _ in reversed(measured):
        if not win:
            break
        start = L
    if start is None:
        return "not within the tested lengths"
    failed = [(L, note) for L, win, note in measured if L >= start and note]
    note = f" ({failed[0][1].strip()[1:-1]} from {failed[0][0]})" if failed else ""
    if start == measured[0][0]:
        return f"faster at every tested length (from {start}){note}"
    return f"{start}{note}"


def _line_fit(xs: list[float], ys: list[float]) -> tuple[float, float, float] | None:
    """Least-squares y ~ a + b * x: (slope b, intercept a, R^2); None without spread in x."""
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    return slope, intercept, (1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)


def _ok_points(rows, model: str, column: str) -> list[tuple[int, float]]:
    return sorted((r["length"], float(r[column])) for r in rows
                  if r["model"] == model and r["status"] == "ok" and r.get(column))


def memory_fit(rows: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """Least-squares memory_bytes ~ a + b * L over the model's ok rows."""
    points = _ok_points(rows, model, "memory_bytes")
    fit = _line_fit([float(L) for L, _ in points], [y for _, y in points]) if len(points) > 1 else None
    if fit is None:
        return None
    slope, intercept, r2 = fit
    return {"slope": slope, "intercept": intercept, "r2": r2, "points": len(points),
            "lengths": [L for L, _ in points]}


def growth_exponent(rows: list[dict[str, Any]], model: str, column: str) -> float | None:
    """Least-squares slope of log(column) against log(L) over the model's ok rows: about 1
    for linear growth, 2 for quadratic (fixed overheads pull it below at short lengths)."""
    points = _ok_points(rows, model, column)
    fit = (_line_fit([math.log(L) for L, _ in points], [math.log(y) for _, y in points])
           if len(points) > 1 else None)
    return None if fit is None else fit[0]


def load_peer(path: str, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of shared/bench/peer_torch_lra.py's JSON (one per length L, the tokens
    before the CLS token): refused unless it measured this bench's pooling and dropout."""
    try:
        rows = json.loads(Path(path).read_text())
        peer = [{"length": int(r["L"]), **{k: v for k, v in r.items() if k != "L"}} for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise LraError(f"peer={path}: not the JSON of peer_torch_lra.py ({err}); give the file it "
                       "wrote, peer_torch_lra_<pooling>_<dropout>.json")
    for row in peer:
        if "error" in row:
            continue
        measured = {"pooling": row.get("pooling"), "dropout": row.get("dropout")}
        if measured != {"pooling": settings["pooling"], "dropout": settings["dropout"]}:
            raise LraError(f"peer={path} measured pooling={measured['pooling']} dropout="
                           f"{measured['dropout']} but this bench runs pooling={settings['pooling']} "
                           f"dropout={settings['dropout']}; run the peer with the same")
    return peer


def peer_comparison(rows: list[dict[str, Any]], peer: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per length: lra's Transformers against the peer, steps/s and the ratio lra/peer."""
    ours = {r["length"]: r for r in rows if r["model"] == "transformer_cudnn" and r["status"] == "ok"}
    xla = {r["length"]: r for r in rows if r["model"] == "transformer_xla" and r["status"] == "ok"}
    table = []
    for p in sorted(peer, key=lambda r: r["length"]):
        L, theirs = p["length"], p.get("steps_per_s")
        cudnn = ours.get(L, {}).get("train_steps_per_s")
        plain = xla.get(L, {}).get("train_steps_per_s")
        table.append({
            "length": L, "peer": theirs, "peer_error": p.get("error"),
            "transformer_cudnn": cudnn, "ratio_cudnn": _ratio(cudnn, theirs),
            "transformer_xla": plain, "ratio_xla": _ratio(plain, theirs),
            "meets_target": (cudnn / theirs >= PEER_TARGET_RATIO) if cudnn and theirs else None,
        })
    return table


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:.{decimals}f}"


def format_bytes(value) -> str:
    if value is None:
        return "-"
    value = float(value)
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= size:
            return f"{value / size:.2f} {unit}"
    return f"{value:.0f} B"


_STATUS_CELL = {"oom": "OOM", "error": "error", "unsupported": "n/a", "timeout": "timeout",
                "skipped": "skipped"}


def _pivot(rows, models, lengths, cell: Callable[[dict], str]) -> list[str]:
    lines = ["| model | " + " | ".join(str(L) for L in lengths) + " |",
             "|---|" + "---:|" * len(lengths)]
    index = {(r["model"], r["length"]): r for r in rows}
    for model in models:
        cells = []
        for L in lengths:
            r = index.get((model, L))
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(_STATUS_CELL.get(r["status"], r["status"]))
            else:
                cells.append(cell(r))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _ratio_tables(rows, models, lengths, measure: str, title: str, reading: str) -> list[str]:
    """One pivot of `<measure>_ratio_vs_<baseline>` per baseline that ran."""
    lines = []
    for base in BASELINES:
        if any(r["model"] == base and r["status"] == "ok" for r in rows):
            column = f"{measure}_ratio_vs_{base}"
            lines += ["", f"### {title} relative to {base} (x, {reading})", ""]
            lines += _pivot(rows, models, lengths,
                            lambda r, c=column: _fmt(r[c], 2) + "x" if r[c] is not None else "-")
    return lines


def render_markdown(sweep: Sweep, rows: list[dict[str, Any]], plot_note: str | None) -> str:
    s, device = sweep.settings, sweep.device
    models = list(dict.fromkeys(r["model"] for r in rows))
    lengths = sorted({r["length"] for r in rows})
    train = s["mode"] in ("train", "both")
    infer = s["mode"] in ("infer", "both")
    versions = device.get("versions", {})
    timed = s["repeats"] or f"about {s['timing_s']:g} s worth (3 to 50) of"
    lines = [
        f"# Efficiency: {device['device_kind']} ({device['backend']})",
        "",
        f"`{sweep.command}`",
        "",
        *(["Rows kept from earlier runs: " + "; ".join(f"`{c}`" for c in sweep.earlier_commands),
           ""] if sweep.earlier_commands else []),
        f"- Shape: LRA byte-level text config: {s['layers']} layers, width {s['dim']}, {s['heads']} heads, "
        f"qkv {s['qkv_dim']}, MLP {s['mlp_dim']}, vocabulary {s['vocab']}, {s['classes']} classes, "
        f"{s['pooling']} pooling, batch {s['batch']}, {s['precision']} compute (fp32 parameters).",
        f"- Dropout {s['dropout']} in training steps (as LRA); attention dropout {s['attention_dropout']} "
        "for every model, because attention dropout needs the attention weights and forces "
        "`transformer` onto its explicit (materialised) path, so no fused baseline could exist.",
        "- Inputs: random bytes in 1..vocab-1 (never padding), full length; labels random.",
        "- Training step: exactly the step `lra train` runs, `lra.trainer.train_step` (forward, "
        "backward, gradient norm, learning rate, AdamW update of `lra.trainer.make_optimizer`, "
        "loss and accuracy) under jax.jit, state donated. Inference step: "
        "`lra.trainer.eval_step` (forward and metrics), as `lra train` evaluates.",
        f"- Timing: {s['warmup']} warm-up steps excluded, then the median of {timed} timed "
        "steps, each ended by jax.block_until_ready. Compile time is reported separately.",
        "- Memory: " + memory_note(rows, s["isolate"]),
        "- FLOPs: XLA's `cost_analysis()['flops']` of the compiled step. XLA does not count "
        "inside cuDNN's fused attention custom call; for rows that use it the attention matmuls "
        "are added analytically (forward 4*B*H*L^2*D per layer, training 3.5x forward: the "
        "backward is 2.5x the forward in FlashAttention's accounting) and flops_source says "
        "`xla+analytic_attention`.",
        "- MFU: training FLOPs per second / " + (
            f"{sweep.peak_flops / 1e12:g} TFLOP/s peak" if sweep.peak_flops else
            "no peak (not a GPU and no peak_tflops= given): MFU not computed") + ".",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        f"- Date: {sweep.paths.get('date', '')}",
        "",
    ]
    if train:
        lines += ["## Training steps per second", ""]
        lines += _pivot(rows, models, lengths, lambda r: _fmt(r["train_steps_per_s"]))
        lines += _ratio_tables(rows, models, lengths, "steps", "Training speed", ">1 is faster")
        lines += [""]
    sources = {r["memory_source"] for r in rows if r["memory_source"]}
    memory_title = "Peak memory" if sources == {"peak_bytes_in_use"} else (
        "Compiled memory footprint" if sources == {"compiled"} else "Memory")
    lines += [f"## {memory_title} ({'training' if train else 'inference'} step)", ""]
    lines += _pivot(rows, models, lengths, lambda r: format_bytes(r["memory_bytes"]))
    lines += _ratio_tables(rows, models, lengths, "memory", "Memory", "<1 is less")
    lines += [""]
    if infer:
        lines += ["## Inference examples per second", ""]
        lines += _pivot(rows, models, lengths, lambda r: _fmt(r["infer_examples_per_s"]))
        lines += [""]
    lines += ["## Compile time (s, training step" + (" + inference step" if infer and train else "") + ")", ""]
    lines += _pivot(rows, models, lengths, lambda r: _fmt(
        (r["compile_train_s"] or 0) + (r["compile_infer_s"] or 0), 3))
    lines += [""]
    if train:
        lines += ["## Training TFLOP/s" + (" and MFU" if sweep.peak_flops else ""), ""]
        lines += _pivot(rows, models, lengths, lambda r: (
            _fmt(r["train_tflops_per_s"]) + (f" ({100 * r['train_mfu']:.1f}%)" if r["train_mfu"] else "")
            + ("*" if r["flops_source"] == "xla+analytic_attention" else "")))
        if any(r["flops_source"] == "xla+analytic_attention" for r in rows):
            lines += ["", "`*` attention FLOPs of the cuDNN kernel added analytically."]
        lines += [""]
        lines += ["## Where efficient models overtake exact attention (training steps/s)", "",
                  "The shortest length from which the model is faster at every longer tested "
                  "length (a baseline out of memory counts as slower).", "",
                  "| model | vs transformer_xla | vs transformer_cudnn |", "|---|---|---|"]
        for model in models:
            if model in BASELINES:
                continue
            lines.append(f"| {model} | {crossover(rows, model, 'transformer_xla')} | "
                         f"{crossover(rows, model, 'transformer_cudnn')} |")
        lines += [""]
    linear = linear_models(models)
    lines += ["## Memory against length for the linear-time models", "",
              f"Least-squares fit memory_bytes = a + b * L over the lengths that ran "
              f"({', '.join(sorted(sources)) or 'no'} bytes). R^2 near 1 means linear growth.", "",
              "| model | slope b (bytes/token) | intercept a | R^2 | points |", "|---|---:|---:|---:|---:|"]
    for model in linear:
        fit = memory_fit(rows, model)
        if fit is None:
            lines.append(f"| {model} | - | - | - | fewer than 2 |")
        else:
            trivial = " (2 points: trivially 1)" if fit["points"] == 2 else ""
            lines.append(f"| {model} | {format_bytes(fit['slope'])}/token | {format_bytes(fit['intercept'])} | "
                         f"{fit['r2']:.4f}{trivial} | {fit['points']} |")
    if not linear:
        lines.append("| (none of the benchmarked models) | | | | |")
    lines += ["", "## Growth with length, every model", "",
              "Slope of log(value) against log(L) over the lengths that ran: about 1 is linear "
              "growth, 2 quadratic. Fixed costs (parameters, optimizer state, the MLP) pull it "
              "below the attention's own exponent at short lengths.", "",
              "| model | memory exponent | " + ("step time exponent | " if train else "")
              + "lengths |", "|---|---:|" + ("---:|" if train else "") + "---|"]
    for model in models:
        memory = growth_exponent(rows, model, "memory_bytes")
        spans = sorted(r["length"] for r in rows if r["model"] == model and r["status"] == "ok")
        cells = [f"{memory:.2f}" if memory is not None else "-"]
        if train:
            step = growth_exponent(rows, model, "train_step_ms")
            cells.append(f"{step:.2f}" if step is not None else "-")
        span = f"{spans[0]}-{spans[-1]} ({len(spans)})" if spans else "none"
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {span} |")
    lines += [""]
    if train and sweep.peer is not None:
        lines += peer_section(sweep, rows)
    failures = [r for r in rows if r["status"] not in ("ok",)]
    if failures:
        lines += ["## Rows that did not run", "", "| model | length | status | message |", "|---|---:|---|---|"]
        for r in failures:
            message = (r.get("message") or "").replace("|", "\\|")
            lines.append(f"| {r['model']} | {r['length']} | {r['status']} | {message} |")
        lines += [""]
    if plot_note:
        lines += [plot_note, ""]
    lines += [f"Every column, per (model, length): `{sweep.paths['csv'].name}`.", ""]
    return "\n".join(lines)


def peer_section(sweep: Sweep, rows: list[dict[str, Any]]) -> list[str]:
    """The PyTorch peer (shared/bench/peer_torch_lra.py), measured in the same job."""
    lines = ["## Against the PyTorch peer, measured in the same job", "",
             "`peer_torch_lra.py` is PyTorch 2.11 running this Transformer (CLS token, the same "
             "dropout placement, fixed sinusoidal positions, bias-free q/k/v/out, final LayerNorm, "
             "the same head; bf16 autocast, SDPA, fused AdamW, torch.compile; every step "
             f"synchronised), read from `{sweep.settings['peer']}`. Ratio = lra steps/s / peer "
             f"steps/s; goal: transformer_cudnn >= {PEER_TARGET_RATIO}x at every length.", "",
             f"| length | peer steps/s | transformer_cudnn | ratio | >= {PEER_TARGET_RATIO}x "
             "| transformer_xla | ratio |", "|---:|---:|---:|---:|---|---:|---:|"]
    for t in peer_comparison(rows, sweep.peer):
        meets = "-" if t["meets_target"] is None else ("yes" if t["meets_target"] else "no")
        theirs = _fmt(t["peer"]) if t["peer"] is not None else f"error: {t['peer_error']}"
        ratios = [f"{t[k]:.2f}" if t[k] is not None else "-" for k in ("ratio_cudnn", "ratio_xla")]
        lines.append(f"| {t['length']} | {theirs} | {_fmt(t['transformer_cudnn'])} | {ratios[0]} | "
                     f"{meets} | {_fmt(t['transformer_xla'])} | {ratios[1]} |")
    return lines + [""]


def memory_note(rows: list[dict[str, Any]], isolated: bool) -> str:
    sources = {r["memory_source"] for r in rows if r["memory_source"]}
    notes = []
    if "peak_bytes_in_use" in sources:
        notes.append("`peak_bytes_in_use` of the device (`memory_stats()`), each (model, length) in "
                     "a fresh process, so the peak is that configuration's own")
    if "compiled" in sources:
        why = ("runs were not isolated (isolate=false), so a process-wide peak would mix configurations"
               if not isolated else "this backend reports no peak (`memory_stats()` is None)")
        notes.append(f"where {why}: the compiled executable's footprint (`memory_analysis()`: "
                     "temp + arguments + outputs - donated aliases; the compiled_bytes_* columns "
                     "hold it for every row)")
    return "; ".join(notes) + "." if notes else "no configuration reported memory."


def write_plot(rows: list[dict[str, Any]], path: Path, title: str, train: bool) -> str | None:
    """steps/s and memory against length, log-log. Returns a notice if skipped."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "Plot skipped: matplotlib is not installed (pip install 'lra[plot]')."
    speed_key = "train_steps_per_s" if train else "infer_examples_per_s"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    models = list(dict.fromkeys(r["model"] for r in rows))
    colours = plt.get_cmap("tab20")
    markers = "os^vD<>ph*"
    drawn = False
    for index, model in enumerate(models):
        points = sorted((r["length"], r[speed_key], r["memory_bytes"]) for r in rows
                        if r["model"] == model and r["status"] == "ok")
        if not points:
            continue
        style = dict(marker=markers[index % len(markers)], linewidth=1.4, markersize=4,
                     color=colours(index % 20))
        if model in BASELINES:
            style.update(linewidth=2.6, linestyle="--", marker="o",
                         color="black" if model.endswith("cudnn") else "grey")
        xs = [p[0] for p in points]
        axes[0].plot(xs, [p[1] for p in points], label=model, **style)
        mem = [(p[0], p[2] / 2**30) for p in points if p[2]]
        if mem:
            axes[1].plot([m[0] for m in mem], [m[1] for m in mem], label=model, **style)
        drawn = True
    if not drawn:
        plt.close(fig)
        return "Plot skipped: no configuration ran."
    axes[0].set_ylabel("training steps/s" if train else "inference examples/s")
    sources = {r["memory_source"] for r in rows if r["memory_source"]}
    axes[1].set_ylabel("peak memory (GiB)" if sources == {"peak_bytes_in_use"}
                       else "compiled footprint (GiB)" if sources == {"compiled"} else "memory (GiB)")
    lengths = sorted({r["length"] for r in rows})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(lengths)
        ax.set_xticklabels([str(L) for L in lengths], rotation=45 if len(lengths) > 6 else 0)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("sequence length (tokens)")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return None


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
    os.replace(tmp, path)


def write_outputs(sweep: Sweep, plot: bool) -> dict[str, Any]:
    from lra.records import write_json_atomic

    rows = finalise_rows(sweep.rows, sweep.settings["mode"])
    paths = sweep.paths
    _write_csv(paths["csv"], rows)
    plot_note = None
    if plot:
        plot_note = write_plot(rows, paths["png"], f"{sweep.device['device_kind']}: "
                               f"batch {sweep.settings['batch']}, {sweep.settings['precision']}",
                               sweep.settings["mode"] in ("train", "both"))
        if plot_note is None:
            plot_note = f"Plot: `{paths['png'].name}` (log-log)."
    markdown = render_markdown(sweep, rows, plot_note)
    tmp = paths["md"].with_name(f".{paths['md'].name}.tmp-{os.getpid()}")
    tmp.write_text(markdown)
    os.replace(tmp, paths["md"])
    write_json_atomic(paths["json"], {
        "command": sweep.command, "earlier_commands": sweep.earlier_commands,
        "date": paths.get("date"), "device": sweep.device,
        "settings": {k: v for k, v in sweep.settings.items()},
        "peak_flops": sweep.peak_flops, "peer": sweep.peer,
        "rows": rows,
    })
    return {"rows": rows, "plot_note": plot_note}
