"""Matrix ceilings of this CPU: fp32 / bf16 / int8 GEMM ops/s, once (gemm_ceilings) or sampled
between the rows they divide (CeilingTrack, gemm_timers)."""
from __future__ import annotations

import itertools
import statistics
import time
from typing import Callable, NamedTuple

from benchmarks.common import time_calls


def gemm_ceilings(threads: int, n: int = 2048, repeats: int = 5,
                  precisions=("fp32", "bf16", "int8"), call_s: float = 0.8) -> dict:
    """fp32, bf16 and int8 matmul ops/s of this machine (torch.mm; torch._int_mm for int8,
    int8 x int8 -> int32), each the ceiling for backends computing in that precision.
    fp32 multiplies n x n; bf16 and int8 the size pick_n predicts at most call_s a call, so
    a CPU without their units (a Zen 3 has neither: emulated, 10-100x slower) does not spend
    minutes on 2048 x 2048. A precision torch cannot multiply here is {"skipped": reason}."""
    import torch
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for name in precisions:
        try:
            size = n
            if name != "fp32":
                at = min(512, n)
                a, b, mm = matmul_operands(torch, gen, name, at)
                size = probe_n(lambda: mm(a, b), at, n, call_s)
            a, b, mm = matmul_operands(torch, gen, name, size)
            times = time_calls(lambda: mm(a, b), repeats, warmup=2)
        except (RuntimeError, AttributeError, NotImplementedError) as exc:
            out[name] = {"skipped": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
            continue
        op = 2.0 * size ** 3
        out[name] = {"n": size, "threads": threads, "flops_median": op / statistics.median(times),
                     "flops_best": op / min(times)}
    return out


class GemmTimer(NamedTuple):
    timed: Callable[[], float]  # runs one matmul, returns its seconds
    op: float  # ops of one call: 2 n^3
    n: int


class CeilingTrack:
    """Matrix ceilings sampled between the rows they divide. sample() takes `calls` short
    GEMM runs of each precision; the ceiling next to the rows measured between two samples
    is the best (min-time) call of those two samples, so a row is divided by what the
    machine delivered around it, not by a figure taken once under other load.

    timers: precision -> GemmTimer."""

    def __init__(self, timers: dict[str, GemmTimer], calls: int = 3):
        self.timers, self.calls = timers, calls
        self.samples: dict[str, list[list[float]]] = {p: [] for p in timers}

    def sample(self) -> None:
        """`calls` calls of fp32 (both libraries taking turns), half as many of the others
        (their calls can be slow where the kernel is emulated)."""
        for precision, t in self.timers.items():
            k = self.calls if precision == "fp32" else max(1, self.calls // 2)
            self.samples[precision].append([t.timed() for _ in range(k)])

    def around(self, precision: str) -> float | None:
        """Ops/s next to the rows just measured: the best call of the last two samples."""
        s = self.samples.get(precision) or []
        if not s:
            return None
        return self.timers[precision].op / min(t for sample in s[-2:] for t in sample)

    def attach(self, row: dict, flops_per_image: float, precision: str | None) -> dict:
        """`row` with its FLOP/s against the ceiling of its own precision sampled next to it
        (own_ceiling_efficiency; gemm_efficiency too for an fp32 row, and only then: like
        with like); None where that ceiling is not measured or does not apply (precision
        None: a GPU backend)."""
        own = self.around(precision) if precision else None
        flops = row["images_per_s"] * flops_per_image
        row.update(gflops_per_s=flops / 1e9, ceiling_precision=precision, ceiling_flops=own,
                   own_ceiling_efficiency=flops / own if own else None,
                   gemm_efficiency=flops / own if own and precision == "fp32" else None)
        return row

    def summary(self, precision: str, threads: int) -> dict:
        """A precision's ceiling over the run: median and best call, best per sample."""
        t = self.timers[precision]
        times = [x for sample in self.samples[precision] for x in sample]
        return {"n": t.n, "threads": threads, "flops_median": t.op / statistics.median(times),
                "flops_best": t.op / min(times), "calls": len(times),
                "flops_best_per_sample": [t.op / min(x) for x in self.samples[precision]]}


def pick_n(seconds: float, at: int, max_n: int, call_s: float) -> int:
    """The largest n of max_n, max_n / 2, ... 512 whose n x n matmul is predicted (cubic in n
    from `seconds` of an at x at call) to take at most call_s: a CPU without fast kernels for
    a precision (bf16 or int8 emulated, 10-100x slower) samples a smaller matrix instead of
    taking minutes; call_s is loose enough that a busy machine keeps the largest size."""
    n = max_n
    while n > 512 and seconds * (n / at) ** 3 > call_s:
        n //= 2
    return n


def matmul_operands(torch, gen, precision: str, n: int):
    """(a, b, mm) for one n x n matmul in `precision`: fp32 / bf16 torch.mm, int8
    torch._int_mm (int8 x int8 -> int32)."""
    if precision == "int8":
        return (torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen),
                torch.randint(-128, 128, (n, n), dtype=torch.int8, generator=gen), torch._int_mm)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[precision]
    return (torch.randn(n, n, generator=gen).to(dtype),
            torch.randn(n, n, generator=gen).to(dtype), torch.mm)


def probe_n(call, at: int, max_n: int, call_s: float) -> int:
    """pick_n from the faster of two timed calls of `call` (an at x at matmul), after one
    warm-up call (thread pool, kernel selection)."""
    call()
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return pick_n(min(times), at, max_n, call_s)


def gemm_timers(threads: int, max_n: int, precisions, call_s: float = 0.8) -> dict:
    """precision -> GemmTimer of one n x n matmul (fp32 / bf16 torch.mm, int8 torch._int_mm;
    fp32 taking turns with onnxruntime's MatMul), n = max_n for fp32 and from pick_n for the
    others, warmed up; a precision torch cannot multiply here is left out."""
    import torch
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)

    def timer(a, b, mm):
        def timed() -> float:
            t0 = time.perf_counter()
            mm(a, b)
            return time.perf_counter() - t0
        return timed
    out = {}
    for precision in precisions:
        try:
            at = min(1024, max_n)
            a, b, mm = matmul_operands(torch, gen, precision, at)
            # fp32 has fast kernels everywhere: always the largest size, never one picked
            # from a call that a busy machine slowed down
            n = max_n if precision == "fp32" else probe_n(lambda: mm(a, b), at, max_n, call_s)
            timed = timer(*matmul_operands(torch, gen, precision, n))
            timed()
        except (RuntimeError, AttributeError, NotImplementedError):
            continue
        if precision == "fp32":
            timed = alternate([timed, *ort_matmul(n, threads)])
        out[precision] = GemmTimer(timed, 2.0 * n ** 3, n)
    return out


def alternate(timers: list) -> Callable[[], float]:
    """One timed call that takes turns among `timers`: a sample of 2k calls times each k times
    and the ceiling is the faster library's best call."""
    turn = itertools.cycle(timers)
    return lambda: next(turn)()


def ort_matmul(n: int, threads: int) -> list:
    """[a timer of onnxruntime's n x n fp32 MatMul (MLAS)], or [] where it cannot run: the
    fp32 kernels the onnxruntime rows use can outrun torch.mm's BLAS on a CPU (MKL on AMD),
    so the fp32 ceiling is the faster of the two."""
    import numpy as np
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return []
    io = [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ABC"]
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["C"])], "gemm",
                              io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {x: rng.standard_normal((n, n), dtype=np.float32) for x in "AB"}

    def timed() -> float:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        return time.perf_counter() - t0
    timed()  # warm-up
    return [timed]
