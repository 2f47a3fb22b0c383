"""`adgen bench`: the benchmarks of a checkout. benchmarks/ is not in the wheel, so the command
loads it from the current folder when that is an adgen checkout (`make bench` runs there)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import click

from adgen.errors import AdgenError


def _load() -> click.Command:
    if importlib.util.find_spec("benchmarks") is None:
        here = Path.cwd()
        if not (here / "benchmarks" / "cli.py").is_file():
            raise AdgenError("`adgen bench` runs the benchmarks of an adgen checkout: run it "
                             "in the repository's root folder (or `make bench` there)")
        sys.path.insert(0, str(here))
    from benchmarks.cli import bench as command  # not in the wheel: a checkout's folder
    return command


bench = _load()
