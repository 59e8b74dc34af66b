"""`lra bench` on the CPU at tiny sizes: schema, statuses, ratios, failures as rows."""

from __future__ import annotations

import csv
import json

import pytest

from lra import bench
from lra.bench import measure, report, settings, sweep
from lra.errors import LraError
from lra.registry import MODELS, load_all

load_all()

TINY = ["batch=2", "layers=1", "dim=32", "heads=2", "qkv_dim=32", "mlp_dim=64", "precision=fp32",
        "warmup=1", "repeats=3"]
OTHER = "linear_transformer" if "linear_transformer" in MODELS else None


pytestmark = pytest.mark.usefixtures("fast_compile")  # CPU children, quick compiles


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


def test_two_models_on_cpu_schema_statuses_and_ratios(tmp_path, capsys):
    models = ["model=" + OTHER] if OTHER else ["model=transformer_cudnn"]
    rc = bench.main([*models, "lengths=[64,128]", *TINY, f"out={tmp_path}"])
    assert rc == 0
    columns, rows = read_csv(tmp_path / "efficiency-cpu.csv")
    assert columns == list(settings.COLUMNS)
    by = {(r["model"], int(r["length"])): r for r in rows}
    expected = {"transformer_xla", "transformer_cudnn"} | ({OTHER} if OTHER else set())
    assert {m for m, _ in by} == expected
    assert len(rows) == len(expected) * 2
    assert all(r["status"] in settings.STATUSES for r in rows)
    for length in (64, 128):
        cudnn = by["transformer_cudnn", length]
        assert cudnn["status"] == "unsupported" and "GPU" in cudnn["message"]
        for model in expected - {"transformer_cudnn"}:
            row = by[model, length]
            assert row["status"] == "ok", row["message"]
            assert float(row["train_steps_per_s"]) > 0 and float(row["infer_examples_per_s"]) > 0
            assert float(row["train_tokens_per_s"]) == pytest.approx(
                float(row["train_steps_per_s"]) * 2 * length)
            assert float(row["compile_train_s"]) > 0 and float(row["compile_infer_s"]) > 0
            assert int(row["compiled_bytes_train"]) > 0 and int(row["seq_len"]) == length + 1
            assert row["peak_bytes_train"] == ""  # the CPU reports no memory stats
            assert row["memory_source"] == "compiled"
            assert float(row["train_flops"]) > 0 and row["flops_source"] == "xla"
            assert row["train_mfu"] == ""  # no peak on the CPU unless peak_tflops= is given
            assert int(row["train_repeats"]) == 3
            assert row["steps_ratio_vs_transformer_cudnn"] == ""
        base = by["transformer_xla", length]
        for column in ("steps_ratio_vs_transformer_xla", "memory_ratio_vs_transformer_xla",
                       "infer_ratio_vs_transformer_xla"):
            assert float(base[column]) == 1.0
        if OTHER:
            other = by[OTHER, length]
            assert float(other["steps_ratio_vs_transformer_xla"]) == pytest.approx(
                float(other["train_steps_per_s"]) / float(base["train_steps_per_s"]))
    md = (tmp_path / "efficiency-cpu.md").read_text()
    for section in ("## Training steps per second", "relative to transformer_xla",
                    "## Inference examples per second", "## Compile time",
                    "## Where efficient models overtake", "## Memory against length",
                    "## Growth with length, every model",
                    "attention dropout 0.0", "exactly the step `lra train` runs"):
        assert section in md
    assert "PyTorch peer" not in md  # only with peer=
    if OTHER:
        assert f"| {OTHER} |" in md.split("## Memory against length")[1]
    record = json.loads((tmp_path / "efficiency-cpu.json").read_text())
    assert record["device"]["backend"] == "cpu" and len(record["rows"]) == len(rows)
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "efficiency-cpu.png").stat().st_size > 0
    except ImportError:
        assert "Plot skipped" in md and "Plot skipped" in capsys.readouterr().out


def test_forced_failures_become_rows(tmp_path):
    """An invalid model option is an error row, an over-budget config an oom row."""
    if "linformer" not in MODELS or OTHER is None:
        pytest.skip("needs linformer and linear_transformer")
    rc = bench.main(["model=linear_transformer,linformer", "linformer.k=0", "memory_limit=1KB",
                     "baselines=false", "lengths=[64]", "mode=infer", "isolate=false", *TINY,
                     f"out={tmp_path}", "plot=false"])
    assert rc == 1  # an error row makes the exit status 1; the sweep itself finished
    _, rows = read_csv(tmp_path / "efficiency-cpu.csv")
    by = {r["model"]: r for r in rows}
    assert by["linformer"]["status"] == "error" and "k" in by["linformer"]["message"]
    assert by["linear_transformer"]["status"] == "oom"
    assert "memory_limit" in by["linear_transformer"]["message"]
    assert "## Rows that did not run" in (tmp_path / "efficiency-cpu.md").read_text()


def test_timeout_is_a_row_and_skips_longer_lengths(tmp_path):
    model = OTHER or "transformer_xla"
    rc = bench.main([f"model={model}", "baselines=false", "lengths=[64,128]", "timeout=0.5",
                     *TINY, f"out={tmp_path}", "plot=false", "mode=train"])
    assert rc == 0
    _, rows = read_csv(tmp_path / "efficiency-cpu.csv")
    assert [r["status"] for r in rows] == ["timeout", "skipped"]
    assert "timeout at length 64" in rows[1]["message"]


def test_resume_keeps_earlier_rows_and_runs_the_rest(tmp_path):
    model = OTHER or "transformer_xla"
    common = [f"model={model}", "baselines=false", "mode=infer", "isolate=false", *TINY,
              f"out={tmp_path}", "plot=false"]
    assert bench.main([*common, "lengths=[64]"]) == 0
    _, first = read_csv(tmp_path / "efficiency-cpu.csv")
    assert bench.main([*common, "lengths=[64,128]", "resume=true"]) == 0
    _, second = read_csv(tmp_path / "efficiency-cpu.csv")
    assert [(r["length"], r["status"]) for r in second] == [("64", "ok"), ("128", "ok")]
    assert second[0]["infer_step_ms"] == first[0]["infer_step_ms"]  # kept, not measured again
    # An error row runs again; rows of models this run does not name stay in the report.
    record_path = tmp_path / "efficiency-cpu.json"
    record = json.loads(record_path.read_text())
    record["rows"][1].update(status="error", message="a bug fixed since")
    record["rows"].append({**record["rows"][0], "model": "elsewhere", "infer_step_ms": 1.5})
    record_path.write_text(json.dumps(record))
    assert bench.main([*common, "lengths=[64,128]", "resume=true"]) == 0
    _, third = read_csv(tmp_path / "efficiency-cpu.csv")
    by = {(r["model"], r["length"]): r for r in third}
    assert set(by) == {(model, "64"), (model, "128"), ("elsewhere", "64")}
    assert by[model, "128"]["status"] == "ok" and by[model, "64"]["infer_step_ms"] == first[0]["infer_step_ms"]
    assert float(by["elsewhere", "64"]["infer_step_ms"]) == 1.5
    with pytest.raises(LraError, match="batch=2 \\(now 4\\)"):
        bench.main([*[a for a in common if a != "batch=2"], "batch=4", "lengths=[64]", "resume=true"])


def test_merge_makes_one_report_of_two_runs_without_measuring(tmp_path):
    model = OTHER or "transformer_xla"
    common = ["baselines=false", "mode=infer", "isolate=false", *TINY, "plot=false"]
    assert bench.main([f"model={model}", *common, "lengths=[64]", f"out={tmp_path / 'a'}"]) == 0
    assert bench.main(["model=transformer_xla", *common, "lengths=[64]", "tag=b",
                       f"out={tmp_path / 'b'}"]) == 0
    parts = [tmp_path / "a" / "efficiency-cpu.json", tmp_path / "b" / "efficiency-cpu-b.json"]
    assert bench.main([f"merge={parts[0]},{parts[1]}", f"out={tmp_path / 'm'}", "plot=false"]) == 0
    _, rows = read_csv(tmp_path / "m" / "efficiency-cpu.csv")
    originals = {r["model"]: r for p in parts for r in json.loads(p.read_text())["rows"]}
    assert {r["model"] for r in rows} == {model, "transformer_xla"}
    for row in rows:
        assert float(row["infer_step_ms"]) == originals[row["model"]]["infer_step_ms"]
    md = (tmp_path / "m" / "efficiency-cpu.md").read_text()
    assert "Rows kept from earlier runs" in md and "tag=b" in md
    with pytest.raises(LraError, match="no file"):
        bench.main([f"merge={tmp_path / 'none.json'}", f"out={tmp_path / 'm'}"])


@pytest.mark.parametrize("args", [
    ["lengths=abc"], ["lengths=[]"], ["mode=fast"], ["precision=fp8"], ["bogus=1"], ["batch=0"],
    ["model=nope"], ["linformer.nope=1", "model=linformer"], ["performer.k=1", "model=linformer"],
    ["transformer_xla.implementation=cudnn"], ["memory_limit=lots"], ["heads=3"], ["lengths"],
    ["isolate=maybe"],
])
def test_bad_arguments_are_one_line_errors(args, tmp_path):
    with pytest.raises(LraError) as err:
        bench.main([*args, f"out={tmp_path}"])
    assert "\n" not in str(err.value)
    assert not any(tmp_path.iterdir())


def test_cli_hook(capsys):
    from lra.cli import main

    assert main(["bench", "--help"]) == 0
    assert "lra bench" in capsys.readouterr().out
    assert main(["bench", "mode=fast"]) == 2
    assert "lra bench: error: mode='fast'" in capsys.readouterr().err


def test_growth_exponent_recovers_a_power_law():
    rows = [{"model": "m", "status": "ok", "length": L, "memory_bytes": 3.0 * L ** 2,
             "train_step_ms": 5.0 * L} for L in (1024, 2048, 4096)]
    rows.append({"model": "m", "status": "oom", "length": 8192, "memory_bytes": None})
    assert report.growth_exponent(rows, "m", "memory_bytes") == pytest.approx(2.0)
    assert report.growth_exponent(rows, "m", "train_step_ms") == pytest.approx(1.0)
    assert report.growth_exponent(rows[:1], "m", "memory_bytes") is None


def test_report_helpers():
    def row(model, length, status="ok", steps=None, memory=None):
        return {"model": model, "length": length, "status": status,
                "train_steps_per_s": steps, "memory_bytes": memory}

    rows = [
        row("transformer_cudnn", 1024, steps=100), row("transformer_cudnn", 2048, steps=40),
        row("transformer_cudnn", 4096, status="oom"),
        row("fast", 1024, steps=50, memory=10 + 2 * 1024), row("fast", 2048, steps=45, memory=10 + 2 * 2048),
        row("fast", 4096, steps=20, memory=10 + 2 * 4096),
        row("slow", 1024, steps=10), row("slow", 2048, steps=5), row("slow", 4096, status="oom"),
    ]
    assert report.crossover(rows, "fast", "transformer_cudnn") == "2048 (transformer_cudnn oom from 4096)"
    assert report.crossover(rows, "slow", "transformer_cudnn") == "not within the tested lengths"
    assert report.crossover(rows, "fast", "transformer_xla") == "n/a (transformer_xla did not run)"
    cpu = [row("transformer_cudnn", 1024, status="unsupported"), row("fast", 1024, steps=5)]
    assert report.crossover(cpu, "fast", "transformer_cudnn") == "n/a (transformer_cudnn unsupported here)"
    fit = report.memory_fit(rows, "fast")
    assert fit["slope"] == pytest.approx(2.0) and fit["intercept"] == pytest.approx(10.0)
    assert fit["r2"] == pytest.approx(1.0) and fit["points"] == 3
    assert report.memory_fit(rows, "slow") is None
    assert sweep.device_slug("NVIDIA H200") == "nvidia-h200"
    assert measure.attention_flops(32, 4, 1025, 64, 4, train=False) == 4 * 32 * 4 * 1025**2 * 64 * 4
    peer = [{"length": 1024, "steps_per_s": 121.0}, {"length": 2048, "error": "CUDA out of memory"}]
    table = report.peer_comparison([row("transformer_cudnn", 1024, steps=134.0)], peer)
    assert table[0]["ratio_cudnn"] == pytest.approx(134 / 121) and table[0]["meets_target"]
    assert table[1]["ratio_cudnn"] is None and table[1]["peer_error"] == "CUDA out of memory"


def write_peer(path, rows):
    """A file as shared/bench/peer_torch_lra.py writes it: one row per length L."""
    path.write_text(json.dumps(rows, indent=1))
    return path


def efficiency_json(path, rows):
    """An `lra bench` JSON of the text shape (cls pooling, dropout 0.1), for merge=."""
    keys = dict(batch=32, precision="bf16", mode="train", layers=4, dim=256, heads=4, qkv_dim=256,
                mlp_dim=1024, vocab=257, classes=2, dropout=0.1, attention_dropout=0.0,
                pooling="cls", seed=0, memory_limit=None)
    base = {"device": "nvidia-h200", "backend": "gpu", "batch": 32, "precision": "bf16",
            "mode": "train", "status": "ok", "options": "{}", "base_model": "transformer"}
    path.write_text(json.dumps({
        "command": "lra bench model=transformer_cudnn", "device": {
            "slug": "nvidia-h200", "device_kind": "NVIDIA H200", "backend": "gpu", "device_count": 1,
            "versions": {}},
        "settings": {**keys, "lengths": sorted({r["length"] for r in rows})},
        "rows": [{**base, "seq_len": r["length"] + 1, **r} for r in rows]}))
    return path


def test_peer_gives_the_ratio_per_length_in_the_report(tmp_path):
    ours = efficiency_json(tmp_path / "ours.json", [
        {"model": "transformer_cudnn", "length": 1024, "train_steps_per_s": 121.0},
        {"model": "transformer_cudnn", "length": 2048, "train_steps_per_s": 59.5},
        {"model": "transformer_xla", "length": 1024, "train_steps_per_s": 54.0}])
    peer = write_peer(tmp_path / "peer_torch_lra_cls_0.1.json", [
        {"L": 1024, "pooling": "cls", "dropout": 0.1, "steps_per_s": 108.0, "peak_GiB": 3.1},
        {"L": 2048, "pooling": "cls", "dropout": 0.1, "steps_per_s": 76.9, "peak_GiB": 5.2}])
    assert bench.main([f"merge={ours}", f"peer={peer}", f"out={tmp_path / 'r'}", "plot=false"]) == 0
    md = (tmp_path / "r" / "efficiency-nvidia-h200.md").read_text()
    assert "## Against the PyTorch peer, measured in the same job" in md
    assert "| 1024 | 108 | 121 | 1.12 | yes | 54.0 | 0.50 |" in md
    assert "| 2048 | 76.9 | 59.5 | 0.77 | no | - | - |" in md
    saved = json.loads((tmp_path / "r" / "efficiency-nvidia-h200.json").read_text())
    assert [r["steps_per_s"] for r in saved["peer"]] == [108.0, 76.9]

    mean = write_peer(tmp_path / "mean.json", [{"L": 1024, "pooling": "mean", "dropout": 0.1,
                                                "steps_per_s": 130.0}])
    with pytest.raises(LraError, match="pooling=mean"):
        bench.main([f"merge={ours}", f"peer={mean}", f"out={tmp_path / 'x'}", "plot=false"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(LraError, match="not the JSON of peer_torch_lra.py"):
        bench.main([f"merge={ours}", f"peer={tmp_path / 'bad.json'}", f"out={tmp_path / 'x'}"])
    assert not (tmp_path / "x").exists()


def test_options_come_from_the_bench_config_group():
    from omegaconf import OmegaConf

    from lra.config import compose

    defaults = OmegaConf.to_container(compose([], config_name=settings.CONFIG_NAME).bench)
    assert set(defaults) == set(settings.OPTIONS) | {"model_options"}  # one key, one check
    parsed = settings.parse_args(["model=performer,local", "lengths=[2048,1024]", "memory_limit=2GiB",
                                  "linformer.k=64", "isolate=false"])
    assert parsed["model"] == ["performer", "local"] and parsed["lengths"] == [1024, 2048]
    assert parsed["memory_limit"] == 2 * 2**30 and parsed["isolate"] is False
    assert parsed["model_options"] == {"linformer": {"k": 64}}
    assert parsed["batch"] == defaults["batch"] and parsed["repeats"] is None  # auto
    with pytest.raises(LraError, match="batch=2.5 must be a positive integer"):
        settings.parse_args(["batch=2.5"])
