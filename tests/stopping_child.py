"""`lra train ARGS` in a process that signals itself at chosen points (the resume tests).

LRA_TEST_STOPS="KILL@save:2,TERM@train:3": send SIGKILL to this process inside
its 2nd checkpoint write, SIGTERM when its 3rd training batch is handed out.
Points, counted in this process: `train` (a training batch handed out), `eval`
(inside an evaluation pass, after its first batch), `save` (inside a checkpoint
write: orbax's background thread, in the step's temporary folder, about to write
the meta file; a private orbax method, checked to exist). The toy task of
conftest.py is registered.
"""

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import conftest  # noqa: E402,F401  (registers toy_first_token)
import orbax.checkpoint as ocp  # noqa: E402

from lra.cli import main  # noqa: E402
from lra.loader import BatchLoader  # noqa: E402

STOPS: dict[str, dict[int, int]] = {}
for item in filter(None, os.environ.get("LRA_TEST_STOPS", "").split(",")):
    name, where = item.split("@")
    point, count = where.split(":")
    STOPS.setdefault(point, {})[int(count)] = getattr(signal, f"SIG{name}")
SEEN = {"train": 0, "eval": 0, "save": 0}


def reached(point: str) -> None:
    SEEN[point] += 1
    if SEEN[point] in STOPS.get(point, {}):
        os.kill(os.getpid(), STOPS[point][SEEN[point]])


original_iter = BatchLoader.__iter__


def stopping_iter(self):
    for index, batch in enumerate(original_iter(self)):
        if self.train:
            reached("train")
        elif index == 1:
            reached("eval")
        yield batch


assert hasattr(ocp.JsonCheckpointHandler, "_save_fn"), "orbax changed: find another write hook"
original_json_write = ocp.JsonCheckpointHandler._save_fn


async def stopping_json_write(self, *args, **kwargs):
    reached("save")
    return await original_json_write(self, *args, **kwargs)


BatchLoader.__iter__ = stopping_iter
ocp.JsonCheckpointHandler._save_fn = stopping_json_write
sys.exit(main(["train", *sys.argv[1:]]))
