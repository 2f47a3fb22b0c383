"""Reduced-precision generator variants for CPU serving (onnxruntime).

INT8 is onnxruntime static quantization in QDQ form: weights int8 per output channel,
activations uint8 per tensor (u8s8 runs on AVX-512 VNNI; see weight_range for CPUs without an
int8 dot-product unit), calibrated (99.99th percentile) on
*real* inputs: MiniLM embeddings of training-style captions (adgen.captions templates
over the dataset's emoji names and the palette) and seed-derived latents (adgen.latents).
Every op type between convolutions is quantized, not only Conv/Gemm:
the FiLM Mul/Add, LeakyRelu and Resize between convolutions would otherwise force a
dequantize/quantize pair around every conv, which measured slower than fp32 at batch 64 on
the development machine. What leads into the convolutions (the text path: the standardised
embedding, trunk and heads whose argmax picks concept, family and colours) and what follows
the last one (compositing, recolouring, the shift) stays fp32 (`float_ends`): it is a
few small matrices and elementwise ops per image, and in uint8 a head's argmax flips on close
calls (a whole other drawing) and each compositing step rounds the picture again. On the
composer release with the warp fill, 1,000 eval items (`adgen eval`'s, fp32 export as the
reference): mean |int8 - fp32| 2.20 uint8 levels quantizing everything, 1.79 with the text
path in fp32, 1.37 with both ends (1.39 with the codebook lookup int8, as shipped); 21 -> 1
images off by more than 5 levels on average; ms per image at batch 64 / 256 on one thread
1.88 / 1.48 -> 1.60 / 1.56 (fp32: 3.63 / 3.30), by a scratch timing of the four exports.

The graph keeps the contract's fp32 inputs and output; only its insides change. Whether a
variant ships is decided by measurement (benchmarks/export_variants.py and `adgen eval`,
scored by adgen.export.variant_eval), whose figures are written back into its manifest
under "measurements".
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from adgen.atomic import atomic_write_json
from adgen.captions import COLOR_NAMES, TEMPLATES, caption
from adgen.errors import ExportError
from adgen.export.onnx_files import read_manifest
from adgen.export.precision import int8_units
from adgen.latents import seeds_to_z
from adgen.paths import data_dir
from adgen.serving.runtime.text import TextEncoder
from adgen.training.data import DataError, load_dataset

CALIBRATION_BATCH = 32
CALIBRATION_SEED = 1234
HELDOUT_SEED = 4321
# Activation ranges: the 99.99th percentile, not MinMax. On a trained release-size FiLM
# checkpoint, held-out captions: mean |int8 - fp32| 0.025 vs 0.038 with MinMax, same speed.
CALIBRATION_PERCENTILE = 99.99


def weight_range(flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """(reduce_range, why) for an int8 export made on this CPU (`flags`: cpu_flags()).

    Without an int8 dot-product unit (AVX512-VNNI, AVX-VNNI, AMX) onnxruntime's u8s8 kernels
    multiply with vpmaddubsw, which adds each pair of u8 x s8 products in *saturating* int16:
    2 x 255 x 127 = 64770 overflows 32767, and the int8 export drifts from fp32 (measured:
    mean |Δ| 0.0135 vs 0.006 with VNNI on the same tiny model). Weights in 7 bits
    (onnxruntime's reduce_range: -64..63) keep every pair within 2 x 255 x 64 = 32640, so
    such a CPU computes exactly what a VNNI one does, for one bit less weight precision."""
    units = int8_units(flags)
    if units:
        return False, f"8-bit weights: {', '.join(units)} on this CPU adds u8 x s8 in int32"
    return True, ("7-bit weights (reduce_range): this CPU has no int8 dot-product unit, "
                  "its u8s8 kernels saturate int16 with 8-bit weights")


def default_dataset_dir() -> Path:
    return data_dir() / "twemoji64"


def calibration_captions(count: int, dataset_dir: str | Path | None = None,
                         seed: int = CALIBRATION_SEED) -> list[str]:
    """`count` captions as training writes them: template(emoji name or alias, palette colour)."""
    dataset_dir = Path(dataset_dir) if dataset_dir else default_dataset_dir()
    try:
        records = load_dataset(dataset_dir).records
    except (DataError, FileNotFoundError, OSError):
        raise ExportError(f"int8 calibration needs the dataset at {dataset_dir}: "
                          "run `adgen data build` or pass --calibration-data") from None
    if not records:
        raise ExportError(f"dataset {dataset_dir} is empty; cannot calibrate")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        rec = records[int(rng.integers(len(records)))]
        names = [rec["name"], *rec.get("aliases", [])]
        name = names[int(rng.integers(len(names)))]
        out.append(caption(name, COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
                           TEMPLATES[int(rng.integers(len(TEMPLATES)))]))
    return out


def calibration_feeds(count: int, z_dim: int, dataset_dir=None, text_encoder_dir=None,
                      seed: int = CALIBRATION_SEED) -> list[dict[str, np.ndarray]]:
    """Batches of {EMBEDDING fp32[32,384], Z fp32[32,z_dim]} for the calibrator (another
    seed gives a held-out set of the same kind)."""
    captions = calibration_captions(count, dataset_dir, seed=seed)
    emb = TextEncoder(text_encoder_dir).encode(captions)  # [count, 384], unit norm
    z = seeds_to_z(range(seed * 1000, seed * 1000 + count), z_dim).astype(np.float32)
    return [{"EMBEDDING": emb[i:i + CALIBRATION_BATCH], "Z": z[i:i + CALIBRATION_BATCH]}
            for i in range(0, count, CALIBRATION_BATCH)]


GENERATOR_CALIBRATION = ("MiniLM embeddings of template captions over dataset names x "
                         "palette colours; seed-derived Z")


def float_ends(model_path: Path) -> list[str]:
    """Names of the nodes that are not between two convolutions in the data flow (not both
    fed by a Conv's output, directly or not, and feeding a Conv), Gather excepted: what
    make_variant keeps in fp32. [] for a graph without Conv. For the generators that is the
    text path (embedding, trunk, heads, FiLM projections) and what follows the last Conv
    (compositing, recolouring, the shift). A Gather is a table lookup (the composer's
    4,752-cell codebook, 19.6 MB in fp32): its int8 table decides nothing and keeps the
    export a quarter of the size (codebook in fp32 alone: mean |Δ| 2.198 -> 2.193)."""
    import onnx
    nodes = list(onnx.load(str(model_path), load_external_data=False).graph.node)
    if not any(n.op_type == "Conv" for n in nodes):
        return []
    consumers: dict[str, list[int]] = {}
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for t in n.input:
            consumers.setdefault(t, []).append(i)
        for t in n.output:
            producer[t] = i

    def reach(start: list[int], step) -> set[int]:
        seen, todo = set(start), list(start)
        while todo:
            for j in step(todo.pop()):
                if j not in seen:
                    seen.add(j)
                    todo.append(j)
        return seen
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    after_conv = reach(convs, lambda i: [j for t in nodes[i].output for j in consumers.get(t, [])])
    before_conv = reach(convs, lambda i: [producer[t] for t in nodes[i].input if t in producer])
    return [n.name for i, n in enumerate(nodes)
            if not (i in after_conv and i in before_conv) and n.op_type != "Gather"]


def quantize_int8(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]],
                  reduce_range: bool | None = None,
                  inputs: str = GENERATOR_CALIBRATION, fp32_ends: bool = False) -> dict:
    """Static QDQ quantization of src into dst; returns what the manifest records.
    feeds: the calibration batches ({input name: array}); inputs: what they are, in words.
    reduce_range None: weight_range() of this CPU decides. fp32_ends: leave float_ends of
    the pre-processed graph (whose node names the quantizer sees) unquantized."""
    if reduce_range is None:
        reduce_range, why = weight_range()
    else:
        why = "7-bit weights (reduce_range) as asked" if reduce_range else \
            "8-bit weights as asked"
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod,
                                          QuantFormat, QuantType, quantize_static,
                                          shape_inference)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds)

        def get_next(self):
            return next(self._it, None)

    pre = dst.with_name(f".{dst.stem}.pre.onnx")
    started = time.perf_counter()
    try:
        # Symbolic shape inference is for transformer graphs; ours has static inner shapes.
        shape_inference.quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        keep_fp32 = float_ends(pre) if fp32_ends else []
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, reduce_range=reduce_range,
                        calibrate_method=CalibrationMethod.Percentile,
                        extra_options={"CalibPercentile": CALIBRATION_PERCENTILE},
                        nodes_to_exclude=keep_fp32)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"int8 quantization failed: {str(exc).splitlines()[0]}") from None
    finally:
        pre.unlink(missing_ok=True)
    return {"method": "onnxruntime static quantization", "format": "QDQ",
            "weights": "int8 per-channel" + (", 7-bit range" if reduce_range else ""),
            "reduce_range": reduce_range, "weight_range": why,
            "activations": "uint8 per-tensor",
            **({"fp32_nodes": "not between two convolutions in the data flow, lookups "
                               f"excepted: {len(keep_fp32)} nodes"} if fp32_ends else {}),
            "calibration": {"method": f"Percentile {CALIBRATION_PERCENTILE}",
                            "samples": sum(len(next(iter(f.values()))) for f in feeds),
                            "inputs": inputs},
            "seconds": round(time.perf_counter() - started, 2)}


def make_variant(precision: str, fp32_path: Path, out_path: Path, z_dim: int,
                 calibration_size: int = 512, dataset_dir=None,
                 text_encoder_dir=None, reduce_range: bool | None = None) -> dict:
    """Writes the `precision` variant of fp32_path to out_path; returns manifest extras.
    reduce_range: see quantize_int8."""
    if precision == "int8":
        if calibration_size < CALIBRATION_BATCH:
            raise ExportError(f"--calibration-size must be >= {CALIBRATION_BATCH}")
        feeds = calibration_feeds(calibration_size, z_dim, dataset_dir, text_encoder_dir)
        extra = {"quantization": quantize_int8(fp32_path, out_path, feeds, reduce_range,
                                               fp32_ends=True)}
        held = calibration_feeds(2 * CALIBRATION_BATCH, z_dim, dataset_dir, text_encoder_dir,
                                 seed=HELDOUT_SEED)
        extra["heldout_feeds"] = {k: np.concatenate([f[k] for f in held]) for k in held[0]}
        return extra
    raise ExportError(f"no {precision} variant; choose fp32 or int8")


def record_measurements(folder: str | Path, key: str, figures: dict) -> None:
    """Merges figures into manifest.json["measurements"][key] (atomic rewrite)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    manifest.setdefault("measurements", {})[key] = figures
    atomic_write_json(folder / "manifest.json", manifest)
