"""The tensor contract: the one place model names, tensor names, dtypes, dims and limits live.

The ONNX export, the TensorRT profiles, every ``config.pbtxt`` and the clients read these
values (or are checked against them by a test). Dims never include the batch dimension,
which is Triton's (``max_batch_size``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Public model and its internal stages.
PUBLIC_MODEL = "adgen"
TEXT_ENCODER_MODEL = "text_encoder"
LATENTS_MODEL = "latents"
GENERATOR_MODEL = "generator"
POSTPROCESS_MODEL = "postprocess"
# The 256 px public model: the same PROMPT/SEED, the 64 px image upsampled 4x by a learned
# stage (UPSAMPLER_MODEL: RAW_IMAGE fp32[3,64,64] -> RAW_IMAGE_256 fp32[3,256,256]).
PUBLIC_MODEL_256 = "adgen_256"
UPSAMPLER_MODEL = "upsampler"

MAX_BATCH_SIZE = 256
MAX_PROMPT_BYTES = 2000
EMBED_DIM = 384  # all-MiniLM-L6-v2, mean pooled, L2-normalised
TEXT_MAX_TOKENS = 256  # sentence-transformers max_seq_length for all-MiniLM-L6-v2
IMAGE_SIZE = 64
LARGE_IMAGE_SIZE = 256  # UPSCALE x IMAGE_SIZE
UPSCALE = 4
SIZES = (IMAGE_SIZE, LARGE_IMAGE_SIZE)  # what `adgen generate --size` accepts
IMAGE_CHANNELS = 3
DEFAULT_Z_DIM = 128  # the release model's z; a checkpoint's config.json says its own
MAX_SEED = 2**63 - 1  # seeds are INT64 on the wire and never negative

# Triton's names for the numpy dtypes we use.
_TRITON_DTYPES = {
    np.dtype(np.object_): "TYPE_STRING",
    np.dtype(np.int64): "TYPE_INT64",
    np.dtype(np.float32): "TYPE_FP32",
    np.dtype(np.float16): "TYPE_FP16",
    np.dtype(np.uint8): "TYPE_UINT8",
}
# The wire names used by tritonclient's InferInput.
_CLIENT_DTYPES = {
    "TYPE_STRING": "BYTES",
    "TYPE_INT64": "INT64",
    "TYPE_FP32": "FP32",
    "TYPE_FP16": "FP16",
    "TYPE_UINT8": "UINT8",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: np.dtype
    dims: tuple[int, ...]  # per item; -1 means any size

    @property
    def triton_dtype(self) -> str:
        """The config.pbtxt data_type, e.g. TYPE_FP32."""
        return _TRITON_DTYPES[np.dtype(self.dtype)]

    @property
    def client_dtype(self) -> str:
        """The tritonclient wire dtype, e.g. FP32."""
        return _CLIENT_DTYPES[self.triton_dtype]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = MAX_BATCH_SIZE

    def input(self, name: str) -> TensorSpec:
        return next(t for t in self.inputs if t.name == name)

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)


PROMPT = TensorSpec("PROMPT", np.dtype(np.object_), (1,))
SEED = TensorSpec("SEED", np.dtype(np.int64), (1,))
IMAGE = TensorSpec("IMAGE", np.dtype(np.uint8), (IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS))
EMBEDDING = TensorSpec("EMBEDDING", np.dtype(np.float32), (EMBED_DIM,))
RAW_IMAGE = TensorSpec("RAW_IMAGE", np.dtype(np.float32), (IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE))
IMAGE_256 = TensorSpec("IMAGE", np.dtype(np.uint8),
                       (LARGE_IMAGE_SIZE, LARGE_IMAGE_SIZE, IMAGE_CHANNELS))
RAW_IMAGE_256 = TensorSpec("RAW_IMAGE_256", np.dtype(np.float32),
                           (IMAGE_CHANNELS, LARGE_IMAGE_SIZE, LARGE_IMAGE_SIZE))


def z_spec(z_dim: int = DEFAULT_Z_DIM) -> TensorSpec:
    return TensorSpec("Z", np.dtype(np.float32), (z_dim,))


def public_spec() -> ModelSpec:
    """`adgen`: PROMPT BYTES[1], SEED INT64[1] -> IMAGE UINT8[64,64,3] (RGB, HWC)."""
    return ModelSpec(PUBLIC_MODEL, (PROMPT, SEED), (IMAGE,))


def public_256_spec() -> ModelSpec:
    """`adgen_256`: PROMPT BYTES[1], SEED INT64[1] -> IMAGE UINT8[256,256,3] (RGB, HWC)."""
    return ModelSpec(PUBLIC_MODEL_256, (PROMPT, SEED), (IMAGE_256,))


def upsampler_spec() -> ModelSpec:
    """The exported 4x upsampler: RAW_IMAGE fp32[3,64,64] -> RAW_IMAGE_256 fp32[3,256,256]."""
    return ModelSpec(UPSAMPLER_MODEL, (RAW_IMAGE,), (RAW_IMAGE_256,))


def public_spec_for_size(size: int) -> ModelSpec:
    """The public model serving `size` px images (64 or 256)."""
    if size == LARGE_IMAGE_SIZE:
        return public_256_spec()
    if size == IMAGE_SIZE:
        return public_spec()
    raise ValueError(f"size must be one of {SIZES}, got {size}")


def text_encoder_spec() -> ModelSpec:
    return ModelSpec(TEXT_ENCODER_MODEL, (PROMPT,), (EMBEDDING,))


def latents_spec(z_dim: int = DEFAULT_Z_DIM) -> ModelSpec:
    return ModelSpec(LATENTS_MODEL, (SEED,), (z_spec(z_dim),))


def generator_spec(z_dim: int = DEFAULT_Z_DIM) -> ModelSpec:
    """The exported GAN generator: EMBEDDING, Z -> RAW_IMAGE FP32[3,64,64] in [-1, 1]."""
    return ModelSpec(GENERATOR_MODEL, (EMBEDDING, z_spec(z_dim)), (RAW_IMAGE,))


def postprocess_spec() -> ModelSpec:
    return ModelSpec(POSTPROCESS_MODEL, (RAW_IMAGE,), (IMAGE,))


def all_specs(z_dim: int = DEFAULT_Z_DIM) -> dict[str, ModelSpec]:
    specs = (public_spec(), public_256_spec(), text_encoder_spec(), latents_spec(z_dim),
             generator_spec(z_dim), postprocess_spec(), upsampler_spec())
    return {s.name: s for s in specs}
