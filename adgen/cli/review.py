"""`adgen review OUT_DIR`: a local web page to approve or reject a job's images, and the
export of the approved ones (adgen.serving.jobs.review)."""
from __future__ import annotations

import os
import signal
import sys
import webbrowser
from pathlib import Path

import click

from adgen.serving.jobs.review import make_server
from adgen.serving.jobs.review_export import export_approved
from adgen.serving.jobs.review_index import Decisions, ReviewIndex

EPILOG = """\b
Examples:
  adgen review out/                       # serve the page on 127.0.0.1, open a browser
  adgen review out/ --port 8800 --no-open
  adgen review out/ --export ship/        # copy the approved images and creatives, exit
  adgen review out/ --export ship/ --link # hard links instead of copies

\b
Keys on the page: a approve, r reject, u undo, j / k next / previous, o open full size,
/ filter by prompt or brief. Each decision is appended to OUT_DIR/review.jsonl
({custom_id, decision, at}; the last one of an image wins) and is on disk before the page
shows it. The page's "Export approved" writes OUT_DIR/approved/; --export DIR writes DIR:
the approved images and their creatives under their own paths, with their manifest lines
in DIR/manifest.jsonl. Thumbnails are cached in OUT_DIR/.review/.
"""


@click.command("review", epilog=EPILOG)
@click.argument("out_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (another than loopback exposes the page).")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on; 0 takes any free one.")
@click.option("--open/--no-open", "open_browser", default=True, show_default=True,
              help="Open the page in a browser.")
@click.option("--export", "export_dir", default=None, type=click.Path(),
              help="Export the approved images and creatives to this folder, then exit.")
@click.option("--link", is_flag=True,
              help="Export by hard links (copies where the file system cannot link).")
def review(out_dir, host, port, open_browser, export_dir, link):
    """Review a job's images in a local web page: approve, reject, export."""
    out = Path(out_dir)
    if export_dir is not None:
        index = ReviewIndex(out)
        decisions = Decisions(out)
        r = export_approved(out, Path(export_dir), index, decisions.current, link=link)
        linked = f" ({r.linked} files hard-linked)" if link else ""
        click.echo(f"exported {r.images} approved images and {r.creatives} creatives to "
                   f"{r.dest}{linked}")
        for cid, reason in r.errors[:5]:
            click.echo(f"  left out {cid}: {reason}", err=True)
        if r.errors:
            raise SystemExit(1)
        return
    server = make_server(out, host, port, link=link)
    counts = server.app.counts()
    so_far = " so far" if server.app.index.indexing else ""  # a large manifest: read on
    click.echo(f"reviewing {counts['images']} images{so_far} in {out} ({counts['approved']} "
               f"approved, {counts['rejected']} rejected) at {server.url}  (Ctrl-C to stop)")
    if open_browser and _has_display():
        webbrowser.open(server.url)
    # SIGTERM ends the server like Ctrl-C; every decision is already on disk either way.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    click.echo("stopped; decisions are in " + str(out / "review.jsonl"))


def _interrupt(*_) -> None:
    raise KeyboardInterrupt


def _has_display() -> bool:
    """A graphical session to open a browser in; without one (ssh, a container) Python's
    webbrowser would start a text browser in this very terminal, so the URL is enough."""
    return sys.platform in ("darwin", "win32") or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
