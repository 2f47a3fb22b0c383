"""Tiny real Iconify packages (npm tarballs) and family datasets for tests."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

from adgen.training.data import DataConfig, collect_concepts
from adgen.training.families import ICONIFY, build_families, padded

SQUARE = '<path fill="#{c}" d="M{x} 0h{w}v{h}H{x}z"/>'


def iconify_tgz(path: Path, chars: dict[str, str], icons: dict, aliases: dict | None = None,
                width: int = 32) -> Path:
    """A real npm tarball of an Iconify JSON package (package/chars.json + icons.json)."""
    files = {"package/chars.json": json.dumps(chars),
             "package/icons.json": json.dumps({"prefix": "t", "icons": icons,
                                               "aliases": aliases or {}, "width": width,
                                               "height": width}),
             "package/package.json": "{}"}
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def fake_packages(tmp_path: Path, n: int, colours=("d22", "2a2")) -> tuple[Path, dict]:
    """Packages for noto and fluent drawing the first n concepts as coloured squares (the
    last concept missing from fluent), in a cache folder; returns (cache, packages)."""
    concepts, _ = collect_concepts(DataConfig())
    cache = tmp_path / "packages"
    cache.mkdir()
    packages = {}
    for fam, colour in zip(("noto", "fluent"), colours):
        keep = concepts[:n] if fam == "noto" else concepts[:n - 1]
        chars = {padded(c.codepoints): f"icon-{i}" for i, c in enumerate(keep)}
        icons = {f"icon-{i}": {"body": SQUARE.format(c=colour, x=4 + i % 8, w=20, h=24)}
                 for i in range(len(keep))}
        pkg = replace(ICONIFY[fam], version="0.0.1-test")
        stem = pkg.spec.lstrip("@").replace("/", "-") + f"-{pkg.version}"
        tgz = iconify_tgz(cache / f"{stem}.tgz", chars, icons)
        packages[fam] = replace(pkg, tgz_sha256=hashlib.sha256(tgz.read_bytes()).hexdigest())
    return cache, packages


def family_dataset(tmp_path: Path, n: int = 6, size: int = 64) -> Path:
    """A built --families dataset of the first n-1 concepts (fluent lacks the n-th)."""
    cache, packages = fake_packages(tmp_path, n)
    cfg = DataConfig(name="fam", out=str(tmp_path / "data"), size=size)
    return build_families(cfg, ("twemoji", "noto", "fluent"), cache, progress=False,
                          packages=packages)
