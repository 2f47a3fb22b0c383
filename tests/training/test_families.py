"""Design-family datasets: Iconify packages (a tiny real package made here), held-out cells,
SVG assembly, and bad input."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from adgen.training.data import DataConfig, DataError
from adgen.training.families import (build_families, fetch_iconify, held_out, icon_svg,
                                     load_families, load_iconset, padded, parse_families,
                                     render_svg)
from tests.training.family_factory import fake_packages

def test_held_out_rule_is_the_hash_of_codepoints_and_family():
    cells = [(f"{0x1f400 + i:x}", fam) for i in range(2000) for fam in ("noto", "fluent")]
    out = [held_out(c, f) for c, f in cells]
    assert 0.07 < np.mean(out) < 0.13              # about one in ten
    expected = [int(hashlib.sha256(f"{c}|{f}".encode()).hexdigest(), 16) % 10 == 0
                for c, f in cells]
    assert out == expected
    assert not any(held_out(c, "twemoji") for c, _ in cells)   # the reference family


def test_padded_codepoints_match_iconify_keys():
    assert padded("30-20e3") == "0030-20e3"
    assert padded("a9") == "00a9"
    assert padded("1f600") == "1f600"


def test_parse_families_checks_names_and_order():
    assert parse_families("twemoji, noto,noto,fluent") == ("twemoji", "noto", "fluent")
    for bad in ("noto,twemoji", "twemoji,openmoji", "", " , "):
        with pytest.raises(DataError):
            parse_families(bad)


def test_icon_svg_follows_aliases_and_flips(tmp_path):
    cache, packages = fake_packages(tmp_path, 3)
    iconset = load_iconset(fetch_iconify(packages["noto"], cache))
    iconset.aliases["mirrored"] = {"parent": "icon-0", "hFlip": True}
    iconset.aliases["chain"] = {"parent": "mirrored"}
    plain = render_svg(icon_svg(iconset, "icon-0"), 32)
    flipped = render_svg(icon_svg(iconset, "chain"), 32)
    assert plain[..., 3].any() and flipped[..., 3].any()
    np.testing.assert_array_equal(flipped, plain[:, ::-1])   # mirror image, pixel for pixel
    with pytest.raises(DataError, match="neither an icon nor an alias"):
        icon_svg(iconset, "nothing")
    iconset.aliases["loop"] = {"parent": "loop"}
    with pytest.raises(DataError, match="too long"):
        icon_svg(iconset, "loop")


def test_build_keeps_concepts_every_family_draws(tmp_path):
    cache, packages = fake_packages(tmp_path, 6)
    cfg = DataConfig(name="fam", out=str(tmp_path / "data"), size=32)
    path = build_families(cfg, ("twemoji", "noto", "fluent"), cache, progress=False,
                          packages=packages)
    ds = load_families(path, size=32)
    assert ds.images.shape == (5, 3, 32, 32, 4)              # fluent lacks the 6th
    assert ds.info["dropped"]["not_in_fluent"] >= 1
    # noto squares are red, fluent squares green: each family's own drawing is in its slot
    noto, fluent = ds.images[:, 1], ds.images[:, 2]
    assert (noto[..., 0][noto[..., 3] > 200] > 150).all()
    assert (fluent[..., 1][fluent[..., 3] > 200] > 120).all()
    assert (ds.images[:, 0, ..., 3] > 0).any()               # twemoji rendered from SVG
    mask = ds.train_mask()
    for r, row in zip(ds.records, mask):
        assert [not held_out(r["codepoints"], f) for f in ds.families] == list(row)
    assert "CC-BY 4.0" in (path / "LICENSES.md").read_text()
    again = build_families(cfg, ("twemoji", "noto", "fluent"), cache, progress=False,
                           packages=packages)
    assert (again / "images.npz").read_bytes() == (path / "images.npz").read_bytes()


def test_a_tampered_package_is_refused_and_npm_is_not_needed_for_a_cached_one(tmp_path):
    cache, packages = fake_packages(tmp_path, 3)
    tgz = next(cache.glob("iconify-json-noto-*.tgz"))
    tgz.write_bytes(tgz.read_bytes() + b"x")
    with pytest.raises(DataError, match="sha256"):
        fetch_iconify(packages["noto"], cache)
    assert fetch_iconify(packages["fluent"], cache).joinpath("icons.json").is_file()


def test_broken_packages_and_datasets_give_one_line_errors(tmp_path):
    pkg = tmp_path / "package"
    pkg.mkdir()
    with pytest.raises(DataError, match="lacks chars.json"):
        load_iconset(pkg)
    (pkg / "chars.json").write_text("{}")
    (pkg / "icons.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        load_iconset(pkg)
    with pytest.raises(DataError, match="missing info.json"):
        load_families(tmp_path)
    (tmp_path / "info.json").write_text(json.dumps({"layout": "flat"}))
    with pytest.raises(DataError, match="no design families"):
        load_families(tmp_path)
