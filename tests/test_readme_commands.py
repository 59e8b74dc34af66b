"""The README's commands run as written: every fenced block that follows a
`<!-- cpu-test -->` line is run, line by line, in a fresh folder on the CPU.

Mark only commands that are cheap on two cores (help, composing a config, a tiny
run): together they must stay under 30 seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- cpu-test -->"
FENCE = re.compile(r"^```(\w*)\s*$")


def marked_commands(text: str) -> list[str]:
    """The command lines of the fenced blocks right after a marker line."""
    commands: list[str] = []
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        fence = FENCE.match(lines[index + 1]) if index + 1 < len(lines) else None
        if not fence:
            raise AssertionError(f"README line {index + 1}: {MARKER} must be followed by a fenced block")
        for body in lines[index + 2:]:
            if FENCE.match(body):
                break
            if body.strip() and not body.lstrip().startswith("#"):
                commands.append(body.strip())
    return commands


def test_the_marker_finds_blocks_and_skips_comments():
    text = f"x\n{MARKER}\n```bash\n# a comment\nlra --help   # trailing\n\nlra train --help\n```\n```bash\nnot marked\n```\n"
    assert marked_commands(text) == ["lra --help   # trailing", "lra train --help"]


COMMANDS = marked_commands((ROOT / "README.md").read_text(encoding="utf-8"))


def test_the_readme_marks_some_commands():
    assert len(COMMANDS) >= 3


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_runs_on_cpu(command, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "LRA_DATA_DIR": str(tmp_path / "data"),
           "LRA_RUNS_DIR": str(tmp_path / "runs"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
