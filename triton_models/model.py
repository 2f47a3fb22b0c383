"""The Triton python model of every adgen python stage, copied as `1/model.py` into each.

Triton passes the model's name in initialize(args)["model_name"]; it picks what runs
(adgen.serving.runtime.backend.triton_model):

    adgen          PROMPT BYTES[1], SEED INT64[1] -> IMAGE UINT8[64,64,3]   (all four stages)
    adgen_256      PROMPT, SEED -> IMAGE UINT8[256,256,3]  (the same, plus the 4x upsampler)
    text_encoder   PROMPT -> EMBEDDING FP32[384]            (MiniLM, onnxruntime)
    latents        SEED -> Z FP32[z_dim]                    (SplitMix64 + Box-Muller)
    generator      EMBEDDING, Z -> RAW_IMAGE FP32[3,64,64]  (onnxruntime)
    postprocess    RAW_IMAGE -> IMAGE UINT8[64,64,3]        (RGB, HWC)
    tokenizer      PROMPT -> MiniLM token tensors INT64[-1] (native variants only)

The batching, validation and compute live in adgen.serving.runtime. `adgen repo build`
copies adgen's core and runtime (an `adgen` folder) next to this file, so the built
repository runs in any Triton whose Python has numpy, onnxruntime and tokenizers.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_HERE, "adgen")):
    sys.path.insert(0, _HERE)  # prefer the copy vendored at build time

import triton_python_backend_utils as pb_utils  # noqa: E402  (exists only inside Triton)

from adgen.serving.runtime.backend import triton_model  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.model = triton_model(args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)
