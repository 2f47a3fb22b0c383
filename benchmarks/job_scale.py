"""Jobs of any size: planning and resume time and peak memory, old vs streaming.

Usage:
  python -m benchmarks.job_scale                              # 10k, 100k, 1M, 10M lines
  python -m benchmarks.job_scale --sizes 10k,100k --resume-images 20000 --results-dir out/bench
  python -m benchmarks.job_scale --sizes 10k --baseline c5a77c9 --repeat 3   # resume: vs a commit

Side by side in one run, each in its own process (peak RSS = the child's ru_maxrss from the
OS, CPU = its user+sys seconds):
  plan      `adgen generate prompts.jsonl -o OUT -n 4 --dry-run` on a generated JSONL file
            (explicit ids, as `adgen expand` writes) of each size; also `--shard 0/16` on the
            largest. The pre-streaming code (extracted from git into a temp folder) runs
            the same command up to --old-max lines: it holds the whole plan in memory.
  resume    a synthetic finished job (manifest + one small file per image) rerun with the
            same command: the first rerun builds the index and proves each file's sha256,
            the second proves them by stat; images/s = images / process wall. --baseline
            COMMIT adds the stat-proven rerun of serving/ as of that commit (same index
            format), --repeat N runs it and the current one N times each, interleaved.
Timings are wall seconds of whatever else runs on the machine: the load average is
recorded beside each row, and lines per CPU-second is the load-independent figure.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import command_line, machine_info, md_table, write_results

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "0242cc2"  # the last commit before streaming jobs
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "10m": 10_000_000}


def make_prompts(path: Path, lines: int) -> None:
    """Deterministic JSONL prompts; written once and cut for smaller sizes."""
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as f:
        for lo in range(0, lines, 100_000):
            f.write("".join(f'{{"id": "p{i:08d}", "prompt": "a red apple number {i}, flat '
                            f'sticker style, teal background"}}\n'
                            for i in range(lo, min(lines, lo + 100_000))))


def head(src: Path, dst: Path, lines: int) -> None:
    with open(src, "rb") as f, open(dst, "wb") as g:
        for _, line in zip(range(lines), f):
            g.write(line)


def run_child(args: list[str], pythonpath: str) -> dict:
    """Wall, CPU and peak RSS of one `python -m adgen ...` process (`-m serving.cli` for a
    tree from before the `adgen` import root)."""
    env = {**os.environ, "PYTHONPATH": pythonpath}
    module = "adgen" if (Path(pythonpath) / "adgen" / "__main__.py").is_file() else "serving.cli"
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module, *args], env=env,
                            cwd=pythonpath,  # -m imports from the working folder first
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    cpu, rss = _rusage_delta()  # communicate() reaped it
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args[:2])} exited {proc.returncode}: "
                           f"{err.decode(errors='replace').strip().splitlines()[-1:]}")
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "peak_rss_mb": round(rss, 1),
            "load_1min": round(load, 2), "stdout": out.decode(errors="replace")}


_last = [0.0]


def _rusage_delta() -> tuple[float, float]:
    """CPU seconds of the child just reaped and its peak RSS (MB). ru_maxrss of
    RUSAGE_CHILDREN is the largest child so far, so children run in increasing order of
    size within each group, and each group is measured in a fresh helper process."""
    import resource
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = ru.ru_utime + ru.ru_stime
    delta, _last[0] = cpu - _last[0], cpu
    return delta, ru.ru_maxrss / 1024


def measure(args: list[str], pythonpath: str) -> dict:
    """run_child in a fresh helper process, so ru_maxrss is this child's alone."""
    code = ("import json,sys; from benchmarks.job_scale import run_child; "
            "print(json.dumps(run_child(json.loads(sys.argv[1]), sys.argv[2])))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args), pythonpath],
                       capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    return json.loads(r.stdout)


def old_tree(work: Path, commit: str = OLD_COMMIT, name: str = "old") -> Path | None:
    """The job code as it was at `commit` (before streaming by default), importable from the
    folder returned: `serving/` for commits before the `adgen` import root, else `adgen/`
    with serving/ and prompting/ placed inside it as the wheel lays them out."""
    dst = work / name
    try:
        top = subprocess.run(["git", "ls-tree", "--name-only", commit], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
        paths = [p for p in ("adgen", "serving", "prompting") if p in top]
        archive = subprocess.run(["git", "archive", commit, *paths], cwd=ROOT,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    dst.mkdir()
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    if (dst / "adgen").is_dir():
        for sub in ("serving", "prompting"):
            if (dst / sub).is_dir():
                (dst / sub).rename(dst / "adgen" / sub)
    return dst


def make_done_job(prompts: Path, out: Path, images: int, n: int) -> None:
    """A finished job as `adgen generate -n 4` leaves it: real PNGs for the contact sheet's
    candidates (the first 512 images), tiny stand-in files after them."""
    import numpy as np

    from adgen.serving.jobs.images import png_bytes
    from adgen.latents import derive_seed
    tile, made = png_bytes(np.zeros((8, 8, 3), dtype=np.uint8)), 0
    (out / "images").mkdir(parents=True)
    with open(prompts, encoding="utf-8") as f, open(out / "manifest.jsonl", "w") as m:
        for line, _ in zip(f, range(images // n)):
            rec = json.loads(line)
            folder = out / "images" / rec["id"]
            folder.mkdir()
            for k in range(n):
                seed = derive_seed(0, rec["id"], k)
                rel = f"images/{rec['id']}/{rec['id']}-{k}-s{seed}.png"
                data = tile if made < 512 else f"{rec['id']}-{k}".encode()
                made += 1
                (out / rel).write_bytes(data)
                m.write(json.dumps({"custom_id": f"{rec['id']}-{k}", "id": rec["id"], "k": k,
                                    "prompt": rec["prompt"], "seed": seed, "path": rel,
                                    "sha256": hashlib.sha256(data).hexdigest()}) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="10k,100k,1m,10m")
    ap.add_argument("--old-max", type=int, default=1_000_000, help="largest size for the old code")
    ap.add_argument("--resume-images", type=int, default=100_000)
    ap.add_argument("--results-dir", default=None)
    ap.add_argument("--note", default="", help="machine load to record beside the figures")
    ap.add_argument("--baseline", default=None,
                    help="a commit whose serving/ also reruns the finished job (side by side)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="stat-proven reruns per code, interleaved")
    a = ap.parse_args(argv)
    sizes = [(s, SIZES[s.lower()]) for s in a.sizes.split(",")]
    n = 4  # images per prompt
    work = Path(tempfile.mkdtemp(prefix="adgen-job-scale-"))
    rows, resume = [], []
    try:
        old = old_tree(work)
        baseline = old_tree(work, a.baseline, "baseline") if a.baseline else None
        if a.baseline and baseline is None:
            raise SystemExit(f"git archive {a.baseline} failed")
        start = measure(["generate", "--help"], str(ROOT))  # interpreter + imports alone
        start.pop("stdout")
        base = start["cpu_s"]
        biggest = work / "prompts-max.jsonl"
        t0 = time.perf_counter()
        most = max([lines for _, lines in sizes] + [a.resume_images // n])  # resume: n per line
        make_prompts(biggest, most)
        print(f"wrote {biggest.stat().st_size / 1e6:.0f} MB of prompts in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        for label, lines in sizes:
            f = work / f"prompts-{label}.jsonl"
            if lines == most:
                f = biggest
            else:
                head(biggest, f, lines)
            cmd = ["generate", str(f), "-o", str(work / "o"), "-n", "4", "--dry-run"]
            variants = [("streaming", cmd, str(ROOT))]
            if old and lines <= a.old_max:
                variants.append(("before (in memory)", cmd, str(old)))
            if lines == max(m for _, m in sizes):
                variants.append(("streaming --shard 0/16", cmd + ["--shard", "0/16"], str(ROOT)))
            for name, args, path in variants:
                r = measure(args, path)
                plan = json.loads(r.pop("stdout"))
                row = {"lines": lines, "code": name, **r, "images": plan["images"],
                       "lines_per_s": round(lines / r["wall_s"]),
                       "lines_per_cpu_s": round(lines / max(r["cpu_s"] - base, 1e-3))}
                rows.append(row)
                print(json.dumps(row), flush=True)
        # resume: a finished job of --resume-images images
        out = work / "done"
        t0 = time.perf_counter()
        make_done_job(biggest, out, a.resume_images, n)
        print(f"made a finished job of {a.resume_images} images in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        pf = work / "prompts-resume.jsonl"
        head(biggest, pf, a.resume_images // n)
        # the same rerun on the job's first tenth: what the two have in common (interpreter,
        # imports, index open, summary, contact sheet) cancels in the marginal skip rate
        small = a.resume_images // 10
        pf_small = work / "prompts-resume-small.jsonl"
        head(biggest, pf_small, small // n)
        full = (pf, a.resume_images)
        runs = [("streaming, 1st rerun (index built, sha256 of every file)", str(ROOT), full)]
        for _ in range(a.repeat):
            if baseline:
                runs.append((f"streaming at {a.baseline}, rerun (stat quick check)",
                             str(baseline), full))
            runs.append(("streaming, 2nd rerun (stat quick check)", str(ROOT), full))
            runs.append((f"streaming, 2nd rerun of the first {small:,} images", str(ROOT),
                         (pf_small, small)))
        if old:
            runs.append(("before (manifest dict, sha256 of every file)", str(old), full))
        for name, path, (prompts, images) in runs:
            r = measure(["generate", str(prompts), "-o", str(out), "-n", "4", "--no-progress"],
                        path)
            r.pop("stdout")
            s = json.loads((out / "summary.json").read_text())
            row = {"code": name, "images": images, **r,
                   "skipped": s["images_skipped_resume"],
                   "images_per_s": round(s["images_skipped_resume"] / r["wall_s"]),
                   "images_per_cpu_s": round(s["images_skipped_resume"]
                                             / max(r["cpu_s"] - base, 1e-3))}
            resume.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {"command": command_line("job_scale", argv), "machine": machine_info(),
               "note": a.note, "baseline": a.baseline, "startup": start, "plan": rows,
               "resume": resume, "resume_vs_baseline": versus(resume, a.baseline),
               "resume_marginal": marginal(resume),
               "bars": {"peak_rss_mb": 300, "plan_lines_per_s": 200_000,
                        "resume_images_per_s": 100_000}}
    write_results("job_scale", payload, markdown(payload), a.results_dir)
    return 0


def marginal(resume: list[dict]) -> dict | None:
    """The skip rate with the fixed costs cancelled: (images of the full rerun - images of the
    first-tenth rerun) / (median wall of the one - median wall of the other)."""
    import statistics
    full = [r for r in resume if r["code"] == "streaming, 2nd rerun (stat quick check)"]
    part = [r for r in resume if r["code"].startswith("streaming, 2nd rerun of the first")]
    if not full or not part:
        return None
    wf, wp = (statistics.median(r["wall_s"] for r in rs) for rs in (full, part))
    cf, cp = (statistics.median(r["cpu_s"] for r in rs) for rs in (full, part))
    d = full[0]["skipped"] - part[0]["skipped"]
    return {"images": d, "runs_each": len(full), "wall_s": round(wf - wp, 3),
            "images_per_s": round(d / max(wf - wp, 1e-3)),
            "images_per_cpu_s": round(d / max(cf - cp, 1e-3))}


def versus(resume: list[dict], baseline: str | None) -> dict | None:
    """Median images/s of the stat-proven reruns, this code and the baseline's."""
    if not baseline:
        return None
    import statistics

    mine = "streaming, 2nd rerun (stat quick check)"

    def median(prefix, key):
        return statistics.median(r[key] for r in resume if r["code"].startswith(prefix))
    out = {"baseline": baseline, "runs_each": sum(r["code"] == mine for r in resume)}
    for key in ("images_per_s", "images_per_cpu_s"):
        now, then = median(mine, key), median(f"streaming at {baseline}", key)
        out.update({key: now, f"baseline_{key}": then, f"ratio_{key}": round(now / then, 3)})
    return out


def _runs_table(rows: list[dict], unit: str, per_s: str, per_cpu_s: str) -> list[str]:
    """One measured process per line: how many `unit`s, which code, wall and CPU seconds,
    the rate per each, peak RSS and the machine's load."""
    return md_table([unit, "code", "wall s", per_s, "CPU s", per_cpu_s, "peak RSS MB",
                     "load (1 min)"],
                    [[f"{r[unit]:,}", r["code"], r["wall_s"], f"{r[unit + '_per_s']:,}",
                      r["cpu_s"], f"{r[unit + '_per_cpu_s']:,}", r["peak_rss_mb"], r["load_1min"]]
                     for r in rows], "r-rrrrrr")


VERSUS = ("Stat-proven rerun, median of {runs_each} each, interleaved: {images_per_s:,} "
          "images/s with this code vs {baseline_images_per_s:,} at {baseline} "
          "({ratio_images_per_s}x wall); {images_per_cpu_s:,} vs "
          "{baseline_images_per_cpu_s:,} per CPU-second ({ratio_images_per_cpu_s}x).")


def markdown(p: dict) -> str:
    md = [f"# Jobs of any size: planning and resume ({p['machine']['name']})", "",
          f"Command: `{p['command']}`  ", f"Machine load: {p['note'] or 'not recorded'}", "",
          "Bars: peak RSS <= 300 MB at every size; planning >= 200k lines/s; "
          "resume skips >= 100k images/s. Per CPU-second figures are net of the "
          f"interpreter's start-up ({p['startup']['cpu_s']} CPU s, {p['startup']['peak_rss_mb']} "
          "MB: `adgen generate --help`); wall figures include it and the machine's load.", "",
          "## Planning: `adgen generate prompts.jsonl -n 4 --dry-run`", ""]
    md += _runs_table(p["plan"], "lines", "lines/s", "lines/CPU-s (net)")
    md += ["", "## Resume: rerun of a finished job (nothing left to do)", ""]
    md += _runs_table(p["resume"], "images", "images skipped/s", "skipped/CPU-s (net)")
    m = p.get("resume_marginal")
    if m:
        md += ["", f"Marginal skip rate (median of {m['runs_each']} each, fixed costs cancelled): "
               f"{m['images']:,} more images skipped in {m['wall_s']} s more wall = "
               f"**{m['images_per_s']:,} images/s** ({m['images_per_cpu_s']:,} per CPU-second)."]
    v = p.get("resume_vs_baseline")
    if v:
        md += ["", VERSUS.format(**v)]
    return "\n".join(md)


if __name__ == "__main__":
    sys.exit(main())
