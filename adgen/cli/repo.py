"""adgen repo: build a Triton model repository from triton_models/ and exported artifacts.

Usage:
  adgen repo build -o model_repository                       # the release model
  adgen repo build -o repo --model artifacts/generator/x     # an ONNX export folder
  adgen repo build -o repo --model runs/00001-film/ckpt      # a checkpoint (exported first)
  adgen repo build -o repo --variant python-ensemble --force
  adgen repo build -o repo --upsampler models/adgen-up256    # also adgen_256 (256 px)
  adgen repo build -o repo --precision fp32                  # never the int8 export
  adgen repo build -o repo --tune                            # measure the served config here
  adgen repo build -o repo --dry-run
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import click

from adgen.paths import unwritable

from adgen.export.repo import VARIANTS, RepoError, build_repository
from adgen.serving.jobs.grounding import warm_grounder

EPILOG = """Examples:

  adgen repo build -o model_repository

  adgen repo build -o repo --model artifacts/generator/adgen-emoji64 --extra-model generator

  adgen repo build -o repo --variant python-ensemble --force

  adgen repo build -o repo --upsampler models/adgen-up256 --force

  adgen repo build -o repo --no-upsampler

  adgen repo build -o repo --precision fp32 --force

  adgen repo build -o repo --tune --force

The served config (instances x threads of the fused model, preferred batch, queue delay, and
the client batch and concurrency `adgen generate` then uses) is this host's cached --tune for
the generator when there is one, else the rule for its cores (--untuned: always the rule).
"""


@dataclass(frozen=True)
class RepoBuildConfig:
    out: str
    variant: str
    model: str | None
    force: bool
    extra_models: tuple[str, ...]
    text_encoder: str | None
    gpu: bool | None = None
    upsampler: str | bool | None = None  # None: the release upsampler if it exists
    precision: str = "auto"
    served: str = "auto"  # auto | rule | tune (export/served_config.py)


@click.group("repo", help=__doc__.split("\n\n")[0], epilog=EPILOG)
def repo():
    pass


@repo.command("build", epilog=EPILOG)
@click.option("-o", "--out", default="model_repository", show_default=True,
              help="Repository folder to write.")
@click.option("--variant", default="python-ort", show_default=True,
              help="python-ort (fused python model) or python-ensemble (4 models + ensemble).")
@click.option("--model", default=None,
              help="Generator: ONNX export folder or checkpoint (default: the release model).")
@click.option("--extra-model", "extra_models", multiple=True,
              help="Also serve a stage model (text_encoder, latents, generator, postprocess).")
@click.option("--text-encoder", default=None, help="Text encoder export folder "
              "(default: artifacts/text_encoder, exported if missing).")
@click.option("--force", is_flag=True, help="Replace an existing repository.")
@click.option("--gpu/--cpu", "gpu", default=None,
              help="KIND_GPU (or KIND_CPU) instances for the models that run onnxruntime/"
                   "TensorRT (default: GPU when nvidia-smi sees one here).")
@click.option("--upsampler", default=None, metavar="PATH",
              help="4x upsampler for the 256 px model adgen_256: a checkpoint folder "
                   "(exported once to artifacts/upsampler/) or an ONNX export folder "
                   "(default: models/adgen-up256 if it exists, else no adgen_256).")
@click.option("--no-upsampler", is_flag=True, help="Do not build adgen_256.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "int8"]), default="auto",
              show_default=True,
              help="Generator precision. auto: the model's int8 export where it kept the "
                   "picture on the eval set and this CPU has int8 dot-product units "
                   "(VNNI/AMX), else fp32; int8: serve it anyway (opt-in).")
@click.option("--tune", is_flag=True,
              help="Measure the served config on this host now (seconds; CPU, python-ort) "
                   "and cache it for this host and generator.")
@click.option("--untuned", is_flag=True,
              help="The rule for this host's cores, ignoring a cached --tune.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config; build nothing.")
def build(out, variant, model, extra_models, text_encoder, force, gpu, upsampler,
          no_upsampler, precision, tune, untuned, dry_run):
    """Build a model repository for tritonserver."""
    if upsampler and no_upsampler:
        raise RepoError("--upsampler and --no-upsampler exclude each other")
    if tune and untuned:
        raise RepoError("--tune and --untuned exclude each other")
    if tune and (gpu or variant != "python-ort"):
        raise RepoError("--tune calibrates the fused python model on CPU instances: use it "
                        "with --variant python-ort (and without --gpu)")
    cfg = RepoBuildConfig(out, variant, model, force, tuple(extra_models), text_encoder, gpu,
                          False if no_upsampler else upsampler, precision,
                          "tune" if tune else "rule" if untuned else "auto")
    if variant not in VARIANTS:
        raise RepoError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if dry_run:
        click.echo(json.dumps(asdict(cfg), indent=2))
        return
    problem = unwritable(cfg.out)
    if problem:
        raise RepoError(f"cannot write the repository {cfg.out}: {problem}")
    try:
        path = build_repository(cfg.out, variant=cfg.variant, model=cfg.model,
                                force=cfg.force, extra_models=cfg.extra_models,
                                text_encoder=cfg.text_encoder, gpu=cfg.gpu,
                                upsampler=cfg.upsampler, precision=cfg.precision,
                                served=cfg.served)
    except OSError as exc:  # an impossible or unwritable -o, a full disk: one line
        what = exc.strerror or type(exc).__name__
        raise RepoError(f"cannot write the repository {cfg.out}: {what}; it is built in a "
                        "temporary folder beside it and renamed, so nothing there was "
                        "changed") from None
    info = json.loads((path / "adgen_repository.json").read_text())
    up = info.get("upsampler")
    click.echo(f"model repository at {path}: models {', '.join(info['models'])}; "
               f"generator {info['generator']['name']} ({info['generator']['sha256'][:12]})"
               + (f"; upsampler {up['name']} ({up['sha256'][:12]})" if up else "")
               + f"; {info['precision']['reason']}")
    served = info["served"]
    click.echo(f"served config: {served['instances']} instances x {served['threads'] or 'all'} "
               f"threads, preferred batch {served['preferred']}, queue delay "
               f"{served['delay_us']} µs; clients: batch {served['batch']}, concurrency "
               f"{served['concurrency']} ({served['from']})")
    if cfg.text_encoder is None:  # the export `adgen generate` grounds prompts with
        seconds, why = warm_grounder(progress=True)
        click.echo(f"concept embeddings for grounding: ready ({seconds:.1f} s)" if not why
                   else f"warning: concept embeddings for grounding not cached ({why}); "
                        "the first `adgen generate` computes them")
