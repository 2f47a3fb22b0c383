"""The ONNX files adgen exports, read without torch: folder and I/O checks against the tensor
contract, parity inputs, CPU sessions and the generator export's manifest.

Shared by the generator, quantized, upsampler and TensorRT exports and by the repository
builder (adgen.export.onnx_export writes what these read). onnx and onnxruntime are imported
inside the functions that use them: the repository builder reads manifests without them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adgen.contract import EMBED_DIM, ModelSpec
from adgen.errors import ExportError
from adgen.latents import seeds_to_z

GENERATOR_ONNX = "generator.onnx"
OPTIMIZED_ONNX = "generator.opt.onnx"
MANIFEST = "manifest.json"
MANIFEST_KIND = "adgen-generator-onnx"
BATCH_AXIS = "batch"


# ----------------------------------------------------------------------------- folders

def check_out_dir(out_dir: str | Path, force: bool) -> Path:
    """Refuses an existing non-empty folder unless force; returns it as a Path."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output {out_dir} exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"output folder {out_dir} exists and is not empty (use --force)")
    return out_dir


def spec_to_json(spec: ModelSpec) -> dict:
    def tensor(t):
        return {"name": t.name, "dtype": t.triton_dtype, "dims": list(t.dims)}
    return {"name": spec.name, "max_batch_size": spec.max_batch_size,
            "inputs": [tensor(t) for t in spec.inputs],
            "outputs": [tensor(t) for t in spec.outputs]}


_ONNX_TO_TRITON = {1: "TYPE_FP32", 10: "TYPE_FP16", 7: "TYPE_INT64", 2: "TYPE_UINT8",
                   8: "TYPE_STRING", 16: "TYPE_BF16", 6: "TYPE_INT32"}


def onnx_io(path: str | Path) -> dict[str, list[dict]]:
    """{'inputs': [{name, dtype, dims}], 'outputs': [...]} with dims as ints or axis names."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"ONNX model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several types for a damaged file
        raise ExportError(f"{path} is not a readable ONNX model ({type(exc).__name__})") from None
    initializers = {i.name for i in model.graph.initializer}

    def describe(values):
        rows = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else "?")
                    for d in t.shape.dim]
            rows.append({"name": v.name, "dtype": _ONNX_TO_TRITON.get(t.elem_type, str(t.elem_type)),
                         "dims": dims})
        return rows
    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def z_dim_of(path: str | Path) -> int:
    """The Z width an exported generator expects (its manifest or its Z input)."""
    for t in onnx_io(path)["inputs"]:
        if t["name"] == "Z" and len(t["dims"]) == 2 and isinstance(t["dims"][1], int):
            return t["dims"][1]
    raise ExportError(f"{path} has no input Z [batch, z_dim]; not an adgen generator")


def check_onnx_io(path: str | Path, spec: ModelSpec) -> None:
    """Raises ExportError (one line) unless the ONNX graph's I/O is exactly the contract's.

    Each tensor must have the contract's name and dtype and shape [batch, *dims], with a
    dynamic (named or unknown) leading batch axis.
    """
    io = onnx_io(path)
    for kind, expected in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        got = {t["name"]: t for t in io[kind]}
        want = {t.name for t in expected}
        if set(got) != want:
            raise ExportError(
                f"{Path(path).name} has {kind} {sorted(got)}, expected {sorted(want)} "
                f"(adgen.contract {spec.name})")
        for t in expected:
            g = got[t.name]
            if g["dtype"] != t.triton_dtype:
                raise ExportError(f"{Path(path).name}: {t.name} is {g['dtype']}, "
                                  f"expected {t.triton_dtype}")
            dims = g["dims"]
            if len(dims) != len(t.dims) + 1 or isinstance(dims[0], int) and dims[0] > 0 \
                    or list(dims[1:]) != list(t.dims):
                raise ExportError(f"{Path(path).name}: {t.name} has shape {dims}, expected "
                                  f"[batch, {', '.join(map(str, t.dims))}]")


def parity_inputs(batch: int, z_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random unit-norm EMBEDDING fp32[B,384] (what MiniLM emits) and seed-derived Z fp32[B,z]."""
    rng = np.random.default_rng(seed + batch)
    emb = rng.standard_normal((batch, EMBED_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    z = seeds_to_z(range(seed * 100_000 + batch, seed * 100_000 + 2 * batch), z_dim)
    return {"EMBEDDING": emb, "Z": np.ascontiguousarray(z, dtype=np.float32)}


def ort_session(path: str | Path, threads: int = 0, optimize: bool = True, spin: bool = True):
    """A CPU session. spin=False stops idle pool threads from busy-waiting after a run, which
    would otherwise steal the cores from whatever runs next (benchmarks interleave backends)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    opts.log_severity_level = 3  # no warnings about unused initializers on stderr
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def diff_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean())}




def read_manifest(folder: str | Path) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ExportError(f"no {MANIFEST} in {folder}: run `adgen export onnx` first")
    try:
        data = json.loads(path.read_text())
    except ValueError:
        raise ExportError(f"{path} is not valid JSON") from None
    if data.get("kind") != MANIFEST_KIND:
        raise ExportError(f"{path} is not an adgen generator export manifest")
    return data
