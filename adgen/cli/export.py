"""adgen export: turn checkpoints and the text encoder into served artifacts.

Usage:
  adgen export text-encoder [--int8]           artifacts/text_encoder/{model.onnx,tokenizer.json}
  adgen export onnx CKPT -o DIR [--precision fp32|int8]
  adgen export tensorrt ONNX -o DIR            TensorRT engine (needs an NVIDIA GPU)

Examples:
  adgen export text-encoder
  adgen export onnx models/adgen-emoji64 -o artifacts/generator
  adgen export onnx models/adgen-emoji64 -o artifacts/generator-int8 --precision int8
  adgen export tensorrt artifacts/generator/generator.onnx -o artifacts/generator-trt
"""
from __future__ import annotations

import json
from dataclasses import asdict

import click

from adgen.export.tensorrt import TensorRTConfig, build_engine
from adgen.export.text_encoder import export_text_encoder

EXPORT_EPILOG = """Examples:

\b
  adgen export text-encoder
  adgen export onnx models/adgen-emoji64 -o artifacts/generator
  adgen export tensorrt artifacts/generator/generator.onnx -o artifacts/generator-trt
"""


def _build_options(command):
    """--force and --dry-run, last in --help, for the commands that build into -o DIR."""
    command = click.option("--dry-run", is_flag=True,
                           help="Print the resolved config and stop.")(command)
    return click.option("--force", is_flag=True,
                        help="Replace a non-empty output folder.")(command)


def _out_option(command):
    return click.option("-o", "--out", required=True, type=click.Path(),
                        help="Output folder.")(command)


def _print_config(cfg) -> None:
    click.echo(json.dumps(asdict(cfg), indent=2))


@click.group(help="Export ONNX / TensorRT artifacts for serving.", epilog=EXPORT_EPILOG)
def export():
    pass


@export.command("text-encoder", epilog="""Examples:

\b
  adgen export text-encoder --force
  adgen export text-encoder --int8 -o artifacts/text_encoder_int8
""")
@click.option("-o", "--out", default=None, help="Output folder (default artifacts/text_encoder).")
@click.option("--force", is_flag=True, help="Re-export even if a copy exists.")
@click.option("--int8", "int8", is_flag=True,
              help="Also try an INT8 copy (model.int8.onnx), kept only if every test prompt "
                   "keeps cosine >= 0.995 to fp32; the figures go to the manifest either way.")
@click.option("--parity/--no-parity", default=True, show_default=True,
              help="Compare with sentence-transformers and record it in the manifest.")
def text_encoder(out, force, int8, parity):
    """Export all-MiniLM-L6-v2 to ONNX with mean pooling + L2 norm inside the graph."""
    path = export_text_encoder(out, force=force, int8=int8, parity=parity)
    click.echo(f"text encoder at {path}")


@export.command("onnx", epilog="""Examples:

\b
  adgen export onnx models/adgen-emoji64 -o artifacts/generator
  adgen export onnx runs/00003-film/checkpoints/latest -o out/g --force
  adgen export onnx models/adgen-emoji64 -o artifacts/generator-int8 --precision int8
  adgen export onnx models/adgen-emoji64 -o x --dry-run
""")
@click.argument("checkpoint", type=click.Path())
@_out_option
@click.option("--precision", type=click.Choice(["fp32", "int8"]), default="fp32",
              show_default=True,
              help="fp32 (parity <= 1e-4 vs PyTorch) or int8 (static QDQ quantization "
                   "calibrated on caption embeddings; fp32 I/O).")
@click.option("--opset", type=int, default=17, show_default=True, help="ONNX opset (>= 17).")
@click.option("--parity-batches", default="1,64,256", show_default=True,
              help="Batch sizes checked against PyTorch.")
@click.option("--calibration-size", type=int, default=512, show_default=True,
              help="int8: caption embeddings used for calibration.")
@click.option("--calibration-data", type=click.Path(), default=None,
              help="int8: dataset folder whose names make the captions (default data/twemoji64).")
@_build_options
def onnx_cmd(checkpoint, out, precision, opset, parity_batches, calibration_size,
             calibration_data, force, dry_run):
    """Export a generator checkpoint to ONNX (contract I/O, dynamic batch) with parity."""
    from adgen.export.onnx_export import ExportError, OnnxExportConfig, export_onnx
    try:
        batches = tuple(int(b) for b in parity_batches.split(",") if b.strip())
    except ValueError:
        raise ExportError(f"--parity-batches must be integers, got {parity_batches!r}") from None
    cfg = OnnxExportConfig(checkpoint=checkpoint, out=out, precision=precision, force=force,
                           opset=opset, parity_batches=batches,
                           calibration_size=calibration_size,
                           calibration_data=calibration_data)
    if dry_run:
        return _print_config(cfg)
    path = export_onnx(cfg.checkpoint, cfg.out, precision=cfg.precision, force=cfg.force,
                       opset=cfg.opset, parity_batches=cfg.parity_batches,
                       calibration_size=cfg.calibration_size,
                       calibration_data=cfg.calibration_data)
    manifest = json.loads((path / "manifest.json").read_text())
    if cfg.precision == "fp32":
        figure = f"max |ONNX - PyTorch| = {manifest['parity']['max_abs']:.3g}"
    else:  # reduced precision is judged on real captions, and for shipping by eval
        held = manifest["heldout_captions_vs_pytorch"]
        figure = (f"mean |Δ| vs PyTorch on held-out captions = {held['mean_abs']:.3g} "
                  "(quality: python -m benchmarks.export_variants --eval)")
    click.echo(f"generator ONNX ({cfg.precision}, z_dim {manifest['z_dim']}) at {path}; {figure}")


@export.command("tensorrt", epilog="""Examples:

\b
  adgen export tensorrt artifacts/generator/generator.onnx -o artifacts/generator-trt
  adgen export tensorrt artifacts/text_encoder/model.onnx -o artifacts/text-encoder-trt
  adgen export tensorrt artifacts/generator/generator.onnx -o x --dry-run

Needs an NVIDIA GPU and pip install 'adgen[tensorrt]'.
""")
@click.argument("onnx_path", metavar="ONNX", type=click.Path())
@_out_option
@click.option("--fp16/--no-fp16", default=True, show_default=True, help="Allow FP16 kernels.")
@click.option("--min-batch", type=int, default=1, show_default=True)
@click.option("--opt-batch", type=int, default=64, show_default=True)
@click.option("--max-batch", type=int, default=256, show_default=True)
@click.option("--workspace-mib", type=int, default=2048, show_default=True,
              help="Builder workspace limit.")
@click.option("--timing-cache", type=click.Path(), default=None,
              help="Timing cache file to reuse and update (default: DIR/timing.cache).")
@_build_options
def tensorrt_cmd(onnx_path, out, fp16, min_batch, opt_batch, max_batch, workspace_mib,
                 timing_cache, force, dry_run):
    """Build a TensorRT engine (profile 1/64/256, FP16) and check parity vs onnxruntime."""
    cfg = TensorRTConfig(onnx=onnx_path, out=out, fp16=fp16,
                         profile=(min_batch, opt_batch, max_batch), workspace_mib=workspace_mib,
                         timing_cache=timing_cache, force=force)
    if dry_run:
        return _print_config(cfg)
    path = build_engine(cfg)
    click.echo(f"TensorRT engine at {path}")
