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
    caches = lra_data.list_prepared(data_dir)
    if not caches:
        print(f"no prepared data in {data_dir}")
        return 0
    failed = 0
    for path, manifest in caches:
        counts = "/".join(str(manifest["counts"][k]["examples"]) for k in SPLITS)
        if opts.action == "info":
            source = json.dumps(manifest.get("data"), sort_keys=True)
            print(f"{manifest['task']:<11} {path}  train/val/test {counts}  {source}")
        else:
            bad = lra_data.verify(path)
            failed += bool(bad)
            print(f"{'ok' if not bad else 'CORRUPT'}  {path}" + (f": {', '.join(bad)}" if bad else ""))
    if failed:
        raise LraError(f"{failed} cache(s) failed verification; prepare them again with --force")
    return 0
