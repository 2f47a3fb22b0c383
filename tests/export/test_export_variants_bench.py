"""benchmarks/export_variants.py --quick: runs end to end and records figures in manifests."""
from __future__ import annotations

import json


def test_quick_benchmark_records_speed_and_pending_decision(film_ckpt, tiny_dataset,
                                                            text_encoder_dir, tmp_path, capsys):
    from benchmarks.export_variants import main
    out = tmp_path / "exports"
    assert main(["--model", str(film_ckpt), "--quick", "--out", str(out),
                 "--calibration-data", str(tiny_dataset)]) == 0
    printed = capsys.readouterr().out
    assert "batch 4: pytorch-eager-fp32" in printed
    for precision in ("fp32", "int8"):
        m = json.loads((out / precision / "manifest.json").read_text())
        assert m["precision"] == precision
        speed = m["measurements"]["speed"]
        assert set(speed["p50_ms"]) == {"1", "4"} and all(v > 0 for v in speed["p50_ms"].values())
        assert m["measurements"]["quality"]["status"] == "pending"
    decision = json.loads((out / "int8" / "manifest.json").read_text())["measurements"]["decision"]
    assert decision["keep"] is None and "not measured" in decision["reason"]
    assert set(decision["faster_at_batches"]) == {"1", "4"}  # no batch >= 64 in a quick run
