"""export/precision.py: the keep-the-picture rule and the per-host choice of precision."""
from __future__ import annotations

import json

import pytest

from adgen.errors import ExportError
from adgen.export.precision import (KEEP_RULE, choose_precision, int8_units, keep_decision,
                                    keeps_picture)
from adgen.serving.runtime.providers import CPU_FLAGS_ENV, cpu_flags, cpu_model

FP32 = {"r_precision": 0.971, "identity_top1": 0.999}
VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def test_rule_keeps_a_variant_within_every_bound():
    d = keeps_picture(FP32, {"r_precision": 0.962, "identity_top1": 0.990,
                             "mean_abs_levels": 1.99})
    assert d["keep"] and "keeps the picture" in d["reason"]


@pytest.mark.parametrize("variant, failing", [
    ({"r_precision": 0.958, "identity_top1": 0.999, "mean_abs_levels": 1.0}, "r_precision"),
    ({"r_precision": 0.971, "identity_top1": 0.985, "mean_abs_levels": 1.0}, "identity_top1"),
    ({"r_precision": 0.971, "identity_top1": 0.999, "mean_abs_levels": 2.3}, "mean |Δ| 2.30"),
])
def test_rule_refuses_a_variant_outside_any_bound(variant, failing):
    d = keeps_picture(FP32, variant)
    assert not d["keep"] and failing in d["reason"]


def test_decision_needs_speed_at_every_served_batch_and_the_picture():
    good = {"r_precision": 0.970, "identity_top1": 0.999, "mean_abs_levels": 1.5}
    d = keep_decision(FP32, good, {"64": 10.0, "256": 40.0}, {"64": 6.0, "256": 30.0})
    assert d["keep"] is True and d["rule"] == KEEP_RULE
    d = keep_decision(FP32, good, {"64": 10.0, "256": 40.0}, {"64": 6.0, "256": 41.0})
    assert d["keep"] is False and d["faster_at_batches"] == {"64": True, "256": False}
    d = keep_decision(FP32, {**good, "mean_abs_levels": 3.0}, {"64": 10.0}, {"64": 6.0})
    assert d["keep"] is False and "mean |Δ| 3.00" in d["reason"]
    assert keep_decision(None, None, {"64": 10.0}, {"64": 6.0})["keep"] is None


def test_cpu_flags_and_int8_units_read_cpuinfo():
    text = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512_vnni amx_int8 amx_tile\n\n"
    flags = cpu_flags(text)
    assert "avx512_vnni" in flags and "avx2" in flags
    assert int8_units(flags) == ["amx_int8", "avx512_vnni"]
    assert int8_units(cpu_flags("processor : 0\n")) == []
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert cpu_model("processor : 0\n") == "unknown CPU"


ZEN3 = ("processor\t: 0\ncpu family\t: 25\nmodel\t\t: 1\nmodel name\t: AMD EPYC 7B13\n"
        "flags\t\t: fpu sse4_2 avx fma avx2\n")
SPR = ("processor\t: 0\ncpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) "
       "Platinum 8481C\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile "
       "amx_int8 avx_vnni\n")


def test_the_run_header_names_the_cpu_its_features_and_the_cases():
    from tests.conftest import host_cpu_line
    zen3 = host_cpu_line(ZEN3)
    assert zen3.startswith("cpu: AMD EPYC 7B13 (family 25 model 1), ")
    assert "AVX2 yes, AVX512-VNNI no, AVX-VNNI no, AVX512-BF16 no, AMX no" in zen3
    assert "int8: 7-bit weights" in zen3 and "bf16 training: off" in zen3
    spr = host_cpu_line(SPR)
    assert "AVX512-VNNI yes, AVX-VNNI yes, AVX512-BF16 yes, AMX yes" in spr
    assert "int8: 8-bit weights" in spr and "bf16 training: native" in spr


def test_cpu_flags_setting_stands_for_another_cpu(monkeypatch, tmp_path):
    """ADGEN_CPU_FLAGS replaces this CPU's list: here a Zen 3 (AVX2, no VNNI, no BF16)."""
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2, fma")
    assert cpu_flags() == AVX2 and int8_units() == []
    c = choose_precision("auto", _model(tmp_path, KEEP), "abc")  # flags from the setting
    assert c.precision == "fp32" and "no int8 dot-product units" in c.reason
    monkeypatch.setenv(CPU_FLAGS_ENV, "avx2 avx512_vnni")
    assert choose_precision("auto", _model(tmp_path / "b", KEEP), "abc").precision == "int8"
    monkeypatch.setenv(CPU_FLAGS_ENV, "")
    assert cpu_flags() == frozenset()


def _model(tmp_path, decision: dict | None, sha="abc", onnx=True, reduce_range=None):
    """A checkpoint folder shipping an int8 export folder with `decision` recorded (and
    quantization.reduce_range when given)."""
    model = tmp_path / "model"
    variant = model / "int8"
    variant.mkdir(parents=True)
    if onnx:
        (variant / "generator.onnx").write_bytes(b"stand-in")
    manifest = {"checkpoint": {"sha256": sha}}
    if reduce_range is not None:
        manifest["quantization"] = {"reduce_range": reduce_range}
    if decision is not None:
        manifest["measurements"] = {"decision": decision}
    (variant / "manifest.json").write_text(json.dumps(manifest))
    return model


KEEP = {"keep": True, "rule": KEEP_RULE, "reason": "keeps the picture: (figures)"}


def test_auto_serves_int8_only_where_it_kept_the_picture_and_the_cpu_has_int8_units(tmp_path):
    model = _model(tmp_path, KEEP)
    c = choose_precision("auto", model, "abc", flags=VNNI)
    assert c.precision == "int8" and c.folder == model / "int8" and "avx512_vnni" in c.reason
    c = choose_precision("auto", model, "abc", flags=AVX2)
    assert c.precision == "fp32" and "no int8 dot-product units" in c.reason


@pytest.mark.parametrize("decision, sha, onnx, why", [
    ({**KEEP, "keep": False, "reason": "changes the picture: x"}, "abc", True, "opt-in"),
    ({"keep": True, "reason": "faster and within 0.02"}, "abc", True, "opt-in"),  # older rule
    (None, "abc", True, "not measured"),
    (KEEP, "other", True, "other weights"),
    (KEEP, "abc", False, "no int8 export"),
])
def test_auto_falls_back_to_fp32_with_its_reason(tmp_path, decision, sha, onnx, why):
    c = choose_precision("auto", _model(tmp_path, decision, sha, onnx), "abc", flags=VNNI)
    assert c.precision == "fp32" and c.folder is None and why in c.reason


def test_explicit_choices(tmp_path):
    model = _model(tmp_path, {**KEEP, "keep": False, "reason": "changes the picture: y"})
    assert choose_precision("fp32", model, "abc", flags=VNNI).precision == "fp32"
    c = choose_precision("int8", model, "abc", flags=AVX2)  # opt-in: served, drift stated
    assert c.precision == "int8" and "changes the picture: y" in c.reason
    with pytest.raises(ExportError, match="other weights"):
        choose_precision("int8", model, "zzz")
    with pytest.raises(ExportError, match="no int8 export"):
        choose_precision("int8", tmp_path / "nothing", "abc")
    with pytest.raises(ExportError, match="unknown precision"):
        choose_precision("bf16", model, "abc")


@pytest.mark.parametrize("reduce_range, said", [
    (False, "saturate on the export's 8-bit weights"), (None, "saturate"),
    (True, "7-bit weights compute as measured")])
def test_forced_int8_without_int8_units_says_whether_the_export_saturates(
        tmp_path, reduce_range, said):
    model = _model(tmp_path, KEEP, reduce_range=reduce_range)
    c = choose_precision("int8", model, "abc", flags=AVX2)
    assert c.precision == "int8" and "no int8 dot-product units" in c.reason and said in c.reason
    assert "dot-product" not in choose_precision("int8", model, "abc", flags=VNNI).reason


def test_a_damaged_variant_manifest_means_fp32_and_a_clear_error_when_forced(tmp_path):
    model = _model(tmp_path, KEEP)
    (model / "int8" / "manifest.json").write_text('{"checkpoint": {"sha256": "abc"')  # cut
    c = choose_precision("auto", model, "abc", flags=VNNI)
    assert c.precision == "fp32" and "manifest.json is missing or unreadable" in c.reason
    with pytest.raises(ExportError, match="missing or unreadable"):
        choose_precision("int8", model, "abc", flags=VNNI)
