"""adgen export: turn checkpoints and the text encoder into served artifacts.

Examples:
  adgen export text-encoder                  # artifacts/text_encoder/{model.onnx,tokenizer.json}
  adgen export onnx models/adgen-emoji64 -o artifacts/generator
  adgen export tensorrt artifacts/generator/model.onnx -o artifacts/generator-trt
"""
from __future__ import annotations

import click


@click.group(help=__doc__.split("\n\n")[0], epilog="Examples:\n\n  adgen export text-encoder")
def export():
    pass


@export.command("text-encoder", epilog="Example:\n\n  adgen export text-encoder --force")
@click.option("-o", "--out", default=None, help="Output folder (default artifacts/text_encoder).")
@click.option("--force", is_flag=True, help="Re-export even if a copy exists.")
def text_encoder(out, force):
    """Export all-MiniLM-L6-v2 to ONNX with mean pooling + L2 norm inside the graph."""
    from export.text_encoder import export_text_encoder
    path = export_text_encoder(out, force=force)
    click.echo(f"text encoder at {path}")
