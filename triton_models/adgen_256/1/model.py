"""Triton python model `adgen_256`: PROMPT BYTES[1], SEED INT64[1] -> IMAGE UINT8[256,256,3],
five stages fused in one process (text encoder, latents, generator, 4x upsampler,
postprocess); the upsampler export (upsampler.onnx + manifest.json) sits in 1/upsampler/.

Kept tiny on purpose; the batching, validation and compute live in adgen.serving.runtime.backend.
`adgen repo build` copies adgen's core and runtime (an `adgen` folder) next to this file, so the built
repository runs in any Triton whose Python has numpy, onnxruntime and tokenizers.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.isdir(os.path.join(_HERE, "adgen")):
    sys.path.insert(0, _HERE)  # prefer the copy vendored at build time

import triton_python_backend_utils as pb_utils  # noqa: E402  (exists only inside Triton)

from adgen.serving.runtime.backend import TritonModel  # noqa: E402


class TritonPythonModel:
    def initialize(self, args):
        self.model = TritonModel("adgen_256", args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)
