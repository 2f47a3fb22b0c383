"""Triton python model `generator`: EMBEDDING FP32[384], Z FP32[z_dim] -> RAW_IMAGE FP32[3,64,64] (onnxruntime).

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
        self.model = TritonModel("generator", args, pb_utils)

    def execute(self, requests):
        return self.model.execute(requests)
