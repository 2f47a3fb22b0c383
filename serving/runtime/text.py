"""Text encoder: all-MiniLM-L6-v2 run with onnxruntime + tokenizers (no torch).

Prompt -> EMBEDDING float32[384]: BERT tokens (truncated to 256 like sentence-transformers),
mean pooling over real tokens and L2 normalisation, both inside the ONNX graph. The ONNX
and its tokenizer.json are produced once by `adgen export text-encoder` into
artifacts/text_encoder/; training and serving both use this class, so the numbers match.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from adgen.contract import EMBED_DIM, MAX_BATCH_SIZE, TEXT_MAX_TOKENS
from adgen.errors import AdgenError
from adgen.paths import text_encoder_dir
from adgen.serving.runtime.providers import CPU_EP, choose_providers, import_onnxruntime, \
    ort_session, used_provider

# Nothing may reach a model hub, even if some library tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ONNX_NAME = "model.onnx"
TOKENIZER_NAME = "tokenizer.json"


class TextEncodingError(AdgenError, ValueError):
    """A prompt that cannot be encoded (not valid Unicode text)."""


class MissingArtifactError(AdgenError, FileNotFoundError):
    """An exported artifact that has not been built yet."""


def check_text(text) -> str:
    """Returns text if it is encodable str; raises TextEncodingError otherwise."""
    if isinstance(text, bytes):
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TextEncodingError(f"prompt is not valid UTF-8 (byte {exc.start})") from None
    if not isinstance(text, str):
        raise TextEncodingError(f"prompt must be text, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise TextEncodingError(
            f"prompt contains a lone surrogate at position {exc.start}") from None
    return text


def optimized_graph(onnx_path: Path) -> Path | None:
    """The model after onnxruntime's EXTENDED graph fusions, saved once beside it (None when
    that folder is read-only or full: the caller then optimises at every load).

    Loading the saved graph with optimisation off takes ~0.12 s where optimising the 90 MB
    export at load takes ~0.3 s idle and ~1 s under load (2-core EPYC), paid by every job
    (its grounding) and every Triton start; the outputs are bitwise the same. EXTENDED, not
    ALL: the file must not carry layout transforms for one CPU. The name holds onnxruntime's
    version and the export's size and mtime, so a new export or onnxruntime makes a new one
    (older ones are removed)."""
    ort = import_onnxruntime()
    st = onnx_path.stat()
    stem = f"{onnx_path.stem}.optimized-"
    name = f"{stem}ort{ort.__version__}-{st.st_size}-{st.st_mtime_ns}.onnx"
    target = onnx_path.with_name(name)
    if target.is_file():
        return target
    tmp = onnx_path.with_name(f".{name}.{os.getpid()}.tmp")
    try:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        opts.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(onnx_path), opts, providers=[CPU_EP])
        os.replace(tmp, target)
        for old in onnx_path.parent.glob(f"{stem}*.onnx"):
            if old != target and old.is_file():
                old.unlink(missing_ok=True)
        return target
    except Exception:  # noqa: BLE001 - read-only, full, or an onnxruntime that cannot save
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        return None


def _graph_inputs(onnx_path: Path):
    """The ONNX's inputs (a CPU probe session; made only when TensorRT EP is chosen)."""
    ort = import_onnxruntime()
    probe = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return probe.get_inputs()


def text_trt_profile(names) -> dict:
    """Tokens [B, T]: B 1..MAX_BATCH_SIZE, T 1..TEXT_MAX_TOKENS (opt 64 x 32: real prompts)."""
    return {n: ((1, 1), (64, 32), (MAX_BATCH_SIZE, TEXT_MAX_TOKENS)) for n in names}


class TextEncoder:
    """Batched MiniLM embeddings with onnxruntime.

    >>> enc = TextEncoder()            # doctest: +SKIP
    >>> enc.encode(["a red apple"]).shape
    (1, 384)
    """

    def __init__(self, model_dir: str | Path | None = None, threads: int = 0,
                 batch_size: int = 64, device_id: int = 0):
        ort = import_onnxruntime()

        model_dir = Path(model_dir) if model_dir else text_encoder_dir()
        onnx_path, tok_path = model_dir / ONNX_NAME, model_dir / TOKENIZER_NAME
        if not onnx_path.is_file() or not tok_path.is_file():
            raise MissingArtifactError(
                f"text encoder not built in {model_dir}: run `adgen export text-encoder`")
        self.model_dir = model_dir
        self.batch_size = batch_size
        self.tokenizer = Tokenizer.from_file(str(tok_path))
        self.tokenizer.enable_truncation(max_length=TEXT_MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session_path = onnx_path
        if choose_providers()[0] == CPU_EP:  # GPU providers fuse for themselves at load
            saved = optimized_graph(onnx_path)
            if saved is not None:
                session_path = saved
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        # TensorRT EP > CUDA EP > CPU (adgen.serving.runtime.providers); one profile for every prompt length
        self.session = ort_session(session_path, opts, device_id=device_id,
                                   trt_profile=lambda: text_trt_profile(
                                       [i.name for i in _graph_inputs(onnx_path)]))
        self.provider = used_provider(self.session)
        self._input_names = {i.name for i in self.session.get_inputs()}

    def encode(self, texts) -> np.ndarray:
        """list[str] -> float32[N, 384], unit norm. Raises TextEncodingError on bad text."""
        texts = [check_text(t) for t in texts]
        out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            out[start:start + len(chunk)] = self._encode_chunk(chunk)
        return out

    def _encode_chunk(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        feeds = {k: v for k, v in feeds.items() if k in self._input_names}
        return self.session.run(["EMBEDDING"], feeds)[0]
