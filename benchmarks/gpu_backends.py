"""The backends of benchmarks/gpu.py: each turns a batch size into a call on device buffers.

make(name, ctx) -> factory(batch) -> (call, provider). Inputs are made on the device once per
batch size and outputs stay there, so no row times host<->device copies:
  torch rows          CUDA tensors (CPU tensors on the CPU smoke path)
  onnxruntime rows    I/O binding: inputs as device OrtValues, the output bound on the device
  tensorrt-fp16       the TensorRT runtime API on torch CUDA tensors (set_tensor_address)
`provider` is what really ran: for onnxruntime the session's get_providers()[0] (it falls
back to CPU silently), for TensorRT its version and precision mode.
A backend that cannot run here raises Skip with the reason, which the row records.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

# the order rows are measured in; compile last: the slowest step, cut first by the budget
ORDER = ("pytorch-eager-fp32", "pytorch-eager-tf32", "pytorch-eager-fp16", "cuda-graphs-fp16",
         "onnxruntime", "onnxruntime-tensorrt-ep", "tensorrt-fp16", "torch-compile-fp16")
CPU_ORDER = ("pytorch-eager-fp32", "pytorch-eager-bf16", "onnxruntime", "torch-compile-bf16")
TEST_HANG = "test-hang"  # only when named: a step that never ends (the step limit's test)


class Skip(Exception):
    """This backend cannot run on this machine; the message says why."""


def set_tf32(torch, on: bool) -> None:
    """fp32 rows are real fp32 unless the row says tf32 (matmul and cuDNN convolutions)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def inputs(torch, batch: int, z_dim: int, device: str, dtype):
    g = torch.Generator(device="cpu").manual_seed(batch)
    emb = torch.nn.functional.normalize(torch.randn(batch, 384, generator=g), dim=1)
    z = torch.randn(batch, z_dim, generator=g)
    return emb.to(device, dtype).contiguous(), z.to(device, dtype).contiguous()


def make(name: str, torch, module, z_dim: int, onnx_path: Path | None, device: str,
         max_batch: int):
    """factory(batch) -> (call, provider) for backend `name`, or Skip."""
    cuda = device == "cuda"
    half = torch.float16 if cuda else torch.bfloat16
    torch_provider = f"torch {torch.__version__} {device}"
    if name == TEST_HANG:
        def hang(batch):
            while True:
                time.sleep(1)
        return hang
    if name.startswith(("pytorch-eager", "cuda-graphs", "torch-compile")):
        if name in ("pytorch-eager-tf32", "cuda-graphs-fp16") and not cuda:
            raise Skip("needs CUDA")
        set_tf32(torch, name.endswith("tf32"))
        dtype = torch.float32 if name.endswith(("fp32", "tf32")) else half
        mod = copy.deepcopy(module).to(device=device, dtype=dtype).eval()
        if name.startswith("cuda-graphs"):
            return _graphed(torch, mod, z_dim, half, torch_provider + " (CUDA graph)")
        run = torch.compile(mod, dynamic=False) if name.startswith("torch-compile") else mod
        label = torch_provider + (" inductor" if name.startswith("torch-compile") else "")

        def eager(batch):
            emb, z = inputs(torch, batch, z_dim, device, dtype)
            return (lambda: run(emb, z)), label + (" tf32" if name.endswith("tf32") else "")
        return eager
    if onnx_path is None:
        raise Skip("no ONNX export (see the export step's message)")
    if name == "onnxruntime":
        return _onnxruntime(torch, onnx_path, device, z_dim, tensorrt_ep=False,
                            max_batch=max_batch)
    if name == "onnxruntime-tensorrt-ep":
        if not cuda:
            raise Skip("needs CUDA")
        return _onnxruntime(torch, onnx_path, device, z_dim, tensorrt_ep=True,
                            max_batch=max_batch)
    if name == "tensorrt-fp16":
        if not cuda:
            raise Skip("needs CUDA")
        return _tensorrt(torch, onnx_path, z_dim, max_batch)
    raise Skip(f"unknown backend {name!r}")


def _graphed(torch, mod, z_dim, half, provider):
    def factory(batch):
        emb, z = inputs(torch, batch, z_dim, "cuda", half)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the capture (allocator, cuDNN)
            for _ in range(3):
                mod(emb, z)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = mod(emb, z)
        return (lambda: (graph.replay(), out)[1]), provider
    return factory


def _onnxruntime(torch, onnx_path: Path, device: str, z_dim: int, tensorrt_ep: bool,
                 max_batch: int):
    from adgen.serving.runtime.providers import (CPU_EP, CUDA_EP, TENSORRT_EP, ProviderError,
                                   import_onnxruntime, provider_options, used_provider)
    try:
        ort = import_onnxruntime()
    except ProviderError as exc:
        raise Skip(str(exc)) from None
    available = ort.get_available_providers()
    want = CPU_EP if device != "cuda" else TENSORRT_EP if tensorrt_ep else CUDA_EP
    if want not in available:
        raise Skip(f"onnxruntime has no {want} (it has {', '.join(available)}): "
                   "pip install 'adgen[gpu]' (onnxruntime-gpu, without the CPU onnxruntime)")
    providers = [want] + ([CUDA_EP] if want == TENSORRT_EP else []) + [CPU_EP]
    profile = {"EMBEDDING": ((1, 384), (64, 384), (max_batch, 384)),
               "Z": ((1, z_dim), (64, z_dim), (max_batch, z_dim))}
    options = provider_options(providers, trt_profile=profile)
    for opts, p in zip(options, providers):
        if p == CUDA_EP:
            opts["use_tf32"] = "0"  # the fp32 row is real fp32
    sess = ort.InferenceSession(str(onnx_path), providers=providers, provider_options=options)
    used = used_provider(sess)
    if used != want:
        raise Skip(f"asked onnxruntime for {want}, the session runs on {used} (fallback)")
    where = "cuda" if device == "cuda" else "cpu"
    label = f"onnxruntime {ort.__version__} {used}"

    def factory(batch):
        emb, z = (t.cpu().numpy() for t in inputs(torch, batch, z_dim, "cpu", torch.float32))
        binding = sess.io_binding()  # inputs on the device once; the output stays there
        binding.bind_ortvalue_input("EMBEDDING", ort.OrtValue.ortvalue_from_numpy(emb, where, 0))
        binding.bind_ortvalue_input("Z", ort.OrtValue.ortvalue_from_numpy(z, where, 0))
        binding.bind_output("RAW_IMAGE", where)

        def call():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
        return call, label
    return factory


def _tensorrt(torch, onnx_path: Path, z_dim: int, max_batch: int):
    from adgen.export import tensorrt as ET
    try:
        trt = ET.require_tensorrt()
    except ET.TensorRTUnavailable as exc:
        raise Skip(str(exc)) from None
    shapes = {n: ((1, w), (min(64, max_batch), w), (max_batch, w))
              for n, w in (("EMBEDDING", 384), ("Z", z_dim))}
    plan, _ = ET.build_serialized(trt, onnx_path, shapes, fp16=True, workspace_mib=4096,
                                  cache_bytes=b"")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan)
    context = engine.create_execution_context()
    label = f"TensorRT {trt.__version__} {ET.precision_of(trt, True)}"

    def factory(batch):
        emb, z = inputs(torch, batch, z_dim, "cuda", torch.float32)
        out = torch.empty((batch, 3, 64, 64), device="cuda", dtype=torch.float32)
        for name, t in (("EMBEDDING", emb), ("Z", z)):
            context.set_input_shape(name, tuple(t.shape))
            context.set_tensor_address(name, t.data_ptr())
        context.set_tensor_address("RAW_IMAGE", out.data_ptr())
        keep = (emb, z, out)  # the engine holds raw pointers: keep the tensors alive

        def call():
            if not context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            return keep[2]
        return call, label
    return factory
