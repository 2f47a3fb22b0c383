"""What one Triton model folder of a built repository is made of: its config.pbtxt (read and
written with Triton's ModelConfig protobuf), the one python model file copied from
triton_models/model.py, the vendored runtime, and the linked model files.

Shared by the repository builder (adgen.export.repo) and its native variants
(adgen.export.repo_native).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

import adgen
import adgen.serving.runtime
from adgen.contract import PUBLIC_MODEL
from adgen.paths import resource_dir
from adgen.serving.runtime.text import optimized_graph

SOURCES = resource_dir("adgen.triton_models")
ENSEMBLE_SOURCE = "adgen_ensemble"
PYTHON_MODEL = "model.py"  # the one Triton python model: it serves by args["model_name"]


@dataclass(frozen=True)
class GeneratorArtifact:
    """An exported generator folder (generator.onnx + manifest.json) and what it says."""
    folder: Path
    z_dim: int
    sha256: str
    name: str


# ----------------------------------------------------------------------------- configs

def parse_config(text: str):
    """config.pbtxt text -> ModelConfig protobuf."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def load_config(name: str):
    """triton_models/<name>/config.pbtxt -> ModelConfig protobuf."""
    return parse_config((SOURCES / name / "config.pbtxt").read_text())


def write_config(config, path: Path, header: str) -> None:
    path.write_text(f"# {header}\n" + text_format.MessageToString(config))


def set_param(config, key: str, value) -> None:
    config.parameters[key].string_value = str(value)


def set_z_dims(config, z_dim: int) -> None:
    for tensor in list(config.input) + list(config.output):
        if tensor.name == "Z":
            del tensor.dims[:]
            tensor.dims.extend([z_dim])


# ----------------------------------------------------------------------------- files

def link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def runtime_files() -> dict[str, Path]:
    """What a Triton python model imports, as {path below the model version: source}: the
    core modules of `adgen` and `adgen.serving.runtime` (no CLI, jobs, export or torch)."""
    core = Path(adgen.__file__).parent
    # adgen.api sits above the jobs layer and __main__ is the CLI: neither runs in Triton.
    out = {f"adgen/{p.name}": p for p in sorted(core.glob("*.py"))
           if p.name not in ("__main__.py", "api.py")}
    runtime = Path(adgen.serving.runtime.__file__).parent
    out["adgen/serving/__init__.py"] = runtime.parent / "__init__.py"
    out.update({f"adgen/serving/runtime/{p.name}": p for p in sorted(runtime.glob("*.py"))})
    return out


def python_version_folder(out: Path, name: str) -> Path:
    """out/<name>/1 with the python model and the vendored runtime (runtime_files), so the
    model needs no adgen install; returns the version folder."""
    version = out / name / "1"
    version.mkdir(parents=True)
    shutil.copy2(SOURCES / PYTHON_MODEL, version / PYTHON_MODEL)
    for rel, src in runtime_files().items():
        link_or_copy(src, version / rel)
    return version


def python_model(out: Path, name: str, gen: GeneratorArtifact, te_dir: Path | None,
                 with_generator: bool, header: str) -> None:
    """out/<name>: a contract stage served by the python model, from triton_models/<name>."""
    version = python_version_folder(out, name)
    config = load_config(name)
    config.name = name
    set_z_dims(config, gen.z_dim)
    set_param(config, "model_name", gen.name)
    set_param(config, "generator_sha256", gen.sha256)
    set_param(config, "z_dim", gen.z_dim)
    if te_dir is not None:
        for f in ("model.onnx", "tokenizer.json", "manifest.json"):
            if (te_dir / f).is_file():
                link_or_copy(te_dir / f, version / "text_encoder" / f)
        # the fused graph, made once in te_dir: a server start then skips the optimiser
        saved = optimized_graph(te_dir / "model.onnx") if (te_dir / "model.onnx").is_file() \
            else None
        if saved is not None:
            link_or_copy(saved, version / "text_encoder" / saved.name)
    if with_generator:
        for f in ("generator.onnx", "manifest.json"):
            if (gen.folder / f).is_file():
                link_or_copy(gen.folder / f, version / "generator" / f)
        extra = gen.folder / "generator.onnx.data"  # external weights, if the export made any
        if extra.is_file():
            link_or_copy(extra, version / "generator" / extra.name)
    write_config(config, out / name / "config.pbtxt", header)


def ensemble_model(out: Path, gen: GeneratorArtifact, header: str) -> None:
    """out/adgen as the committed ensemble of the four stage models."""
    config = load_config(ENSEMBLE_SOURCE)
    config.name = PUBLIC_MODEL
    set_param(config, "model_name", gen.name)
    set_param(config, "generator_sha256", gen.sha256)
    set_param(config, "z_dim", gen.z_dim)
    (out / PUBLIC_MODEL / "1").mkdir(parents=True)
    write_config(config, out / PUBLIC_MODEL / "config.pbtxt", header)
