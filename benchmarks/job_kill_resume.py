"""A real job killed in the middle and resumed: every image exactly once, at scale.

Usage:
  python -m benchmarks.job_kill_resume                        # 50,000 prompts x 4 = 200k images
  python -m benchmarks.job_kill_resume --prompts 500 --kill-at 0.5 --results-dir 2cpu-trial

One local Triton (the release model, fused `adgen`) serves two `adgen generate` processes
run one after the other on the same JSONL prompt file and output folder:
  run 1   SIGKILLed once --kill-at of the images are in the manifest;
  run 2   the same command: skips what is done, generates the rest, exits 0.
Then the output is checked from the files alone: manifest custom_ids unique and exactly
prompts x n, one image file per id, every file's sha256 equal to its manifest line, no
temp files left. Peak RSS of each client process comes from the OS (ru_maxrss).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import command_line, machine_info, write_results


def make_prompts(path: Path, lines: int) -> None:
    from benchmarks.prompt_pool import PromptPool
    pool = PromptPool()
    with open(path, "w", encoding="utf-8") as f:
        for i, prompt in enumerate(pool.take(lines)):
            f.write(json.dumps({"id": f"p{i:07d}", "prompt": prompt}) + "\n")


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def run_client(args: list[str], kill_at_lines: int | None, manifest: Path,
               log: Path) -> dict:
    """One `adgen generate` process; SIGKILL once the manifest has kill_at_lines lines.

    Its own CPU and peak RSS come from wait4() on its pid."""
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-m", "adgen", "generate", *args],
                                stdout=subprocess.DEVNULL, stderr=err)
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        time.sleep(0.5)
        if not killed and kill_at_lines is not None and count_lines(manifest) >= kill_at_lines:
            proc.send_signal(signal.SIGKILL)
            killed = True
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    return {"wall_s": round(wall, 2), "exit_code": proc.returncode, "killed": killed,
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "manifest_lines_after": count_lines(manifest),
            "stderr_tail": log.read_text(encoding="utf-8").strip().splitlines()[-1:]}


def verify(out: Path, expected: int) -> dict:
    """Checks the finished folder from its files alone."""
    ids, bad_sha, missing = [], 0, 0
    with open(out / "manifest.jsonl", encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if "custom_id" not in rec or "path" not in rec:
                continue  # creatives or other line kinds: none in this job
            ids.append(rec["custom_id"])
            path = out / rec["path"]
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                missing += 1
                continue
            if hashlib.sha256(data).hexdigest() != rec["sha256"]:
                bad_sha += 1
    files = sum(len(fs) for _, _, fs in os.walk(out / "images"))
    temps = sum(1 for p in (out / "images").rglob("*") if p.name.startswith("."))
    return {"expected": expected, "manifest_images": len(ids), "unique_ids": len(set(ids)),
            "image_files": files, "missing_files": missing, "sha256_mismatches": bad_sha,
            "temp_files_left": temps,
            "exactly_once": len(ids) == len(set(ids)) == expected == files
            and not missing and not bad_sha and not temps}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=50_000)
    ap.add_argument("-n", type=int, default=4)
    ap.add_argument("--kill-at", type=float, default=0.5, help="fraction of images")
    ap.add_argument("--batch-size", type=int, default=None, help="default: adgen generate's")
    ap.add_argument("--concurrency", type=int, default=None, help="default: adgen generate's")
    ap.add_argument("--results-dir", default=None,
                    help="folder under benchmarks/results (or an absolute path); "
                         "default: the machine's name")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    from benchmarks.triton_local import LocalTriton, work_dir
    work = work_dir("adgen-kill-resume-")
    prompts, out = work / "prompts.jsonl", work / "out"
    make_prompts(prompts, args.prompts)
    expected = args.prompts * args.n
    with LocalTriton(None, work) as triton:
        cmd = [str(prompts), "-o", str(out), "-n", str(args.n), "--url", triton.grpc_url,
               "--no-progress"]
        for flag, value in (("--batch-size", args.batch_size),
                            ("--concurrency", args.concurrency)):
            if value is not None:
                cmd += [flag, str(value)]
        first = run_client(cmd, int(expected * args.kill_at), out / "manifest.jsonl",
                           work / "run1.log")
        print(f"run 1 killed={first['killed']} after {first['wall_s']} s with "
              f"{first['manifest_lines_after']} manifest lines", flush=True)
        second = run_client(cmd, None, out / "manifest.jsonl", work / "run2.log")
        print(f"run 2 exit {second['exit_code']} in {second['wall_s']} s", flush=True)
    check = verify(out, expected)
    done_first = first["manifest_lines_after"]
    payload = {
        "machine": machine_info(), "command": command_line("job_kill_resume", argv),
        "note": args.note, "load_avg_end": os.getloadavg()[0],
        "prompts": args.prompts, "n": args.n, "images": expected,
        "run1": first, "run2": second, "verify": check,
        "run1_images_per_s": round(done_first / first["wall_s"], 1),
        "run2_images_per_s": round((expected - done_first) / second["wall_s"], 1),
    }
    md = "\n".join([
        "# Job killed mid-way and resumed",
        f"`{payload['command']}` — {expected:,} images ({args.prompts:,} prompts × {args.n}), "
        f"one local Triton, machine {payload['machine']['name']}. {args.note}",
        "",
        "| run | wall s | exit | manifest lines after | images/s | client CPU s | client peak RSS MB |",
        "|---|---|---|---|---|---|---|",
        f"| 1 (SIGKILL at {args.kill_at:.0%}) | {first['wall_s']} | {first['exit_code']} | "
        f"{done_first:,} | {payload['run1_images_per_s']} | {first['cpu_s']} | "
        f"{first['peak_rss_mb']} |",
        f"| 2 (same command) | {second['wall_s']} | {second['exit_code']} | "
        f"{second['manifest_lines_after']:,} | {payload['run2_images_per_s']} | "
        f"{second['cpu_s']} | {second['peak_rss_mb']} |",
        "",
        f"Check from the files: {check['manifest_images']:,} manifest images, "
        f"{check['unique_ids']:,} unique ids, {check['image_files']:,} image files, "
        f"{check['missing_files']} missing, {check['sha256_mismatches']} sha256 mismatches, "
        f"{check['temp_files_left']} temp files left → every image exactly once: "
        f"**{check['exactly_once']}**.",
    ])
    path = write_results("job_kill_resume", payload, md, subdir=args.results_dir)
    print(md)
    print(f"wrote {path}")
    import shutil
    shutil.rmtree(work, ignore_errors=True)
    return 0 if check["exactly_once"] and second["exit_code"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
