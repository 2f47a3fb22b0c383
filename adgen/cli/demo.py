"""adgen demo: the whole pipeline on the shipped model, on this machine.

Usage:
  adgen demo                       # same as `make demo`
  adgen demo -o demo_out -n 4 -k 2
  adgen demo --dry-run

Steps: (1) export the text encoder and the release generator ONNX when missing, (2) build
the model repository (rebuilt when the generator changed), (3) start a local Triton on
127.0.0.1 (8000-8002 when free, else free ports), (4) expand examples/briefs.txt with the
offline expander when adgen.prompting.expand is installed, else use the plain briefs as prompts,
(5) generate N images per prompt through gRPC at 64 px and, when the repository serves
`adgen_256` (a release upsampler is shipped), the same prompts and seeds at 256 px,
(6) write the contact sheets, stop the server, print where everything is. Building needs the `train` extra (torch), once.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click

from adgen.errors import AdgenError
from adgen.memory import keep_freed_memory
from adgen.paths import artifacts_dir, release_model_dir, resource_dir, text_encoder_dir
from adgen.export.repo import build_repository, resolve_upsampler, served_generator
from adgen.export.text_encoder import export_text_encoder
from adgen.prompting.expand import ExpandConfig, run_expand
from adgen.serving.jobs.grounding import ground_prompt_file
from adgen.serving.jobs.job import JobConfig, check_same_model, make_engine, run_job
from adgen.serving.jobs.manifest import ModelChangedError
from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port, port_in_use

EPILOG = """Examples:

  adgen demo

  adgen demo -o demo_out -n 4 -k 2

  adgen demo --briefs my_briefs.txt --dry-run
"""


class DemoError(AdgenError):
    """Something the demo needs is missing."""


@dataclass(frozen=True)
class DemoConfig:
    briefs: str
    out: str
    n: int = 4  # images per prompt
    k: int = 2  # prompts per brief (offline expander)
    seed: int = 0
    batch_size: int = 16
    concurrency: int = 4
    repository: str = ""  # default: artifacts/demo/model_repository
    progress: bool = True


def release_files() -> list[Path]:
    folder = release_model_dir()
    return [folder / "generator.safetensors", folder / "config.json"]


def _show(path: Path) -> str:
    """A path relative to the current folder when inside it (no machine paths in messages)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def check_release_model() -> None:
    missing = [p for p in release_files() if not p.is_file()]
    if missing:
        rel = ", ".join(_show(p) for p in missing)
        raise DemoError(f"the release model is missing ({rel}): it ships with the trained "
                        "model; until then train one (`adgen train`) and pass it to "
                        "`adgen repo build --model`")


def ensure_repository(repository: Path, progress: bool) -> Path:
    """Builds artifacts the demo needs; rebuilds the repository when the generator it should
    serve changed (new weights, or another precision chosen for this host)."""
    if not (text_encoder_dir() / "model.onnx").is_file():
        click.echo("[demo] exporting the text encoder (once) ...")
        export_text_encoder()
    # the release model (its ONNX exported once) in the precision this host serves it in
    gen, _ = served_generator(None, progress=progress)
    # the upsampler export it would serve (name, bytes; new weights give new bytes): a
    # renamed, re-exported or retrained release upsampler rebuilds the repository
    served_up = resolve_upsampler(None, progress=progress)
    info_path = repository / "adgen_repository.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        built = info.get("upsampler") or {}
        same_up = (built.get("name"), built.get("sha256")) == \
            ((served_up.name, served_up.sha256) if served_up else (None, None))
        if info.get("generator", {}).get("sha256") == gen.sha256 and same_up:
            return repository
    click.echo(f"[demo] building the model repository {repository} ...")
    return build_repository(repository, force=True, progress=progress)


def prompts_from_briefs(cfg: DemoConfig, out: Path) -> tuple[Path, str]:
    """-> (prompt file, how it was made)."""
    target = out / "prompts.jsonl"
    summary = run_expand(ExpandConfig(inputs=(cfg.briefs,), out=str(target), k=cfg.k),
                         progress=cfg.progress)
    ground_prompt_file(target)  # before the server starts: the jobs read the records back
    return target, (f"offline expander: {summary.briefs} briefs -> {summary.prompts} prompts"
                    f" ({summary.ungrounded} ungrounded)")


def pick_ports(host: str = "127.0.0.1") -> tuple[int, int, int]:
    """8001/8000/8002 when all free, else three free ports."""
    if not any(port_in_use(host, p) for p in (8001, 8000, 8002)):
        return 8001, 8000, 8002
    return free_port(host), free_port(host), free_port(host)


def served_model(job: JobConfig) -> dict:
    """What the server of `job` serves for it (name, sha256 and, at 256 px, the
    upsampler's), asked the way the job asks (make_engine, model_info)."""
    async def ask() -> dict:
        async with make_engine(job) as engine:
            await engine.wait_ready(timeout_s=60.0)
            return await engine.model_info()
    return asyncio.run(ask())


def run_demo(cfg: DemoConfig) -> dict:
    briefs = Path(cfg.briefs)
    shipped = resource_dir("adgen.examples") / briefs.name
    if not briefs.is_file() and briefs.parent == Path("examples") and shipped.is_file():
        briefs = shipped  # the briefs shipped in the package, from any working directory
        cfg = replace(cfg, briefs=str(briefs))
    if not briefs.is_file():
        raise DemoError(f"briefs file {cfg.briefs} not found")
    check_release_model()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    repository = Path(cfg.repository) if cfg.repository else \
        artifacts_dir() / "demo" / "model_repository"
    ensure_repository(repository, cfg.progress)
    prompts, how = prompts_from_briefs(cfg, out)
    click.echo(f"[demo] prompts: {prompts} ({how})")
    grpc, http, metrics = pick_ports()
    server = TritonServer(ServerConfig(str(repository), grpc_port=grpc, http_port=http,
                                       metrics_port=metrics, log_file=str(out / "triton.log")))
    click.echo(f"[demo] starting Triton on 127.0.0.1 (gRPC {grpc}, HTTP {http}) ...")
    sizes = [(64, "generated")]
    if (repository / "adgen_256" / "config.pbtxt").is_file():
        sizes.append((256, "generated_256"))  # same prompts and seeds, upsampled 4x
    results = []
    with server:
        for size, folder in sizes:
            click.echo(f"[demo] generating {size} px images ...")
            job = JobConfig(prompts=(str(prompts),), out=str(out / folder), n=cfg.n,
                            seed=cfg.seed, batch_size=cfg.batch_size,
                            concurrency=cfg.concurrency, size=size,
                            urls=(server.grpc_url,), progress=cfg.progress)
            try:  # asked of the server even when every image is there (a job then is not)
                check_same_model(out / folder, served_model(job))
                results.append(run_job(job))
            except ModelChangedError as exc:  # an earlier demo's images, of another model
                kept = out / f"{folder}-{str(exc.before['sha256'])[:12]}"
                n = 1
                while kept.exists():
                    n += 1
                    kept = kept.with_name(f"{folder}-{str(exc.before['sha256'])[:12]}-{n}")
                (out / folder).rename(kept)
                click.echo(f"[demo] {out / folder} held another model's images: moved to "
                           f"{kept}")
                results.append(run_job(job))
    click.echo("[demo] Triton stopped")
    for (size, _), result in zip(sizes, results):
        s = result.summary
        click.echo(f"[demo] {size} px: {s['images_generated']} images generated "
                   f"({s['images_skipped_resume']} already there, {s['images_failed']} failed) "
                   f"at {s['images_per_s']} images/s")
        click.echo(f"[demo] results: {result.out}/ (images/, manifest.jsonl, summary.json)")
        if s.get("contact_sheet"):
            click.echo(f"[demo] contact sheet: {result.out / s['contact_sheet']}")
    if len(sizes) == 1:
        click.echo("[demo] no release upsampler in this install: 256 px skipped")
    return {"prompts": str(prompts), "prompt_source": how,
            "summary": results[0].summary, "ok": all(r.ok for r in results),
            "summaries": {size: r.summary for (size, _), r in zip(sizes, results)}}


@click.command("demo", epilog=EPILOG)
@click.option("--briefs", default=str(Path("examples") / "briefs.txt"), show_default=True,
              help="Ad briefs, one per line.")
@click.option("-o", "--out", default="demo_out", show_default=True, help="Output folder.")
@click.option("-n", "n", default=4, show_default=True, type=int, help="Images per prompt.")
@click.option("-k", "k", default=2, show_default=True, type=int, help="Prompts per brief.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed.")
@click.option("--repository", default="", help="Model repository to use/build "
              "(default artifacts/demo/model_repository).")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and what is missing.")
def demo(briefs, out, n, k, seed, repository, no_progress, dry_run):
    """Expand example briefs, serve the release model with Triton, generate, contact sheet."""
    cfg = DemoConfig(briefs=briefs, out=out, n=n, k=k, seed=seed, repository=repository,
                     progress=not no_progress)
    if dry_run:
        missing = [_show(p) for p in release_files() if not p.is_file()]
        click.echo(json.dumps({"config": asdict(cfg), "release_model_missing": missing,
                               "text_encoder_exported":
                                   (text_encoder_dir() / "model.onnx").is_file()}, indent=2))
        return
    keep_freed_memory()  # the demo's jobs run in this process (adgen.memory)
    result = run_demo(cfg)
    if not result["ok"]:
        raise SystemExit(1)  # adgen.cli.main drops click Exit codes in non-standalone mode
