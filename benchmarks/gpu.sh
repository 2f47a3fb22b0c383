#!/usr/bin/env bash
# GPU benchmark for an NVIDIA machine: one self-contained run, < 8 minutes.
#
# Usage:
#   bash benchmarks/gpu.sh                               # release model
#   bash benchmarks/gpu.sh --model runs/00004-film/checkpoints/latest
#   RESULTS_DIR=out/gpu bash benchmarks/gpu.sh --quick    # results elsewhere; short timings
#   PYTHON=/opt/venv/bin/python bash benchmarks/gpu.sh   # another interpreter
#
# Needs: an NVIDIA driver (nvidia-smi), torch with CUDA; optional onnxruntime-gpu
# (pip install -e '.[gpu]') and TensorRT ('.[tensorrt]'): without them their rows say why
# they were skipped. Measures PyTorch eager fp32 (TF32 off) / TF32 / fp16, CUDA graphs,
# onnxruntime (CUDA EP and TensorRT EP, I/O binding), TensorRT (device buffers) and
# torch.compile at batch 1..4096 (where memory allows), each step in its own process with a
# time limit, every row appended to gpu.rows.jsonl as it is measured (a killed run keeps
# them), and writes benchmarks/results/gpu-<name>/gpu.{json,md,png} + summary.json.
# Without a GPU it stops at once with one line on stderr and exit code 2; the Python part
# has a CPU smoke path: python -m benchmarks.gpu --device cpu --quick --model CKPT.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "error: no NVIDIA GPU here (nvidia-smi missing or failing); run benchmarks/gpu.sh on an NVIDIA machine" >&2
  exit 2
fi
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: $PY has no CUDA-enabled torch (pip install torch with CUDA wheels)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2
args=(--device cuda)
if [ -n "${RESULTS_DIR:-}" ]; then args+=(--results-dir "$RESULTS_DIR"); fi
# 8-minute hard stop; the Python side stops measuring at its own budget (420 s) first, and
# a step process dies with it (PR_SET_PDEATHSIG), so nothing keeps the GPU busy afterwards.
exec timeout 480 "$PY" -m benchmarks.gpu "${args[@]}" "$@"
