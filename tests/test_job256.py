"""benchmarks/job256.py without a server: the interleaved PNG pairs and the served precision."""
from __future__ import annotations

import json

from benchmarks.job256 import Job256Config, markdown, png_pair_plan, served_precision
from benchmarks.prompt_pool import PromptPool


def test_png_pairs_share_their_prompts_alternate_the_order_and_never_reuse_prompts(tmp_path):
    cfg = Job256Config(prompts=3, pairs=3)
    plan = png_pair_plan(cfg, PromptPool(), tmp_path)
    assert [(size, fmt) for _, _, size, fmt in plan] == [
        (64, "png"), (256, "png"), (256, "png"), (64, "png"), (64, "png"), (256, "png")]
    files = [f for _, f, _, _ in plan]
    assert files[0] == files[1] and files[2] == files[3] and files[4] == files[5]
    prompts = [f.read_text().split("\n")[:-1] for f in files[::2]]
    assert all(len(p) == 3 for p in prompts)
    assert len({line for p in prompts for line in p}) == 9  # fresh prompts in every pair


def test_served_precision_reads_the_upsampler_manifest(tmp_path):
    folder = tmp_path / "adgen_256" / "1" / "upsampler"
    assert served_precision(tmp_path) == "unknown"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"kind": "adgen-upsampler-onnx"}))
    assert served_precision(tmp_path) == "fp32"  # an export without the key is fp32
    (folder / "manifest.json").write_text(json.dumps({"precision": "int8"}))
    assert served_precision(tmp_path) == "int8"
    (folder / "manifest.json").write_text("{not json")
    assert served_precision(tmp_path) == "unknown"


def test_markdown_states_the_ratio_under_its_key():
    row = {"images_per_s": 100.0, "bytes_per_image": 1.0, "client_cpu_ms_per_image": 1.0,
           "server_cpu_ms_per_image": 1.0, "metrics": {"compute_infer_us_per_request": 1e3}}
    verdict = {"images_per_s": 100.0, "met": True, "cpu_budget_ms_per_image_at_bar": 40.0}
    p = {"machine": {"name": "m", "cpus": 2}, "model": "release", "upsampler": "u",
         "upsampler_precision": "int8", "config": {"pairs": 2, "prompts": 1, "n": 4,
                                                    "rounds": 1, "batch": 8, "concurrency": 2},
         "images_per_job": 4, "images_per_format_job": 4, "load_average_at_end": [1, 1, 1],
         "seconds": {"total": 90.0}, "jobs": {"64 px png": [{**row, "images_per_s": 250.0}],
                                              "256 px png": [row]},
         "median_images_per_s": {"64 px png": 250.0, "256 px png": 100.0,
                                 "triton client alone 256 px": 120.0},
         "ratios": {"generate_256_png_vs_64_png": 0.4, "generate_256_png_vs_64_png_cpu": 0.5},
         "cpu_ms_per_image": {"64 px png": 10.0, "256 px png": 20.0},
         "png_pair_ratios": [0.41, 0.39],
         "bar": 50, "verdict": {"png": verdict},
         "inprocess_256": {"images": 4, "batch": 8, "images_per_s": 1.0,
                           "stages_ms_per_image": {}}, "encode": {}}
    text = markdown(p, "cmd")
    assert "(`generate_256_png_vs_64_png`): 0.40×" in text and "0.41, 0.39" in text
    assert "(int8)" in text and "`generate_256_png_vs_64_png_cpu`: 10.0 vs 20.0 ms" in text
