"""The installable package: one import root, resources found outside the checkout (its import
layers: tests/test_import_cycles.py).

`adgen[gpu]` must not drag the CPU onnxruntime in beside onnxruntime-gpu: both wheels install
the same `onnxruntime` module; with both present the CPU one can win and leave only
CPUExecutionProvider. So onnxruntime is in the `cpu` extra only, and `make` installs that
extra (CPU development machines are unchanged).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
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


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` (not editable, no dependencies) into a folder of its own."""
    src = tmp_path_factory.mktemp("src")  # a copy: the build writes build/ and egg-info there
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("adgen", "serving", "prompting", "training", "export", "triton_models",
                 "models", "examples"):
        shutil.copytree(ROOT / name, src / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.png"))
    target = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--no-build-isolation", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return target


def _run(args: list[str], site: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    """A command with the installed copy first on the path, run outside the checkout."""
    return subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(site), **env})


def test_the_wheel_has_one_top_level_package_and_no_checkout_folders(installed):
    top = {p.name for p in installed.iterdir() if not p.name.endswith(".dist-info")}
    assert top - {"bin"} == {"adgen"}
    pkg = installed / "adgen"
    for sub in ("serving/runtime/backend.py", "serving/jobs/job.py", "prompting/expand.py",
                "training/train.py", "export/repo.py", "cli/__init__.py", "__main__.py",
                "triton_models/adgen/config.pbtxt", "triton_models/model.py",
                "models/adgen-emoji64/generator.safetensors",
                "models/adgen-emoji64/concepts.jsonl", "examples/briefs.txt"):
        assert (pkg / sub).is_file(), sub
    # the release's reduced-precision export travels with it when the release has one
    release = Path(__file__).resolve().parent.parent / "models" / "adgen-emoji64"
    for sub in ("int8/generator.onnx", "int8/manifest.json"):
        assert (pkg / "models" / "adgen-emoji64" / sub).is_file() == (release / sub).is_file()
    assert not list(pkg.rglob("benchmarks")) and not list(pkg.rglob("conftest.py"))
    assert not (pkg / "models" / "adgen-emoji64-v1").exists()
    assert not (pkg / "models" / "adgen-emoji64-v2").exists()   # comparison rows stay out


def test_installed_package_builds_a_repository_outside_the_checkout(installed, tmp_path,
                                                                     text_encoder_dir,
                                                                     seed_vocab):
    """`python -m adgen repo build` from a folder outside the checkout, the installed copy
    first: the Triton sources and the release model come from the package, and the runtime
    copied into the model is the installed one. It leaves the concept embeddings the first
    job grounds with cached (seeded here with the suite's own, so the build reads them)."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "text_encoder").symlink_to(text_encoder_dir, target_is_directory=True)
    seed_vocab(artifacts)
    proc = _run([sys.executable, "-m", "adgen", "repo", "build", "-o", "repo",
                 "--no-upsampler"], installed, work, ADGEN_ARTIFACTS=str(artifacts))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "concept embeddings for grounding: ready" in proc.stdout, proc.stdout[-2000:]
    version = work / "repo" / "adgen" / "1"
    vendored = version / "adgen" / "serving" / "runtime" / "backend.py"
    assert vendored.read_bytes() == \
        (installed / "adgen" / "serving" / "runtime" / "backend.py").read_bytes()
    assert not (version / "adgen" / "serving" / "jobs").exists()  # only the runtime
    assert not (version / "adgen" / "cli").exists()
    config = (work / "repo" / "adgen" / "config.pbtxt").read_text()
    name = json.loads((work / "repo" / "adgen_repository.json").read_text())["generator"]["name"]
    assert name in ("adgen-emoji64", "adgen-emoji64-int8")  # int8 on CPUs with VNNI / AMX
    assert f'"{name}"' in config  # model_name: the release model, from the package
    where = _run([sys.executable, "-c", "import adgen.paths as p; print(p.release_model_dir())"],
                 installed, work)
    assert where.stdout.strip().startswith(str(installed))
