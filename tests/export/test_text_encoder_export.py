"""export_text_encoder: parity vs sentence-transformers and the INT8 keep-or-drop rule."""
from __future__ import annotations

import json

import numpy as np

from adgen.export.precision import int8_units
from adgen.export.text_encoder import export_text_encoder
from adgen.export.text_encoder_onnx import INT8_MIN_COSINE, INT8_NAME, parity_texts


def test_export_records_parity_and_int8_decision(tmp_path, capfd):
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_text_encoder(tmp_path / "te", int8=True)
    # a quiet first run: no tracer warnings, no weight-loading bars from the libraries
    assert caught == []
    printed = capfd.readouterr()
    assert "Loading weights" not in printed.err + printed.out
    assert "Warning" not in printed.err + printed.out
    m = json.loads((out / "manifest.json").read_text())
    assert m["parity"]["min_cosine"] >= 0.9999 and m["parity"]["texts"] == len(parity_texts())
    v = m["variants"]["int8"]
    assert v["threshold"] == INT8_MIN_COSINE
    # kept or not depends on this CPU's int8 kernels (saturating int16 without VNNI): the
    # rule holds either way, and the message names the case
    case = (f"int8 copy {'kept' if v['kept'] else 'dropped'} at min cosine "
            f"{v['min_cosine']:.4f} on {', '.join(int8_units()) or 'a CPU without int8 units'}")
    assert v["kept"] == (v["min_cosine"] >= INT8_MIN_COSINE), case
    assert (out / INT8_NAME).is_file() == v["kept"]
    assert v["size_bytes"] < v["fp32_size_bytes"]
    assert 0 < v["min_cosine"] <= v["mean_cosine"] <= 1.0 + 1e-9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["te"]  # no temp folders left
    # Asking again reuses the export (int8 already tried), nothing is rewritten.
    before = (out / "model.onnx").stat().st_mtime_ns
    assert export_text_encoder(out, int8=True) == out
    assert (out / "model.onnx").stat().st_mtime_ns == before


def test_parity_texts_cover_captions_briefs_and_edge_cases():
    texts = parity_texts()
    assert "" in texts and any(len(t) > 500 for t in texts)
    assert any("background" in t for t in texts) and any(not t.isascii() for t in texts)
    assert len(set(texts)) > 0.9 * len(texts)
    assert texts == parity_texts()  # deterministic
    assert np.mean([len(t) for t in texts]) > 10
