"""One TensorRT story: the supported range, the deployed Triton's TensorRT, the engine cache key.

export/trt_versions.py holds the numbers; pyproject.toml, deploy/k8s/triton.yaml and
deploy/README.md are checked against it here, so a version bump in one place alone fails.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from adgen.export import trt_versions as V
ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_tensorrt_extra_is_the_supported_range():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    (spec,) = [r for r in extras["tensorrt"] if r.startswith("tensorrt")]
    (lo_major, _), (hi_major, _) = V.SUPPORTED_TENSORRT
    assert spec == f"tensorrt>={lo_major},<{hi_major}"
    assert any(r.startswith("onnx") for r in extras["tensorrt"])  # FP16 conversion on 11


def test_triton_manifest_and_deploy_readme_name_one_tensorrt():
    import yaml
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "k8s" / "triton.yaml").read_text()))
    images = [c["image"] for d in docs if d and d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]]
    assert images and all(i.endswith(f"/tritonserver:{V.TRITON_IMAGE_TAG}") for i in images)
    manifest = (ROOT / "deploy" / "k8s" / "triton.yaml").read_text()
    readme = (ROOT / "deploy" / "README.md").read_text()
    for text in (manifest, readme):
        named = set(re.findall(r"TensorRT (\d+\.\d+)", text))
        assert named == {V.TRITON_TENSORRT}, named
        assert f"tensorrt=={V.TRITON_TENSORRT}.*" in text
    release = V.TRITON_IMAGE_TAG.split("-")[0]
    assert f"Triton {release} container" in readme


def test_deployed_tensorrt_is_inside_the_supported_range():
    assert V.unsupported_reason(V.TRITON_TENSORRT + ".0") is None
    assert V.deploy_mismatch(V.TRITON_TENSORRT + ".0.18") is None
    assert "will not load in the Triton" in V.deploy_mismatch("11.1.0")


@pytest.mark.parametrize("text,want", [("10.5.0.18", (10, 5)), ("11.0.0", (11, 0)),
                                       ("10.13.3.9", (10, 13)), ("8.6.1", (8, 6)),
                                       ("garbage", (0, 0)), ("11.1.0.10-mock", (11, 1))])
def test_parse_version(text, want):
    assert V.parse_version(text) == want


def test_engine_cache_key_changes_with_onnx_tensorrt_and_gpu():
    base = V.engine_cache_key("a" * 64, "10.5.0.18", "9.0")
    assert base.startswith("a" * 12 + "-trt10.5.0.18-sm90-fp16-")
    others = {V.engine_cache_key("b" * 64, "10.5.0.18", "9.0"),
              V.engine_cache_key("a" * 64, "10.6.0.26", "9.0"),
              V.engine_cache_key("a" * 64, "11.1.0", "9.0"),
              V.engine_cache_key("a" * 64, "10.5.0.18", "8.9"),
              V.engine_cache_key("a" * 64, "10.5.0.18", None),
              V.engine_cache_key("a" * 64, "10.5.0.18", "9.0", fp16=False)}
    assert base not in others and len(others) == 6
    assert V.engine_cache_key("a" * 64, "10.5.0.18", "9.0") == base  # stable
    assert "/" not in base and " " not in base


def test_mock_repo_engine_cache_rebuilds_for_another_tensorrt_or_gpu(
        mock_trt, film_onnx, tmp_path, monkeypatch):
    from adgen.export import repo_native as RN
    from adgen.export import tensorrt as ET
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setattr(V, "compute_capability", lambda: "9.0")
    onnx_path = film_onnx / "generator.onnx"
    first = RN.cached_engine(onnx_path, "gen", progress=False)
    assert first.parent.name.startswith("gen-") and "-sm90-" in first.parent.name
    mock_trt.cache_in = "untouched"
    assert RN.cached_engine(onnx_path, "gen", progress=False) == first  # reused, not rebuilt
    assert mock_trt.cache_in == "untouched"
    monkeypatch.setattr(V, "compute_capability", lambda: "8.9")  # another GPU model
    other_gpu = RN.cached_engine(onnx_path, "gen", progress=False)
    sys.modules["tensorrt"].__version__ = "10.6.0.26"  # another TensorRT
    other_trt = RN.cached_engine(onnx_path, "gen", progress=False)
    assert len({first, other_gpu, other_trt}) == 3
    assert all(p.is_file() for p in (first, other_gpu, other_trt))
    assert ET.PLAN_NAME == first.name


def test_mock_repo_build_warns_when_tensorrt_differs_from_triton_image(
        mock_trt11, film_onnx, tmp_path, monkeypatch, caplog):
    from adgen.export import repo_native as RN
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    mock_trt11.onnx = film_onnx / "generator.onnx"
    with caplog.at_level("WARNING", logger="adgen.export"):
        RN.cached_engine(film_onnx / "generator.onnx", "gen", progress=False)
    assert f"TensorRT {V.TRITON_TENSORRT})" in caplog.text and "11.1.0.10-mock" in caplog.text
