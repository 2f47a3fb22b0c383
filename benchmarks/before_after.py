"""A refactor changes no byte and no speed: this checkout against an older commit, one run.

Usage:
  python -m benchmarks.before_after --baseline fc9da21            # 2,000 images, 3 rounds
  python -m benchmarks.before_after --baseline HEAD~5 --prompts 100 --rounds 2

Both trees (the baseline extracted with `git archive` into a temp folder, run with its own
import layout: `python -m serving.cli` before the `adgen` import root, `python -m adgen`
after) build an fp32 model repository of the release model and run the same `adgen generate
--engine local` job (fresh prompts, n=4) into their own folders, alternating rounds. Reported:
whether every image's pixels (manifest `pixels_sha256`) are identical between the trees, and
images/s of each job (process wall, interpreter start included) with the median ratio.
Writes <results>/<machine>/before_after.{json,md}.
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT, command_line, md_table, part_parser, show, write_part


def extract(commit: str, dst: Path) -> str:
    """The tree at `commit` in dst; returns the module that runs its CLI."""
    archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True,
                             check=True).stdout
    dst.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    if (dst / "adgen" / "__main__.py").is_file():  # package-dir layout: assemble it as a wheel does
        for sub in ("serving", "prompting", "training", "export", "triton_models", "models",
                    "examples"):
            if (dst / sub).is_dir():
                (dst / sub).rename(dst / "adgen" / sub)
        return "adgen"
    return "serving.cli"


def has_precision_choice(tree: Path) -> bool:
    return any((tree / p).is_file() for p in ("export/precision.py",
                                              "adgen/export/precision.py"))


def repo_of(work: Path, name: str) -> Path:
    return work / f"repo-{name.replace(' ', '-')}"


def cli(tree: Path, module: str, args: list[str], artifacts: Path) -> float:
    """Runs the tree's CLI (its own code first on the path, its own exports in `artifacts`:
    each tree exports the text encoder and the generator itself); returns wall seconds."""
    env = {**os.environ, "PYTHONPATH": str(tree), "TQDM_DISABLE": "1",
           "ADGEN_ARTIFACTS": str(artifacts)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args[:2])} exited {proc.returncode}: "
                           f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    return time.perf_counter() - t0


def pixels(out: Path) -> dict[str, str]:
    return {e["custom_id"]: e["pixels_sha256"] for e in
            map(json.loads, (out / "manifest.jsonl").read_text().splitlines())}


def run(baseline: str, prompts: int, rounds: int, log=print) -> dict:
    from benchmarks.prompt_pool import PromptPool
    work = Path(tempfile.mkdtemp(prefix="adgen-before-after-"))
    try:
        trees = {"baseline": (work / "baseline", extract(baseline, work / "baseline")),
                 "checkout": (ROOT, "adgen")}
        for name, (tree, module) in trees.items():
            log(f"{name}: adgen repo build (fp32)")
            # trees from before the served-precision choice always build fp32
            extra = ["--precision", "fp32"] if has_precision_choice(tree) else []
            cli(tree, module, ["repo", "build", "-o", str(repo_of(work, name)),
                               "--no-upsampler", "--force", *extra], work / f"artifacts-{name}")
        pool, rows, same = PromptPool(), [], True
        for r in range(rounds):
            prompt_file = work / f"prompts-{r}.txt"
            prompt_file.write_text("\n".join(pool.take(prompts)) + "\n")
            outs = {}
            for name in (trees if r % 2 == 0 else list(reversed(trees))):
                tree, module = trees[name]
                repo = repo_of(work, name)
                out = outs[name] = work / f"out-{r}-{name.replace(' ', '-')}"
                log(f"round {r + 1}: {name} generate --engine local")
                wall = cli(tree, module, ["generate", str(prompt_file), "-o", str(out), "-n",
                                          "4", "--engine", "local", "--model", str(repo),
                                          "--no-progress"], work / f"artifacts-{name}")
                rows.append({"tree": name, "round": r, "images": prompts * 4, "wall_s": wall,
                             "images_per_s": prompts * 4 / wall})
            a, b = (pixels(o) for o in outs.values())
            same = same and a == b and len(a) == prompts * 4
        med = {n: statistics.median(r["images_per_s"] for r in rows if r["tree"] == n)
               for n in trees}
        return {"baseline": baseline, "prompts": prompts, "rounds": rounds, "rows": rows,
                "pixels_identical": same, "median_images_per_s": med,
                "ratio": med["checkout"] / med["baseline"],
                "load_average_at_end": list(os.getloadavg())}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def markdown(p: dict, command: str) -> str:
    m = p["median_images_per_s"]
    lines = [f"# Before / after: this checkout vs {p['baseline']}", "",
             f"Command: `{command}`  ",
             f"Load average at the end: {p['load_average_at_end'][0]:.2f}.", "",
             f"Every image identical (pixels sha256, {p['prompts'] * 4} images a round, "
             f"{p['rounds']} rounds): **{'yes' if p['pixels_identical'] else 'NO'}**.", ""]
    lines += md_table(["tree", "round", "images", "wall s", "images/s"],
                      [[r["tree"], r["round"] + 1, r["images"], f"{r['wall_s']:.2f}",
                        f"{r['images_per_s']:.1f}"] for r in p["rows"]], "-rrrr")
    lines += ["", f"Median images/s: baseline {m['baseline']:.1f}, this checkout "
              f"{m['checkout']:.1f} ({p['ratio']:.3f}×)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = part_parser(__doc__)
    ap.add_argument("--baseline", required=True, help="commit to compare with")
    ap.add_argument("--prompts", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    payload = run(a.baseline, a.prompts, a.rounds)
    path = write_part("before_after", payload, command_line("before_after", argv),
                      a.results_dir, markdown)
    return show(path)


if __name__ == "__main__":
    sys.exit(main())
