"""Checkpoint round trip and the loader's rejections (one clear CheckpointError each)."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from adgen.errors import AdgenError
from adgen.training.checkpoint import (CheckpointError, LoadedGenerator, load_generator,
                                 save_generator)
from adgen.training.networks import build_generator

SMALL_FILM = {"ngf": 4, "mults": [8, 4, 2, 1, 1], "cond_dim": 16, "z_dim": 8}


def _saved(tmp_path, arch="film", **kw):
    torch.manual_seed(0)
    g = build_generator(arch, **kw)
    # Make weights non-trivial (FiLM projections start at zero).
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    out = save_generator(g, {"dataset_hash": "d" * 32, "text_encoder_hash": "t" * 16,
                             "training": {"step": 3}}, tmp_path / "ckpt")
    return g, out


@pytest.mark.parametrize("arch,kw", [("film", SMALL_FILM), ("dcgan", {"ngf": 8, "z_dim": 100})])
def test_round_trip_is_bit_exact(tmp_path, arch, kw):
    g, out = _saved(tmp_path, arch, **kw)
    for target in (out, out / "generator.safetensors"):
        loaded = load_generator(target)
        assert isinstance(loaded, LoadedGenerator)
        assert not loaded.module.training
        assert loaded.z_dim == kw["z_dim"]
        assert loaded.config["format_version"] == 1
        assert loaded.config["kind"] == "adgen-generator"
        assert loaded.config["arch"] == arch
        assert loaded.config["dataset_hash"] == "d" * 32
        assert len(loaded.sha256) == 64
        for key, tensor in g.state_dict().items():
            assert torch.equal(tensor, loaded.module.state_dict()[key]), key
    g.eval()
    e, z = torch.randn(3, 384), torch.randn(3, kw["z_dim"])
    with torch.no_grad():
        assert torch.equal(g(e, z), load_generator(out).module(e, z))


def test_save_is_atomic_and_replaces(tmp_path):
    _, out = _saved(tmp_path, **SMALL_FILM)
    _, out2 = _saved(tmp_path, **SMALL_FILM)
    assert out == out2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "generator.safetensors"]


def _error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_generator(path)
    assert isinstance(info.value, AdgenError)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_rejects_truncated(tmp_path):
    _, out = _saved(tmp_path, **SMALL_FILM)
    w = out / "generator.safetensors"
    data = w.read_bytes()
    w.write_bytes(data[:-100])
    assert "truncated" in _error(out)
    w.write_bytes(data[:5])
    assert "truncated" in _error(out)


def test_rejects_wrong_format_version_and_kind(tmp_path):
    _, out = _saved(tmp_path, **SMALL_FILM)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps(cfg | {"format_version": 2}))
    assert "format_version" in _error(out)
    cfg_path.write_text(json.dumps(cfg | {"kind": "something-else"}))
    assert "kind" in _error(out)
    cfg_path.write_text("{not json")
    assert "JSON" in _error(out)


def test_rejects_pickles(tmp_path):
    g, out = _saved(tmp_path, **SMALL_FILM)
    pt = tmp_path / "model.pt"
    torch.save(g.state_dict(), pt)
    assert "pickle" in _error(pt)
    # A pickle disguised under the safetensors name is caught by its magic bytes.
    (out / "generator.safetensors").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert "pickle" in _error(out)


def test_rejects_config_weights_mismatch(tmp_path):
    _, out = _saved(tmp_path, **SMALL_FILM)
    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["ngf"] = 8  # same keys, other shapes
    cfg_path.write_text(json.dumps(cfg))
    assert "shape" in _error(out)
    cfg["model"] = dict(SMALL_FILM, cond_aug=True, embed_dim=384)  # text layer doubles
    cfg_path.write_text(json.dumps(cfg | {"model": cfg["model"]}))
    assert "does not match" in _error(out)
    cfg["arch"] = "dcgan"
    cfg["model"] = {"z_dim": 8}
    cfg_path.write_text(json.dumps(cfg))
    assert "missing" in _error(out)


def test_rejects_missing(tmp_path):
    assert "no checkpoint" in _error(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "generator.safetensors" in _error(tmp_path / "empty")
