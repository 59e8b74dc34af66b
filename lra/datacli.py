"""`lra data`: prepare, list and verify prepared data caches."""

from __future__ import annotations

import argparse
import json

from lra import data as lra_data
from lra.errors import LraError
from lra.tasks.base import SPLITS


def main(args: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="lra data", description="Prepared data caches.")
    sub = parser.add_subparsers(dest="action", required=True)
    prep = sub.add_parser("prepare", help="turn a task's source into a prepared cache")
    prep.add_argument("task")
    prep.add_argument("overrides", nargs="*", help="e.g. task.data.source=tsv task.data.path=DIR")
    prep.add_argument("--force", action="store_true", help="rebuild even if the cache exists")
    info = sub.add_parser("info", help="list prepared caches")
    info.add_argument("--data-dir", default=None)
    verify = sub.add_parser("verify", help="re-check the checksums of prepared caches")
    verify.add_argument("--data-dir", default=None)
    opts = parser.parse_args(args)

    from lra.config import check_overrides as _check_overrides, compose

    overrides = [f"task={opts.task}", *opts.overrides] if opts.action == "prepare" else []
    _check_overrides(overrides)
    cfg = compose(overrides)
    data_dir = getattr(opts, "data_dir", None) or cfg.data_dir
    if opts.action == "prepare":
        from lra.registry import load_all

        load_all()
        path = lra_data.prepare(cfg.task, cfg.data_dir, force=opts.force)
        manifest = lra_data.read_manifest(path)
        counts = ", ".join(f"{k} {manifest['counts'][k]['examples']}" for k in SPLITS)
        print(f"prepared {opts.task} ({counts}) in {path}")
        return 0
    if opts.action == "info":
        caches = lra_data.list_prepared(data_dir)
        if not caches:
            print(f"no prepared data in {data_dir}")
        for path, manifest in caches:
            counts = "/".join(str(manifest["counts"][k]["examples"]) for k in SPLITS)
            source = json.dumps(manifest.get("data"), sort_keys=True)
            print(f"{manifest['task']:<11} {path}  train/val/test {counts}  {source}")
        return 0
    return _verify(data_dir)


def _verify(data_dir) -> int:
    """Checksums, then the leakage and data report, of every cache under data_dir."""
    from pathlib import Path

    if not Path(data_dir).is_dir():
        raise LraError(f"data folder {data_dir} does not exist; give --data-dir or prepare data first")
    paths = lra_data.cache_paths(data_dir)
    if not paths:
        raise LraError(f"no prepared data in {data_dir}; run lra data prepare TASK first")
    failed = 0
    for path in paths:
        try:
            bad = lra_data.verify(path)
            report = None if bad else lra_data.audit(path)
        except LraError as err:
            bad, report = [str(err)], None
        failed += bool(bad)
        print(f"{'ok' if not bad else 'CORRUPT'}  {path}" + (f": {', '.join(bad)}" if bad else ""))
        if report:
            _print_audit(report)
    if failed:
        raise LraError(f"{failed} cache(s) failed verification; prepare them again with --force")
    return 0


def _print_audit(report: dict) -> None:
    for split, facts in report["splits"].items():
        length = facts["length"]
        shares = " ".join(f"{share:.3f}" for share in facts["class_share"])
        print(f"    {split:<5} {facts['examples']} examples, {facts['duplicates']} duplicate(s) within; "
              f"length min {length['min']} mean {length['mean']} max {length['max']} "
              f"(at the cut: {length['full']}); class shares {shares}")
    across = ", ".join(f"{pair} {n}" for pair, n in report["across"].items())
    print(f"    shared across splits: {across}")
    if report["val_is_test"]:
        print("    WARNING val_is_test: the validation split is the test split "
              "(model selection sees the test set)")
