"""adgen: text-to-image ad assets, from briefs to PNGs through Triton.

Usage:
  adgen data build [--limit N]           build the Twemoji training set in data/
  adgen export text-encoder              export MiniLM to ONNX (artifacts/text_encoder)
  adgen train --dry-run                  print the resolved training config
  adgen eval CKPT                        R-precision, FD, colour accuracy, MAE/MSE
  adgen export onnx CKPT -o DIR          generator ONNX with parity report
  adgen repo build -o DIR                Triton model repository
  adgen serve                            local tritonserver on 127.0.0.1
  adgen expand briefs.txt -o prompts.jsonl
  adgen generate prompts.jsonl -o out/   PNGs, manifest, contact sheet
  adgen compose out/ --sizes 300x250     finished creatives: headline + CTA in ad sizes
  adgen review out/                      approve / reject in a local web page, export
  adgen bench                            latency/throughput benchmarks
  adgen demo                             the whole pipeline on the shipped model

Subcommands live in their stage's module and are imported only when invoked, so
`adgen --help` and the serving commands never import torch.
"""
from __future__ import annotations

import importlib
import sys

import click

from adgen.errors import AdgenError

# name -> "module:attribute" of a click command or group.
COMMANDS = {
    "data": "adgen.cli.data:data",
    "train": "adgen.cli.train:train",
    "train-upsampler": "adgen.cli.upsampler:train_upsampler",
    "eval": "adgen.cli.eval:eval_cmd",
    "eval-upsampler": "adgen.cli.upsampler:eval_upsampler",
    "export": "adgen.cli.export:export",
    "repo": "adgen.cli.repo:repo",
    "serve": "adgen.cli.serve:serve",
    "expand": "adgen.cli.expand:expand",
    "generate": "adgen.cli.generate:generate",
    "compose": "adgen.cli.compose:compose",
    "bench": "adgen.cli.bench:bench",
    "demo": "adgen.cli.demo:demo",
    "review": "adgen.cli.review:review",
}

HELP_SUMMARY = {
    "data": "Build the training dataset.",
    "train": "Train a generator.",
    "train-upsampler": "Train the 4x (256 px) upsampler.",
    "eval": "Evaluate a generator checkpoint.",
    "eval-upsampler": "Evaluate the upsampler against bicubic and Lanczos.",
    "export": "Export ONNX / TensorRT artifacts.",
    "repo": "Build a Triton model repository.",
    "serve": "Run a local Triton server.",
    "expand": "Expand briefs into prompts.",
    "generate": "Generate images from a prompt file.",
    "compose": "Render images into ad creatives (headline, CTA).",
    "bench": "Run the benchmarks.",
    "demo": "Run the whole pipeline on the shipped model.",
    "review": "Review a job in a local web page: approve, reject, export.",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # an optional dependency of that command
            return _missing_command(
                name, f"needs the package {exc.name!r}: pip install 'adgen[train,server]'")
        return getattr(module, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, HELP_SUMMARY.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _missing_command(name: str, why: str) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True},
                   add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def missing(args):
        raise AdgenError(f"`adgen {name}` {why}")
    missing.help = f"(unavailable: {why})"
    return missing


@click.group(cls=LazyGroup, help=__doc__.split("\n\n")[0],
             epilog="Examples:\n\n  adgen demo\n\n  adgen generate examples/prompts.txt -o out/ -n 4")
@click.version_option(package_name="adgen")
def cli():
    pass


def main(argv=None) -> int:
    """Entry point: one clear line and a non-zero exit for expected errors."""
    try:
        # A command may return an int exit status (e.g. 1 when some lines failed).
        status = cli.main(args=argv, prog_name="adgen", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except AdgenError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    except OSError as exc:  # a path no command checked (unwritable, impossible, disk full)
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        click.echo(f"error: {exc.strerror or type(exc).__name__}{where}", err=True)
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
