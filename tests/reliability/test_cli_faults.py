"""No tracebacks, nothing lost: every command that writes files, through the real CLI in a
subprocess, fed a corrupt image (100 random bytes), a missing image, an unwritable or
impossible output folder and a full disk (RLIMIT_FSIZE in the child: writes past the limit
fail with EFBIG, as on a full disk; Python ignores SIGXFSZ).

Each case ends in one line on stderr and a non-zero exit (or, for a bad item inside a job,
a per-item line in errors.jsonl while the rest is written), and whatever was good before
is still there, byte for byte."""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
from pathlib import Path

import pytest

from reliability_helpers import cli_env, popen_cli, run_cli, run_clis, write_prompts

SIZES = "300x250,320x50"


def one_line_error(r, *needles) -> str:
    """The run failed with exactly one line on stderr (no traceback) holding `needles`;
    click's usage hint above a bad argument ("Usage: ...", "Try ... --help") and progress
    bars aside."""
    lines = [x for x in r.stderr.splitlines()
             if x.strip() and not x.startswith(("Usage: ", "Try 'adgen ")) and "%|" not in x]
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr and len(lines) == 1, r.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def file_limit(limit: int):
    """preexec_fn: every file the child writes is capped at `limit` bytes."""
    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return cap


def snapshot(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file below `folder` (what must not be lost); the
    manifest's index is a cache of manifest.jsonl that any run may refresh, so left out."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith("manifest.index")}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.is_file() else []


def creatives_of(out: Path) -> dict[str, dict]:
    """custom_id@WxH -> manifest line of each creative whose file has its recorded sha256."""
    found = {}
    for e in jsonl(out / "manifest.jsonl"):
        if e.get("kind") == "creative":
            f = out / e["path"]
            assert f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == e["sha256"]
            found[e["custom_id"]] = e
    return found


def corrupt(path: Path) -> None:
    path.write_bytes(os.urandom(100))


# ----------------------------------------------------------------------------- a job

@pytest.fixture(scope="module")
def finished_job(model_repo, tmp_path_factory) -> Path:
    """4 prompts x 2 images generated with the local engine (copied by each test)."""
    root = tmp_path_factory.mktemp("faults-job")
    prompts = write_prompts(root / "prompts.txt", 4, tag="faults")
    out = root / "job"
    r = run_cli("generate", prompts, "-o", out, "-n", 2, "--engine", "local", "--model",
                model_repo, "--no-progress")
    assert r.returncode == 0, r.stderr
    return out


def copy_job(finished_job: Path, tmp_path: Path) -> tuple[Path, list[dict]]:
    out = tmp_path / "job"
    shutil.copytree(finished_job, out)
    shutil.copy2(finished_job.parent / "prompts.txt", tmp_path / "prompts.txt")
    return out, jsonl(out / "manifest.jsonl")


def generate_again(out: Path, model_repo: Path, *extra, **kw):
    return run_cli("generate", out.parent / "prompts.txt", "-o", out, "-n", 2, "--engine",
                   "local", "--model", model_repo, "--no-progress", *extra, **kw)


# ----------------------------------------------------------------------------- compose

@pytest.mark.parametrize("fault", ["corrupt", "missing"])
def test_compose_lists_a_bad_image_and_writes_every_other_creative(finished_job, tmp_path,
                                                                   fault):
    out, images = copy_job(finished_job, tmp_path)
    bad = images[3]
    corrupt(out / bad["path"]) if fault == "corrupt" else (out / bad["path"]).unlink()
    r = run_cli("compose", out, "--sizes", SIZES, "--no-progress")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "14 creatives made, 0 already done, 1 failed" in r.stdout
    assert "1 failed: listed in" in r.stderr
    [error] = jsonl(out / "errors.jsonl")
    assert error["custom_id"] == bad["custom_id"] and error["path"] == bad["path"]
    assert ("damaged" if fault == "corrupt" else "missing") in error["reason"]
    made = creatives_of(out)
    want = {f"{e['custom_id']}@{s}" for e in images if e is not bad for s in SIZES.split(",")}
    assert set(made) == want  # every other image, every size
    # the image restored, a rerun draws just its creatives
    shutil.copy2(finished_job / bad["path"], out / bad["path"])
    r = run_cli("compose", out, "--sizes", SIZES, "--no-progress")
    assert r.returncode == 0 and "2 creatives made, 14 already done, 0 failed" in r.stdout


def test_compose_into_an_unwritable_folder_is_one_line(finished_job, tmp_path):
    out, _ = copy_job(finished_job, tmp_path)
    (out / "creatives").write_text("a file where the creatives folder goes")
    before = snapshot(out)
    r = run_cli("compose", out, "--sizes", SIZES, "--no-progress")
    one_line_error(r, f"writing to {out} failed", "Not a directory")
    assert snapshot(out) == before  # no manifest line, no image touched
    one = out / jsonl(out / "manifest.jsonl")[0]["path"]
    for target in ("/proc/adgen-creatives", out / "creatives" / "sub"):
        r = run_cli("compose", one, "--sizes", SIZES, "-o", target)
        one_line_error(r, "cannot write creatives to")


def test_compose_of_one_corrupt_or_missing_image_is_one_line(tmp_path):
    bad = tmp_path / "bad.png"
    corrupt(bad)
    one_line_error(run_cli("compose", bad, "--sizes", SIZES, "-o", tmp_path / "ads"),
                   "is not a readable image")
    r = run_cli("compose", tmp_path / "nothere.png", "--sizes", SIZES)
    one_line_error(r, "does not exist")
    assert not (tmp_path / "ads").exists() or not any((tmp_path / "ads").iterdir())


def test_compose_on_a_full_disk_is_one_line_and_resumes(finished_job, tmp_path):
    sizes = "320x50,2000x2000"
    # The cap: one byte under the smallest 2000 px creative (measured on a scratch copy), so
    # the first of them fails while the small ones, the manifest, its index and the index's
    # 32 KB shared-memory file (SQLite WAL) still fit.
    scratch, _ = copy_job(finished_job, tmp_path / "scratch")
    assert run_cli("compose", scratch, "--sizes", sizes, "--no-progress").returncode == 0
    cap = min(p.stat().st_size for p in (scratch / "creatives").rglob("*-2000x2000.png")) - 1
    assert cap > 34_000, cap  # else the shared-memory file would meet the cap first
    out, images = copy_job(finished_job, tmp_path)
    r = run_cli("compose", out, "--sizes", sizes, "--no-progress", preexec_fn=file_limit(cap))
    one_line_error(r, f"writing to {out} failed", "File too large", "rerun to resume")
    assert (out / "manifest.jsonl").read_bytes().endswith(b"\n")  # no torn line
    partial = creatives_of(out)  # each listed creative is whole
    assert 0 < len(partial) < 16
    assert not [p for p in out.rglob("*.tmp")]  # no half-written file under any name
    assert all(snapshot(out)[e["path"]] == e["sha256"] for e in images)  # images untouched
    r = run_cli("compose", out, "--sizes", sizes, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"{16 - len(partial)} creatives made, {len(partial)} already done" in r.stdout
    assert len(creatives_of(out)) == 16


# ----------------------------------------------------------------------------- generate

@pytest.mark.parametrize("fault", ["corrupt", "missing"])
def test_generate_makes_a_bad_image_again_and_keeps_the_others(finished_job, model_repo,
                                                               tmp_path, fault):
    out, images = copy_job(finished_job, tmp_path)
    bad = images[5]
    corrupt(out / bad["path"]) if fault == "corrupt" else (out / bad["path"]).unlink()
    before = snapshot(out / "images")
    r = generate_again(out, model_repo)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "1 images generated, 7 already done, 0 failed" in r.stdout
    after = snapshot(out / "images")
    assert after[bad["path"][len("images/"):]] == bad["sha256"]  # the same bytes again
    assert {k: v for k, v in before.items() if k != bad["path"][len("images/"):]} == \
        {k: v for k, v in after.items() if k != bad["path"][len("images/"):]}


def test_generate_into_an_impossible_folder_is_one_line(model_repo, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", 2)
    (tmp_path / "file").write_text("x")
    for target in ("/proc/adgen-out", tmp_path / "file" / "out"):
        r = run_cli("generate", prompts, "-o", target, "--engine", "local", "--model",
                    model_repo, "--no-progress")
        one_line_error(r, f"writing to {target} failed")


def test_generate_with_a_corrupt_or_missing_logo_is_one_line(model_repo, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.txt", 2)
    logo = tmp_path / "logo.png"
    corrupt(logo)
    for path, needle in ((logo, "not a readable image"), (tmp_path / "no.png", "no.png")):
        r = run_cli("generate", prompts, "-o", tmp_path / "out", "--engine", "local",
                    "--model", model_repo, "--creatives", SIZES, "--logo", path,
                    "--no-progress")
        one_line_error(r, needle)
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_generate_on_a_full_disk_is_one_line_and_keeps_what_was_done(finished_job,
                                                                     model_repo, tmp_path):
    out, _ = copy_job(finished_job, tmp_path)
    before = snapshot(out / "images")
    r = run_cli("generate", out.parent / "prompts.txt", "-o", out, "-n", 3, "--engine",
                "local", "--model", model_repo, "--no-progress",
                preexec_fn=file_limit(100))
    # (SQLite, the manifest's index, words EFBIG as "disk I/O error")
    one_line_error(r, f"writing to {out} failed", "rerun the same command to resume")
    assert snapshot(out / "images") == before
    r = run_cli("generate", out.parent / "prompts.txt", "-o", out, "-n", 3, "--engine",
                "local", "--model", model_repo, "--no-progress")
    assert r.returncode == 0 and "4 images generated, 8 already done" in r.stdout, r.stderr


# ----------------------------------------------------------------------------- expand

def test_expand_with_a_corrupt_or_missing_brief_file(expand_env, tmp_path):
    briefs, concepts, env = expand_env
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe" + os.urandom(98))
    r = run_cli("expand", briefs, bad, "-o", tmp_path / "p.jsonl", "--concepts", concepts,
                "-q", env=env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(jsonl(tmp_path / "p.jsonl")) == 9  # the good file's 3 briefs x 3
    assert jsonl(tmp_path / "p.skipped.jsonl")[0]["file"] == str(bad)
    r = run_cli("expand", tmp_path / "nothere.txt", "-o", tmp_path / "q.jsonl", "--concepts",
                concepts, "-q", env=env)
    one_line_error(r, "nothere.txt")


def test_expand_into_an_impossible_folder_is_one_line(expand_env, tmp_path):
    briefs, concepts, env = expand_env
    (tmp_path / "file").write_text("x")
    for target, needle in (("/proc/adgen/p.jsonl", "is not writable"),
                           (tmp_path / "file" / "p.jsonl", "is a file, not a folder")):
        r = run_cli("expand", briefs, "-o", target, "--concepts", concepts, "-q", env=env)
        one_line_error(r, f"cannot write {target}", needle)


def test_expand_on_a_full_disk_keeps_the_earlier_file(expand_env, tmp_path):
    briefs, concepts, env = expand_env
    out = tmp_path / "p.jsonl"
    r = run_cli("expand", briefs, "-o", out, "--concepts", concepts, "-q", env=env)
    assert r.returncode == 0, r.stderr
    before = out.read_bytes()
    (briefs).write_text(briefs.read_text() + "birthday cake with balloons\n")
    r = run_cli("expand", briefs, "-o", out, "--concepts", concepts, "-q", env=env,
                preexec_fn=file_limit(len(before)))
    one_line_error(r, f"writing {out} failed", "File too large")
    assert out.read_bytes() == before  # replaced whole or not at all
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- repo build

def repo_build(out, model, text_encoder_dir, env=None, **kw):
    return run_cli("repo", "build", "-o", out, "--model", model, "--text-encoder",
                   text_encoder_dir, "--no-upsampler", env=env, **kw)


def test_repo_build_into_an_impossible_folder_is_one_line(small_onnx, text_encoder_dir,
                                                          tmp_path):
    (tmp_path / "file").write_text("x")
    for target, needle in (("/proc/x", "/proc is not writable"),
                           (tmp_path / "file" / "repo", "is a file, not a folder")):
        r = repo_build(target, small_onnx, text_encoder_dir)
        one_line_error(r, f"cannot write the repository {target}", needle)


def test_repo_build_with_a_corrupt_or_missing_model_is_one_line(text_encoder_dir, tmp_path):
    bad = tmp_path / "bad-model"
    bad.mkdir()
    corrupt(bad / "generator.onnx")
    one_line_error(repo_build(tmp_path / "r1", bad, text_encoder_dir),
                   "is not a readable ONNX model")
    one_line_error(repo_build(tmp_path / "r2", tmp_path / "nothere", text_encoder_dir),
                   "has no generator")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_repo_build_on_a_full_disk_keeps_the_old_repository(small_onnx, text_encoder_dir,
                                                            tmp_path):
    env = cli_env(ADGEN_ARTIFACTS=str(tmp_path / "artifacts"))
    out = tmp_path / "repo"
    assert repo_build(out, small_onnx, text_encoder_dir, env=env).returncode == 0
    before = snapshot(out)
    r = run_cli("repo", "build", "-o", out, "--model", small_onnx, "--text-encoder",
                text_encoder_dir, "--no-upsampler", "--force", env=env,
                preexec_fn=file_limit(100))
    one_line_error(r, f"cannot write the repository {out}", "File too large")
    assert snapshot(out) == before  # built beside it and renamed: the old one stands
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".repo")] == []


# ----------------------------------------------------------------------------- the others

@pytest.mark.parametrize("command", [
    ("export", "onnx", "{ckpt}", "-o", "{out}"),
    ("export", "text-encoder", "-o", "{out}"),
    ("data", "build", "--limit", "2", "--out", "{out}"),
])
def test_every_other_writing_command_says_an_impossible_output_in_one_line(
        small_checkpoint, tmp_path, command):
    (tmp_path / "file").write_text("x")
    env = cli_env(ADGEN_ARTIFACTS=str(tmp_path / "artifacts"))
    outs = ("/proc/adgen-x", tmp_path / "file" / "x")
    for r in run_clis(*([str(a).format(ckpt=small_checkpoint, out=out) for a in command]
                        for out in outs), env=env):
        one_line_error(r, "error: ")
        assert not (tmp_path / "artifacts").exists() or \
            not list((tmp_path / "artifacts").rglob("*.onnx"))


def test_export_onnx_of_a_corrupt_checkpoint_or_on_a_full_disk_is_one_line(small_checkpoint,
                                                                           tmp_path):
    env = cli_env(ADGEN_ARTIFACTS=str(tmp_path / "artifacts"))
    bad = tmp_path / "bad-ckpt"
    shutil.copytree(small_checkpoint, bad)
    corrupt(bad / "generator.safetensors")
    corrupt_run = popen_cli("export", "onnx", bad, "-o", tmp_path / "x1", env=env)  # beside:
    out = tmp_path / "x2"
    r = run_cli("export", "onnx", small_checkpoint, "-o", out, env=env,
                preexec_fn=file_limit(1000))
    one_line_error(r, "File too large")
    stdout, stderr = corrupt_run.communicate(timeout=300)
    one_line_error(subprocess.CompletedProcess(corrupt_run.args, corrupt_run.returncode,
                                               stdout, stderr), "not safetensors")
    assert not (tmp_path / "x1").exists() and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".x")]  # no temp folder
