"""The upsampler's int8 export, its picture checks on generated inputs and the served choice."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adgen.errors import ExportError
from adgen.export.precision import (UPSAMPLER_KEEP_RULE, choose_upsampler_precision,
                                    upsampler_keep_decision)
from adgen.training.upsampler import UpsamplerError
from adgen.training.upsampler_quality import GeneratedPairs, aligned_mask, psnr_gain

VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})
PICTURE = {"mean_abs_levels": 0.6, "identity_top1": {"fp32": 0.90, "int8": 0.90},
           "psnr_gain_db": {"fp32": 2.40, "int8": 2.35}}


def flat_art(n: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, 64, 64, 3]: flat colour blocks with hard edges, like emoji."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(blocks, 8, axis=1), 8, axis=2)


def pairs_of(x64: np.ndarray, y256: np.ndarray) -> GeneratedPairs:
    n = len(x64)
    return GeneratedPairs(x64, y256, np.zeros(n, int), np.zeros(n, int),
                          aligned_mask(x64, y256), "sha")


def up4(x: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)


def test_aligned_pairs_are_those_the_generator_drew_in_place():
    x = flat_art(3)
    y = up4(x)
    y[1] = np.roll(y[1], 40, axis=1)  # drawn 10 px lower than the render
    y[2] = 255 - y[2]                  # another picture altogether
    assert aligned_mask(x, y).tolist() == [True, False, False]
    with pytest.raises(UpsamplerError, match="pairs must be uint8"):
        aligned_mask(x, y[:, :128, :128])


def test_psnr_gain_scores_aligned_pairs_only_and_needs_one():
    x = flat_art(4, seed=1)
    pairs = pairs_of(x, up4(x))
    perfect = psnr_gain(pairs.y256.copy(), pairs)
    assert perfect["pairs"] == 4 and perfect["met"] and perfect["gain_db"] > 2
    blurred = psnr_gain(np.full_like(pairs.y256, 128), pairs)
    assert blurred["gain_db"] < 0 and not blurred["met"]
    with pytest.raises(UpsamplerError, match="expected 4 images"):
        psnr_gain(pairs.y256[:2], pairs)
    none = pairs_of(x, 255 - up4(x))
    with pytest.raises(UpsamplerError, match="no generated image is aligned"):
        psnr_gain(none.y256, none)


def test_keep_decision_needs_every_picture_bound_and_speed():
    d = upsampler_keep_decision(PICTURE, {32: 20.0}, {32: 8.0})
    assert d["keep"] is True and d["rule"] == UPSAMPLER_KEEP_RULE
    for bad, name in (({"mean_abs_levels": 2.5}, "mean_abs_levels"),
                      ({"identity_top1": {"fp32": 0.90, "int8": 0.88}}, "identity_top1"),
                      ({"psnr_gain_db": {"fp32": 2.40, "int8": 2.20}}, "psnr_gain_drop_db")):
        d = upsampler_keep_decision({**PICTURE, **bad}, {32: 20.0}, {32: 8.0})
        assert d["keep"] is False and name in d["reason"], name
    d = upsampler_keep_decision(PICTURE, {32: 20.0}, {32: 21.0})
    assert d["keep"] is False and d["reason"].startswith("not faster")
    assert upsampler_keep_decision(None, {32: 20.0}, {32: 8.0})["keep"] is None


def _model_dir(tmp_path, decision, sha="abc"):
    (tmp_path / "int8").mkdir(parents=True)
    (tmp_path / "int8" / "upsampler.onnx").write_bytes(b"onnx")
    (tmp_path / "int8" / "manifest.json").write_text(json.dumps(
        {"checkpoint": {"sha256": sha}, "measurements": {"decision": decision}}))
    return tmp_path


def test_choice_serves_int8_only_where_kept_and_the_cpu_has_int8_units(tmp_path):
    model = _model_dir(tmp_path, upsampler_keep_decision(PICTURE, {32: 20.0}, {32: 8.0}))
    assert choose_upsampler_precision("auto", model, "abc", VNNI).folder == model / "int8"
    avx2 = choose_upsampler_precision("auto", model, "abc", AVX2)
    assert avx2.precision == "fp32" and "no int8 dot-product units" in avx2.reason
    assert choose_upsampler_precision("auto", model, "other", VNNI).precision == "fp32"
    assert choose_upsampler_precision("fp32", model, "abc", VNNI).precision == "fp32"
    # the generator's rule does not admit an upsampler decision, nor the reverse
    generator_like = {**upsampler_keep_decision(PICTURE, {32: 20.0}, {32: 8.0}),
                      "rule": {"r_precision": 0.01}}
    (model / "int8" / "manifest.json").write_text(json.dumps(
        {"checkpoint": {"sha256": "abc"}, "measurements": {"decision": generator_like}}))
    assert choose_upsampler_precision("auto", model, "abc", VNNI).precision == "fp32"


def test_int8_requested_without_an_export_names_the_command(tmp_path):
    with pytest.raises(ExportError, match="adgen.export.upsampler_onnx .* --int8"):
        choose_upsampler_precision("int8", tmp_path, "abc", VNNI)


def test_int8_export_keeps_the_contract_and_records_its_measurements(tiny_upsampler,
                                                                       tmp_path):
    from adgen.export.onnx_files import ort_session
    from adgen.export.upsampler_onnx import export_upsampler, export_upsampler_int8, upsample_u8
    from adgen.serving.runtime.backend import read_upsampler_info
    out = export_upsampler_int8(tiny_upsampler, tmp_path / "int8", flat_art(32), threads=1,
                                timing_rounds=1)
    man = json.loads((out / "manifest.json").read_text())
    assert man["precision"] == "int8" and man["quantization"]["calibration"]["samples"] == 32
    speed = man["measurements"]["speed"]["ms_per_image"]
    assert speed["fp32"] > 0 and speed["int8"] > 0
    assert man["measurements"]["decision"]["keep"] is None  # no pairs: picture unmeasured
    assert read_upsampler_info(out)["name"] == "tiny-up-int8"
    fp32 = export_upsampler(tiny_upsampler, tmp_path / "fp32", parity_batches=(1,))
    x = flat_art(8, seed=3)
    a, b = (upsample_u8(ort_session(d / "upsampler.onnx", 1), x) for d in (fp32, out))
    assert a.shape == b.shape == (8, 256, 256, 3)
    assert np.abs(a.astype(np.float32) - b).mean() < 2.0  # uint8 levels


def test_int8_export_refuses_bad_calibration_images(tiny_upsampler, tmp_path):
    from adgen.export.upsampler_onnx import export_upsampler_int8
    with pytest.raises(ExportError, match=r"expected uint8 images \[N,64,64,3\]"):
        export_upsampler_int8(tiny_upsampler, tmp_path / "a", np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ExportError, match="at least one 64 px image"):
        export_upsampler_int8(tiny_upsampler, tmp_path / "b", np.zeros((0, 64, 64, 3), np.uint8))


def test_calibration_and_cli_refuse_what_they_cannot_use(tiny_upsampler, tmp_path, capsys):
    from adgen.export.upsampler_onnx import main
    from adgen.training.upsampler_quality import calibration_images
    with pytest.raises(UpsamplerError, match="at least 1 image"):
        calibration_images(tmp_path, count=0)
    assert main([str(tiny_upsampler), "-o", str(tmp_path / "o"), "--int8",
                 "--data64", str(tmp_path / "no-such-data")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "no-such-data" in err[0]
    assert not (tmp_path / "o").exists()


def test_repo_build_serves_the_kept_int8_upsampler_where_the_cpu_has_int8_units(
        tiny_upsampler, tmp_path, monkeypatch):
    """resolve_upsampler (what `adgen repo build` calls) follows the upsampler's rule: the
    checkpoint's int8/ export on a CPU with int8 dot-product units when it was kept, the
    fp32 export elsewhere or when fp32 is asked for; the choice lands in the artifact."""
    import shutil

    from adgen.export.repo import resolve_upsampler
    from adgen.export.upsampler_onnx import export_upsampler_int8
    model = tmp_path / "up"
    shutil.copytree(tiny_upsampler, model)
    out = export_upsampler_int8(model, model / "int8", flat_art(32), threads=1,
                                timing_rounds=1)
    man = json.loads((out / "manifest.json").read_text())
    man["measurements"]["decision"] = upsampler_keep_decision(PICTURE, {32: 20.0}, {32: 8.0})
    (out / "manifest.json").write_text(json.dumps(man))
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("ADGEN_CPU_FLAGS", "avx2,avx512f,avx512_vnni")
    up = resolve_upsampler(model)
    assert up.precision == "int8" and up.folder == model / "int8"
    assert resolve_upsampler(model, precision="fp32").precision == "fp32"
    monkeypatch.setenv("ADGEN_CPU_FLAGS", "avx2,fma")
    fp32 = resolve_upsampler(model)
    assert fp32.precision == "fp32" and "no int8 dot-product units" in fp32.reason
    assert fp32.folder != model / "int8"
