"""`adgen review OUT_DIR`: a local web page to review a finished job.

    server = make_server(Path("out"), port=0)   # bound to 127.0.0.1 unless told otherwise
    print(server.url); server.serve_forever()

The page (review_static/: plain HTML, CSS and JS, no build step) asks a small JSON API:

    GET  /api/info                              job name, image count, decision counts
    GET  /api/items?offset=&limit=&q=&decision= one page of images (q: words of the prompt,
                                                brief or family; decision: all | pending |
                                                approved | rejected)
    POST /api/decision {custom_id, decision}    approve | reject | clear, in review.jsonl
    POST /api/export                            the approved images into <OUT_DIR>/approved
    GET  /file/<path>, /thumb/<path>            an image of the job, or its thumbnail

Only files inside the job folder are served (adgen.serving.jobs.review_index.safe_path);
thumbnails are made on first request and kept under OUT_DIR/.review/thumbs, keyed by the
file's path, size and mtime, written atomically without following links. Requests must name
this server in their Host header and writes must come as JSON from its own page, so another
site open in the same browser cannot reach the API (DNS rebinding, cross-site POSTs).
"""
from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from PIL import Image, UnidentifiedImageError

from adgen.serving.jobs.images import atomic_write_bytes
from adgen.serving.jobs.review_export import export_approved
from adgen.serving.jobs.review_index import STATE_DIR, Decisions, NoSuchFile, NotSaved, \
    PathRefused, ReviewError, ReviewIndex, safe_path

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "app.css": "text/css; charset=utf-8"}
IMAGE_TYPES = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg",
               ".jpeg": "image/jpeg"}
THUMB_BOX = (256, 192)  # (w, h) at most; a 64 px image is served as it is
THUMB_VERSION = "1"     # bump when thumbnails would come out differently
MAX_BODY = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class ReviewApp:
    """The job folder's index, decisions and export target, shared by the request threads."""

    def __init__(self, out: Path, link: bool = False):
        self.out = Path(out)
        self.index = ReviewIndex(self.out)
        self.index.start()
        self.decisions = Decisions(self.out)
        self.export_dir = self.out / "approved"
        self.link = link
        folder = resources.files("adgen.serving.jobs").joinpath("review_static")
        self.static = {name: folder.joinpath(name).read_bytes() for name in STATIC}

    def info(self) -> dict:
        return {"job": self.out.resolve().name, "export_dir": str(self.export_dir),
                "indexing": self.index.indexing, "counts": self.counts()}

    def counts(self) -> dict:
        return {"images": len(self.index), **self.decisions.counts()}

    def items(self, query: dict) -> dict:
        def one(name, default=""):
            return query.get(name, [default])[0]
        try:
            offset, limit = int(one("offset", "0")), int(one("limit", "60"))
        except ValueError:
            raise ReviewError("offset and limit must be whole numbers") from None
        current, version = self.decisions.snapshot()
        page = self.index.page(offset, limit, one("q"), one("decision", "all") or "all",
                               current, version)
        return {"total": page.total, "offset": page.offset, "items": page.items,
                "indexing": page.indexing, "counts": self.counts()}

    def decide(self, body: dict) -> dict:
        cid, decision = body.get("custom_id"), body.get("decision")
        if not isinstance(cid, str) or not isinstance(decision, str):
            raise ReviewError("send {\"custom_id\": ..., \"decision\": ...}")
        self.index.sync(wait=False)
        if cid not in self.index.pos:
            raise NoSuchFile(f"no image {cid[:80]!r} in this job")
        return {"saved": self.decisions.record(cid, decision), "counts": self.counts()}

    def export(self) -> dict:
        current, _ = self.decisions.snapshot()
        r = export_approved(self.out, self.export_dir, self.index, current, link=self.link)
        return {"dest": str(r.dest), "images": r.images, "creatives": r.creatives,
                "linked": r.linked, "left_out": [list(e) for e in r.errors]}

    def thumbnail(self, rel: str) -> tuple[bytes, str]:
        """(bytes, content type) of the thumbnail of job file `rel`."""
        src = safe_path(self.out, rel)
        st = src.stat()
        key = hashlib.sha256(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{THUMB_VERSION}"
                             .encode()).hexdigest()
        cached = self.out / STATE_DIR / "thumbs" / key[:2] / f"{key}.png"
        try:
            return _read_plain(cached), "image/png"
        except OSError:
            pass
        try:
            with Image.open(src) as im:
                if im.width <= THUMB_BOX[0] and im.height <= THUMB_BOX[1]:
                    return src.read_bytes(), IMAGE_TYPES[src.suffix.lower()]
                im = im.convert("RGB")
                im.thumbnail(THUMB_BOX, Image.LANCZOS)
                buf = io.BytesIO()
                im.save(buf, "PNG", compress_level=1)
        except (UnidentifiedImageError, OSError, ValueError):
            raise NoSuchFile(f"{rel[:80]!r} is not a readable image") from None
        data = buf.getvalue()
        try:
            atomic_write_bytes(cached, data, root=self.out)
        except OSError as exc:  # a read-only or full job folder: serve it uncached
            print(f"warning: thumbnail not cached ({exc.strerror or exc})", file=sys.stderr)
        return data, "image/png"


def _read_plain(path: Path) -> bytes:
    """A cached file's bytes, never through a link."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as f:
        return f.read()


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: ReviewApp, host: str, port: int, quiet: bool = True):
        self.app, self.quiet = app, quiet
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ReviewError(f"port {port} on {host} is in use: choose another with "
                                  "--port, or --port 0 for any free one") from None
            raise ReviewError(f"cannot listen on {host}:{port} "
                              f"({exc.strerror or exc})") from None
        self.port = self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{self.port}/"
        names = {shown, "127.0.0.1", "localhost", "[::1]"}
        # Bound to loopback, only loopback names may be asked for (DNS rebinding); bound
        # elsewhere by choice, any name that reaches it is the user's.
        self.hosts = {f"{n}:{self.port}" for n in names} if host in LOOPBACK else None

    def server_close(self) -> None:
        super().server_close()
        self.app.decisions.close()


def make_server(out: Path, host: str = "127.0.0.1", port: int = 0, link: bool = False,
                quiet: bool = True) -> ReviewServer:
    """The index read and the port bound; call serve_forever() to answer."""
    return ReviewServer(ReviewApp(Path(out), link), host, port, quiet)


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    protocol_version = "HTTP/1.1"
    server_version = "adgen-review"

    def log_message(self, fmt, *args):
        if not self.server.quiet:
            super().log_message(fmt, *args)

    def _allowed_host(self) -> bool:
        hosts = self.server.hosts
        return hosts is None or self.headers.get("Host", "") in hosts

    def do_GET(self):
        self._answer(self._get)

    def do_HEAD(self):
        self._answer(self._get, head=True)

    def do_POST(self):
        self._answer(self._post)

    def _answer(self, route, head: bool = False):
        try:
            if not self._allowed_host():
                raise PathRefused("unknown Host header")
            status, ctype, body, cache = route(urlsplit(self.path))
        except PathRefused as exc:
            status, ctype, body, cache = HTTPStatus.FORBIDDEN, *_json_error(exc)
        except NoSuchFile as exc:
            status, ctype, body, cache = HTTPStatus.NOT_FOUND, *_json_error(exc)
        except NotSaved as exc:  # the page keeps the card undecided and says why
            status, ctype, body, cache = HTTPStatus.INTERNAL_SERVER_ERROR, *_json_error(exc)
        except ReviewError as exc:
            status, ctype, body, cache = HTTPStatus.BAD_REQUEST, *_json_error(exc)
        except OSError as exc:  # e.g. the job folder vanished or the disk is full
            status, ctype, body, cache = HTTPStatus.INTERNAL_SERVER_ERROR, *_json_error(
                f"{exc.strerror or exc}")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _get(self, url):
        app, path = self.server.app, url.path
        if path in ("/", "/index.html"):
            return HTTPStatus.OK, STATIC["index.html"], app.static["index.html"], "no-store"
        if path.startswith("/static/") and path[8:] in STATIC:
            name = path[8:]
            return HTTPStatus.OK, STATIC[name], app.static[name], "no-store"
        if path == "/api/info":
            return _json(app.info())
        if path == "/api/items":
            return _json(app.items(parse_qs(url.query)))
        for prefix in ("/file/", "/thumb/"):
            if path.startswith(prefix):
                rel = unquote(path[len(prefix):])
                if prefix == "/thumb/":
                    data, ctype = app.thumbnail(rel)
                else:
                    src = safe_path(app.out, rel)
                    data, ctype = src.read_bytes(), IMAGE_TYPES[src.suffix.lower()]
                return HTTPStatus.OK, ctype, data, "private, max-age=300"
        raise NoSuchFile(f"no page {path[:80]!r}")

    def _post(self, url):
        app = self.server.app
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        origin = self.headers.get("Origin")
        # A JSON body cannot be sent cross-site without a preflight this server never grants.
        if ctype != "application/json":
            raise PathRefused("POST needs Content-Type: application/json")
        if origin is not None and self.server.hosts is not None \
                and urlsplit(origin).netloc not in self.server.hosts:
            raise PathRefused("POST from another site")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            raise ReviewError(f"request body must be 0 to {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise ReviewError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise ReviewError("request body must be a JSON object")
        if url.path == "/api/decision":
            return _json(app.decide(body))
        if url.path == "/api/export":
            return _json(app.export())
        raise NoSuchFile(f"no action {url.path[:80]!r}")


def _json(data: dict):
    return HTTPStatus.OK, "application/json", json.dumps(data, ensure_ascii=False).encode(), \
        "no-store"


def _json_error(exc) -> tuple[str, bytes, str]:
    return "application/json", json.dumps({"error": str(exc)}).encode(), "no-store"
