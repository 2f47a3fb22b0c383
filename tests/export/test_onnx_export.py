"""export_onnx / `adgen export onnx`: contract I/O, parity with PyTorch, manifest, bad input."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from adgen.export.onnx_export import FP32_TOLERANCE, ExportError, export_onnx
from adgen.export.onnx_files import (GENERATOR_ONNX, MANIFEST, OPTIMIZED_ONNX, check_onnx_io,
                                     onnx_io, parity_inputs)
from adgen.contract import generator_spec
from adgen.errors import AdgenError

from ckpt_factory import make_checkpoint  # tests/export/ckpt_factory.py


def _leftovers(folder):
    """Hidden temp folders an export could leave behind next to its output."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_onnx_passes_checker_and_matches_contract(film_onnx):
    import onnx
    for name in (GENERATOR_ONNX, OPTIMIZED_ONNX):
        path = film_onnx / name
        onnx.checker.check_model(str(path), full_check=True)
        check_onnx_io(path, generator_spec(32))  # raises on any mismatch
        io = onnx_io(path)
        assert [t["name"] for t in io["inputs"]] == ["EMBEDDING", "Z"]
        assert io["inputs"][0]["dims"] == ["batch", 384]
        assert io["inputs"][1]["dims"] == ["batch", 32]
        assert io["outputs"] == [{"name": "RAW_IMAGE", "dtype": "TYPE_FP32",
                                  "dims": ["batch", 3, 64, 64]}]
    model = onnx.load(str(film_onnx / GENERATOR_ONNX))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_manifest_records_spec_checkpoint_versions_and_parity(film_onnx, film_ckpt):
    from adgen.training.checkpoint import load_generator
    m = json.loads((film_onnx / MANIFEST).read_text())
    loaded = load_generator(film_ckpt)
    assert m["kind"] == "adgen-generator-onnx" and m["precision"] == "fp32"
    assert m["checkpoint"]["sha256"] == loaded.sha256
    assert m["z_dim"] == 32 and m["arch"] == "film" and m["opset"] >= 17
    assert m["spec"]["inputs"][1] == {"name": "Z", "dtype": "TYPE_FP32", "dims": [32]}
    assert set(m["versions"]) >= {"torch", "onnx", "onnxruntime"}
    for name in (GENERATOR_ONNX, OPTIMIZED_ONNX):
        assert set(m["parity"]["batches"][name]) == {"1", "64", "256"}
        for figures in m["parity"]["batches"][name].values():
            assert figures["max_abs"] <= FP32_TOLERANCE
    # no absolute paths: manifests may be committed
    assert "/" not in m["checkpoint"]["name"]


def test_exported_onnx_reproduces_pytorch_on_fresh_inputs(film_onnx, film_ckpt):
    """Independent of the manifest: run both files on new inputs at an odd batch size."""
    import onnxruntime as ort
    import torch

    from adgen.training.checkpoint import load_generator
    module = load_generator(film_ckpt).module
    feeds = parity_inputs(7, 32, seed=99)
    with torch.no_grad():
        ref = module(torch.from_numpy(feeds["EMBEDDING"]), torch.from_numpy(feeds["Z"])).numpy()
    assert ref.std() > 0.01  # the random model does produce an image, not a constant
    for name in (GENERATOR_ONNX, OPTIMIZED_ONNX):
        sess = ort.InferenceSession(str(film_onnx / name), providers=["CPUExecutionProvider"])
        out = sess.run(["RAW_IMAGE"], feeds)[0]
        assert out.shape == (7, 3, 64, 64)
        np.testing.assert_allclose(out, ref, atol=FP32_TOLERANCE, rtol=0)


def test_dcgan_checkpoint_exports_with_its_own_z_dim(tmp_path):
    ckpt = make_checkpoint(tmp_path / "dcgan", "dcgan", ngf=8, z_dim=100)
    out = export_onnx(ckpt, tmp_path / "out", parity_batches=(1, 5), progress=False)
    m = json.loads((out / MANIFEST).read_text())
    assert m["z_dim"] == 100 and m["arch"] == "dcgan"
    check_onnx_io(out / GENERATOR_ONNX, generator_spec(100))
    assert m["parity"]["max_abs"] <= FP32_TOLERANCE


def test_refuses_nonempty_output_unless_force(film_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty.*--force"):
        export_onnx(film_ckpt, out, parity_batches=(1,), progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    export_onnx(film_ckpt, out, parity_batches=(1,), force=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [GENERATOR_ONNX, OPTIMIZED_ONNX, MANIFEST]
    assert _leftovers(tmp_path) == []


def _truncate(ckpt, tmp_path):
    bad = tmp_path / "truncated"
    bad.mkdir()
    data = (ckpt / "generator.safetensors").read_bytes()
    (bad / "generator.safetensors").write_bytes(data[: len(data) // 2])
    (bad / "config.json").write_text((ckpt / "config.json").read_text())
    return bad


def _other_version(ckpt, tmp_path):
    bad = tmp_path / "v2"
    bad.mkdir()
    (bad / "generator.safetensors").write_bytes((ckpt / "generator.safetensors").read_bytes())
    config = json.loads((ckpt / "config.json").read_text())
    config["format_version"] = 2
    (bad / "config.json").write_text(json.dumps(config))
    return bad


def _not_a_generator(ckpt, tmp_path):
    """A valid safetensors file whose tensors are not a generator's."""
    bad = tmp_path / "notgen"
    bad.mkdir()
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (bad / "generator.safetensors").write_bytes(struct.pack("<Q", len(header)) + header
                                                + b"\0" * 8)
    (bad / "config.json").write_text((ckpt / "config.json").read_text())
    return bad


def _pickle(ckpt, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04K\x01.")
    return path


@pytest.mark.parametrize("make_bad, message", [
    (lambda ckpt, tmp: tmp / "missing", "no checkpoint"),
    (_truncate, "truncated"),
    (_other_version, "format_version"),
    (_not_a_generator, "does not match"),
    (_pickle, "pickle"),
], ids=["missing", "truncated", "format_version", "not_a_generator", "pickle"])
def test_bad_checkpoint_is_one_line_error_and_writes_nothing(make_bad, message, film_ckpt,
                                                             tmp_path, capsys):
    from adgen.cli import main
    bad = make_bad(film_ckpt, tmp_path)
    out = tmp_path / "out"
    with pytest.raises(AdgenError, match=message):
        export_onnx(bad, out, progress=False)
    assert main(["export", "onnx", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert not out.exists() and _leftovers(tmp_path) == []


def test_check_onnx_io_rejects_wrong_inputs(tmp_path):
    import torch

    class Wrong(torch.nn.Module):
        def forward(self, text, noise):
            return text[:, :3, None, None].expand(-1, 3, 64, 64) + noise.sum()

    path = tmp_path / "wrong.onnx"
    torch.onnx.export(Wrong(), (torch.zeros(2, 384), torch.zeros(2, 32)), str(path),
                      input_names=["TEXT", "NOISE"], output_names=["RAW_IMAGE"],
                      dynamic_axes={"TEXT": {0: "b"}, "NOISE": {0: "b"}}, opset_version=17,
                      dynamo=False)
    with pytest.raises(ExportError, match=r"inputs \['NOISE', 'TEXT'\], expected \['EMBEDDING', 'Z'\]"):
        check_onnx_io(path, generator_spec(32))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ExportError, match="not a readable ONNX"):
        check_onnx_io(tmp_path / "junk.onnx", generator_spec(32))


def test_check_onnx_io_rejects_fixed_batch_and_wrong_z(film_onnx, tmp_path):
    import onnx
    model = onnx.load(str(film_onnx / GENERATOR_ONNX))
    model.graph.input[1].type.tensor_type.shape.dim[0].dim_value = 8  # batch pinned to 8
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    with pytest.raises(ExportError, match="Z has shape"):
        check_onnx_io(tmp_path / "fixed.onnx", generator_spec(32))
    with pytest.raises(ExportError, match="Z has shape"):
        check_onnx_io(film_onnx / GENERATOR_ONNX, generator_spec(128))


def test_cli_dry_run_prints_config_and_writes_nothing(tmp_path, capsys):
    from adgen.cli import main
    assert main(["export", "onnx", "ckpt", "-o", str(tmp_path / "o"), "--dry-run",
                 "--precision", "int8"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["precision"] == "int8" and cfg["parity_batches"] == [1, 64, 256]
    assert not (tmp_path / "o").exists()


def test_nan_in_parity_fails_the_export(film_ckpt, tmp_path, monkeypatch):
    """A NaN must never pass a tolerance check (NaN > tol is False)."""
    import adgen.export.onnx_export as OE
    real = OE.torch_reference

    def with_nan(module, feeds):
        out = real(module, feeds)
        out[0, 0, 0, 0] = np.nan
        return out

    monkeypatch.setattr(OE, "torch_reference", with_nan)
    with pytest.raises(ExportError, match="parity failed: max .* = nan"):
        export_onnx(film_ckpt, tmp_path / "o", parity_batches=(1, 2), progress=False)
    assert list(tmp_path.iterdir()) == []
