"""256 px output, without a server: the Pipeline with an upsampler, `adgen repo
build --upsampler`, the local engine at 256, `adgen generate --size/--format/--quality` and
resume. A tiny upsampler (tests/serving/conftest.py) stands in for the release one; the
Triton side is tests/serving/test_triton_256.py."""
from __future__ import annotations

import json
import logging
import os

import numpy as np
import pytest

from adgen.cli import main

PROMPTS = ["a red apple, flat sticker style, on a teal background", "blue car", "ok"]
SEEDS = [0, 123456789, 2**63 - 1]


def area_down4(images: np.ndarray) -> np.ndarray:
    """uint8[B,256,256,3] -> float[B,64,64,3], the mean of each 4x4 block."""
    b, h, w, c = images.shape
    return images.reshape(b, h // 4, 4, w // 4, 4, c).astype(np.float64).mean(axis=(2, 4))


@pytest.fixture(scope="module")
def engines(model_repo):
    from adgen.serving.jobs.local_engine import LocalEngine
    return LocalEngine(model_repo, size=64), LocalEngine(model_repo, size=256)


def test_256_is_the_64_image_upsampled(engines, tiny_upsampler_onnx):
    small, large = (e.run(PROMPTS, SEEDS) for e in engines)
    assert large.shape == (3, 256, 256, 3) and large.dtype == np.uint8
    assert large.tobytes() == engines[1].run(PROMPTS, SEEDS).tobytes()  # deterministic
    down = area_down4(large)
    err = np.abs(down - small).mean(axis=(1, 2, 3))  # per image, uint8 levels
    # the tiny upsampler is bilinear + a small residual: its 256 image, area-downsampled,
    # is its own 64 image within a few levels, far closer than another seed's image
    others = np.abs(down - np.roll(small, 1, axis=0)).mean(axis=(1, 2, 3))
    assert err.max() < 8.0, err  # measured 4-6: bilinear-then-area softens pixel texture
    assert (err * 4 < others).all(), (err, others)
    # one image of a batch is the image alone (batch independence holds at 256 too)
    assert engines[1].run(PROMPTS[1:2], SEEDS[1:2]).tobytes() == large[1:2].tobytes()
    manifest = json.loads((tiny_upsampler_onnx / "manifest.json").read_text())
    info = engines[1].pipeline.info.to_json()
    assert info["upsampler"] == {"name": "tiny-up",
                                 "sha256": manifest["files"]["upsampler.onnx"]["sha256"]}
    assert "upsampler" not in engines[0].pipeline.info.to_json()


def test_local_engine_256_needs_a_repository_with_adgen_256(small_onnx):
    from adgen.serving.jobs.local_engine import LocalEngine, LocalEngineError
    with pytest.raises(LocalEngineError, match="adgen_256"):
        LocalEngine(small_onnx, size=256)


def _build(out, small_onnx, text_encoder_dir, **kw):
    from adgen.export.repo import build_repository
    return build_repository(out, model=small_onnx, text_encoder=text_encoder_dir,
                            progress=False, **kw)


def test_repo_build_exports_an_upsampler_checkpoint_once(small_onnx, text_encoder_dir,
                                                          tiny_upsampler, tmp_path,
                                                          monkeypatch):
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    repo = _build(tmp_path / "r1", small_onnx, text_encoder_dir, upsampler=tiny_upsampler)
    info = json.loads((repo / "adgen_repository.json").read_text())
    assert "adgen_256" in info["models"] and info["upsampler"]["name"] == "tiny-up"
    [cache] = (tmp_path / "artifacts" / "upsampler").iterdir()
    assert cache.name.startswith("tiny-up-")
    onnx = repo / "adgen_256" / "1" / "upsampler" / "upsampler.onnx"
    assert onnx.is_file() and (repo / "adgen_256" / "1" / "generator" / "generator.onnx").is_file()
    stamp = (cache / "upsampler.onnx").stat().st_mtime_ns
    repo2 = _build(tmp_path / "r2", small_onnx, text_encoder_dir, upsampler=tiny_upsampler)
    assert (cache / "upsampler.onnx").stat().st_mtime_ns == stamp  # exported once
    assert json.loads((repo2 / "adgen_repository.json").read_text())["upsampler"] == \
        info["upsampler"]


def test_no_release_upsampler_skips_adgen_256_with_one_log_line(small_onnx, text_encoder_dir,
                                                                 tmp_path, monkeypatch,
                                                                 caplog):
    import adgen.export.repo as R
    monkeypatch.setattr(R, "release_upsampler_dir", lambda: tmp_path / "absent")
    with caplog.at_level(logging.INFO, logger="adgen.export"):
        repo = _build(tmp_path / "r", small_onnx, text_encoder_dir)
    assert not (repo / "adgen_256").exists() and (repo / "adgen").is_dir()
    assert json.loads((repo / "adgen_repository.json").read_text())["upsampler"] is None
    # (the build also logs its served config: other lines are not about the upsampler)
    about = [r.getMessage() for r in caplog.records if "upsampler" in r.getMessage()
             or "adgen_256" in r.getMessage()]
    assert len(about) == 1 and "adgen_256 not built" in about[0]
    # --no-upsampler: nothing built, nothing said about it
    caplog.clear()
    _build(tmp_path / "r2", small_onnx, text_encoder_dir, upsampler=False)
    assert not [r for r in caplog.records if "upsampler" in r.getMessage()
                or "adgen_256" in r.getMessage()]


@pytest.mark.parametrize("kind", ["empty", "bad-weights", "bad-onnx", "no-manifest"])
def test_repo_build_with_a_corrupt_upsampler_is_one_line(kind, small_onnx, text_encoder_dir,
                                                         tiny_upsampler, tiny_upsampler_onnx,
                                                         tmp_path, monkeypatch, capsys):
    import shutil
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    bad = tmp_path / "bad-up"
    bad.mkdir()
    if kind == "bad-weights":
        shutil.copy(tiny_upsampler / "config.json", bad / "config.json")
        (bad / "upsampler.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")
    elif kind in ("bad-onnx", "no-manifest"):
        (bad / "upsampler.onnx").write_bytes(b"not an onnx model")
        if kind == "bad-onnx":
            shutil.copy(tiny_upsampler_onnx / "manifest.json", bad / "manifest.json")
    code = main(["repo", "build", "-o", str(tmp_path / "repo"), "--model", str(small_onnx),
                 "--text-encoder", str(text_encoder_dir), "--upsampler", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: ") and "\n" not in err, err
    assert "Traceback" not in err and str(bad) in err
    assert not (tmp_path / "repo").exists()


# ----------------------------------------------------------------------------- the job

def _generate(*args) -> int:
    return main(["generate", *map(str, args), "--no-progress"])


def _manifest(out):
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x]


@pytest.mark.parametrize("fmt", ["png", "webp", "jpeg"])
def test_generate_256_local_writes_resumes_and_records_the_upsampler(fmt, model_repo, tmp_path,
                                                                    capsys):
    from adgen.serving.jobs.images import read_image_meta, read_png
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\nblue car\n")
    out = tmp_path / "out"
    args = [prompts, "-o", out, "-n", "2", "--engine", "local", "--model", model_repo,
            "--size", "256", "--format", fmt, "--batch-size", "3"]
    if fmt != "png":
        args += ["--quality", "80"]
    assert _generate(*args) == 0, capsys.readouterr().err
    entries = _manifest(out)
    ext = {"png": "png", "webp": "webp", "jpeg": "jpg"}[fmt]
    assert len(entries) == 4
    for e in entries:
        assert e["size"] == 256 and e["format"] == fmt
        assert e["path"].endswith(f"-256px.{ext}") and (out / e["path"]).is_file()
        assert e["model"]["upsampler"]["name"] == "tiny-up"
        pixels, _ = read_png(out / e["path"])
        assert pixels.shape == (256, 256, 3)
        meta = read_image_meta(out / e["path"])
        adgen = json.loads(meta["adgen"])
        assert adgen["model"]["upsampler"] == e["model"]["upsampler"]
        assert adgen["seed"] == e["seed"] and str(e["seed"]) in meta["parameters"]
    stamps = {e["path"]: os.stat(out / e["path"]).st_mtime_ns for e in entries}
    capsys.readouterr()
    assert _generate(*args) == 0  # a rerun resumes: nothing generated, nothing rewritten
    assert "0 images generated, 4 already done" in capsys.readouterr().out
    assert len(_manifest(out)) == 4
    assert {p: os.stat(out / p).st_mtime_ns for p in stamps} == stamps
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["size"] == 256 and summary["config"]["format"] == fmt


def test_generate_64_then_256_in_one_folder_redoes_at_the_new_size(model_repo, tmp_path,
                                                                   capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    out = tmp_path / "out"
    base = [prompts, "-o", out, "--engine", "local", "--model", model_repo]
    assert _generate(*base) == 0
    assert _generate(*base, "--size", "256") == 0
    assert "1 images generated, 0 already done" in capsys.readouterr().out
    last = _manifest(out)[-1]
    assert last["size"] == 256 and last["path"].endswith("-256px.png")


@pytest.mark.parametrize("args, match", [
    (["--size", "128"], "size must be 64 or 256"),
    (["--format", "gif"], "unknown image format 'gif'"),
    (["--quality", "80"], "--quality applies to webp and jpeg only"),
    (["--format", "webp", "--quality", "101"], "quality must be in 1..100"),
    (["--format", "jpeg", "--quality", "0"], "quality must be in 1..100"),
])
def test_bad_size_format_quality_are_one_line(args, match, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")
    code = _generate(prompts, "-o", tmp_path / "out", "--engine", "local", "--model",
                     tmp_path, *args)
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.startswith("error: ") and "\n" not in err and match in err, err
    assert not (tmp_path / "out").exists()
