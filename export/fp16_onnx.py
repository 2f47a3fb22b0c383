"""FP16 copy of an ONNX graph with fp32 inputs and outputs, for strongly typed TensorRT builds.

TensorRT 11 has no BuilderFlag.FP16: a network computes in the types its graph says. So the
ONNX itself becomes FP16 (weights and activations), and Cast nodes at the edges keep the
served contract (fp32 EMBEDDING/Z in, fp32 RAW_IMAGE/EMBEDDING out) unchanged.

The conversion is onnxruntime's own `transformers.float16` (the onnxconverter-common
algorithm, shipped in both the onnxruntime and onnxruntime-gpu wheels), with keep_io_types.
Ops whose numerics FP16 would visibly hurt stay fp32 with casts around them: the reductions
of LayerNorm / mean pooling / L2 normalisation in the text encoder (sums of 384 squares
overflow FP16's 65504 easily) besides that module's default block list. CPU tests run the
converted graphs with onnxruntime against the fp32 ones, with the TensorRT parity rule.
"""
from __future__ import annotations

from pathlib import Path

from adgen.errors import ExportError

# fp32 islands: reductions and the ops of normalisations (see the module docstring)
KEEP_FP32_OPS = ("ReduceMean", "ReduceSum", "ReduceL2", "ReduceSumSquare", "Pow", "Sqrt",
                 "LayerNormalization", "Softmax", "Erf", "Div")


def convert_to_fp16(src: str | Path, dst: str | Path) -> Path:
    """Writes the FP16 version of `src` to `dst` (inputs/outputs stay fp32); returns dst."""
    try:
        import onnx
        from onnxruntime.transformers import float16
    except ImportError as exc:
        raise ExportError(f"converting to FP16 needs onnx and onnxruntime ({exc.name} is "
                          "missing): pip install 'adgen[tensorrt]'") from None
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src))
    block = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(KEEP_FP32_OPS))
    try:
        half = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=block)
    except Exception as exc:  # the converter asserts/raises on graphs it cannot type
        raise ExportError(f"cannot convert {src.name} to FP16: {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    check_fp32_io(model, half, src.name)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(half, str(dst))
    return dst


def check_fp32_io(before, after, name: str) -> None:
    """The converted graph has the same inputs/outputs, with the same element types."""
    def io(m):
        return ([(v.name, v.type.tensor_type.elem_type) for v in m.graph.input],
                [(v.name, v.type.tensor_type.elem_type) for v in m.graph.output])
    if io(before) != io(after):
        raise ExportError(f"FP16 conversion of {name} changed its inputs/outputs: "
                          f"{io(before)} -> {io(after)}")
