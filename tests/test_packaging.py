"""`adgen[gpu]` must not drag the CPU onnxruntime in beside onnxruntime-gpu.

Both wheels install the same `onnxruntime` module; with both present the CPU one can win and
leave only CPUExecutionProvider. So onnxruntime is in the `cpu` extra only, and `make`
installs that extra (CPU development machines are unchanged).
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower()


def test_onnxruntime_comes_from_exactly_one_of_cpu_or_gpu():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "onnxruntime" not in {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    with_cpu_ort = {e for e, reqs in extras.items() if "onnxruntime" in map(_name, reqs)}
    assert with_cpu_ort == {"cpu"}
    assert [_name(r) for r in extras["gpu"]] == ["onnxruntime-gpu"]


def test_make_installs_the_cpu_extra():
    extras = re.search(r"^EXTRAS\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "cpu" in extras.split(",") and "gpu" not in extras.split(",")
