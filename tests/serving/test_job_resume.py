"""The resume check (adgen.serving.jobs.job_resume): a window of planned images against the manifest
index gives the same answer as the one-image reference (is_done) in every case that must
redo an image, proves changed files by hashing once and then by stat; seeds derived per
prompt equal derive_seed; the plan stage of the job benchmark times what run_job calls."""
import hashlib
import json
import os

import pytest

from adgen.errors import AdgenError

import adgen.serving.jobs.job as job
import adgen.serving.jobs.job_resume as jr
from adgen.serving.jobs.job import JobConfig, run_job
from adgen.serving.jobs.job_index import ManifestIndex
from adgen.latents import derive_seed, derive_seeds
from adgen.serving.jobs.prompts import PromptItem
from tests.serving.fake_engine import FakeEngine, flat_8


def test_derive_seeds_equals_derive_seed():
    for base in (0, 7, 2**63 - 1):
        for item_id in ("a", "p00000001", "x.y-z_"):
            for n in (1, 4, 1024, 1030):
                assert derive_seeds(base, item_id, n) == \
                    [derive_seed(base, item_id, k) for k in range(n)]
    own = PromptItem("a", "an apple", 3, seed=40)
    derived = PromptItem("b", "a pear", 2)
    assert own.seeds(5) == [own.seed_for(k, 5) for k in range(3)] == [40, 41, 42]
    assert derived.seeds(5) == [derived.seed_for(k, 5) for k in range(2)]


def _finished(tmp_path, items, base_seed=0):
    """A finished job folder: one file per image, its manifest line, the index synced."""
    out = tmp_path / "out"
    lines = []
    for it in items:
        for k, seed in enumerate(it.seeds(base_seed)):
            t = jr.ImageTask(it, k, seed)
            (out / "images" / it.id).mkdir(parents=True, exist_ok=True)
            data = f"png of {t.custom_id}".encode()
            (out / t.rel_path).write_bytes(data)
            lines.append({"custom_id": t.custom_id, "id": it.id, "k": k, "prompt": it.prompt,
                          "seed": seed, "path": t.rel_path,
                          "sha256": hashlib.sha256(data).hexdigest()})
    (out / "manifest.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return out, {x["custom_id"]: x for x in lines}


def _check(out, items, base_seed=0, reference=True):
    """undone() over the window and is_done() per image; both as sets of custom_ids."""
    index = ManifestIndex(out)
    root = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        index.sync()
        seeds = [it.seeds(base_seed) for it in items]
        left = {t.custom_id for t in jr.undone(root, items, seeds, index)}
    finally:
        os.close(root)
        index.close()
    if not reference:
        return left, None
    entries = jr.read_manifest(out)
    ref = {f"{it.id}-{k}" for it, ss in zip(items, seeds) for k, s in enumerate(ss)
           if not jr.is_done(out, jr.ImageTask(it, k, s), entries.get(f"{it.id}-{k}"))}
    return left, ref


def test_undone_redoes_exactly_what_the_reference_redoes(tmp_path):
    items = [PromptItem(f"i{j}", f"prompt {j}", 3) for j in range(8)]
    out, lines = _finished(tmp_path, items)
    left, ref = _check(out, items)
    assert left == ref == set()  # all done (first pass: proven by hashing)

    (out / lines["i0-1"]["path"]).unlink()  # file gone
    (out / lines["i1-0"]["path"]).write_bytes(b"png of i1-X")  # same size, other bytes
    real = out / "elsewhere"
    real.mkdir()
    os.replace(out / lines["i2-2"]["path"], real / "f.png")  # the file is now a link
    os.symlink(real / "f.png", out / lines["i2-2"]["path"])
    os.rename(out / "images" / "i3", real / "i3")  # the folder is now a link to the
    os.symlink(real / "i3", out / "images" / "i3")  # same files: not a real folder
    (out / lines["i4-0"]["path"]).unlink()  # a folder where the file was
    (out / lines["i4-0"]["path"]).mkdir()
    with open(out / "manifest.jsonl", "a") as f:  # later lines win: edited entries
        f.write(json.dumps({**lines["i5-1"], "seed": 1}) + "\n")
        f.write(json.dumps({**lines["i6-0"], "prompt": "another prompt"}) + "\n")
        f.write(json.dumps({**lines["i6-2"], "path": "images/i6/other.png"}) + "\n")
    edited = [PromptItem("i7", "prompt 7 edited", 3) if it.id == "i7" else it for it in items]
    left, ref = _check(out, edited)
    assert left == ref == {"i0-1", "i1-0", "i2-2", "i3-0", "i3-1", "i3-2", "i4-0", "i5-1",
                           "i6-0", "i6-2", "i7-0", "i7-1", "i7-2"}
    left, ref = _check(out, items, base_seed=1)  # another --seed: every image is new
    assert left == ref == {f"i{j}-{k}" for j in range(8) for k in range(3)}


def test_a_root_images_link_redoes_everything(tmp_path):
    items = [PromptItem("a", "an apple", 2)]
    out, _ = _finished(tmp_path, items)
    os.rename(out / "images", tmp_path / "real-images")
    os.symlink(tmp_path / "real-images", out / "images")
    left, ref = _check(out, items)
    assert left == ref == {"a-0", "a-1"}


def test_a_file_is_hashed_once_then_proven_by_stat(tmp_path, monkeypatch):
    items = [PromptItem("a", "an apple", 2)]
    out, lines = _finished(tmp_path, items)
    hashed = []
    real_sha = jr.hashlib.sha256

    class Spy:
        @staticmethod
        def sha256(data=b""):
            hashed.append(len(data))
            return real_sha(data)
    monkeypatch.setattr(jr, "hashlib", Spy)
    assert _check(out, items, reference=False)[0] == set() and len(hashed) == 2  # synced lines: no stat yet
    hashed.clear()
    assert _check(out, items, reference=False)[0] == set() and hashed == []  # the stat recorded proves them
    f = out / lines["a-1"]["path"]
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))  # touched only
    assert _check(out, items, reference=False)[0] == set() and len(hashed) == 1  # hashed again, still done
    hashed.clear()
    assert _check(out, items, reference=False)[0] == set() and hashed == []


@pytest.mark.parametrize("window", [5, 4096])
def test_job_resumes_with_windows_and_lists_sheet_candidates_in_plan_order(
        tmp_path, monkeypatch, window):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"id": f"i{j}", "prompt": f"prompt {j}", "n": 1 + j % 3})
                         + "\n" for j in range(20)))
    out = tmp_path / "out"
    cfg = JobConfig(prompts=(str(p),), out=str(out), n=1, progress=False, contact_sheet_max=2,
                    seed=3)
    monkeypatch.setattr(job, "WINDOW", window)
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(draw=flat_8))
    first = run_job(cfg)
    images = sum(1 + j % 3 for j in range(20))
    assert first.summary["images_generated"] == images
    (out / "images" / "i4" / sorted(os.listdir(out / "images" / "i4"))[0]).unlink()
    second = run_job(cfg)
    assert second.summary["images_skipped_resume"] == images - 1
    assert second.summary["images_generated"] == 1
    sheet = []
    index = ManifestIndex(out)
    try:
        list(jr.todo_tasks(cfg, out, index, [], {"prompts": 0, "planned": 0, "skipped": 0},
                           sheet, window))
    finally:
        index.close()
    plan = [(f"i{j}-{k}", derive_seed(3, f"i{j}", k), f"prompt {j}")
            for j in range(20) for k in range(1 + j % 3)]
    assert sheet == plan[:8]  # 4 x contact_sheet_max


def test_the_job_benchmark_times_the_plan_run_job_really_runs(tmp_path, monkeypatch):
    from benchmarks.job_profile import StageTimer
    p = tmp_path / "p.txt"
    p.write_text("".join(f"prompt {i}\n" for i in range(30)))
    timer = StageTimer()
    monkeypatch.setattr(job, "todo_tasks", timer.steps(job.todo_tasks, "plan"))
    monkeypatch.setattr(job, "check_prompt_files", timer.call(job.check_prompt_files, "plan"))
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(draw=flat_8))
    result = run_job(JobConfig(prompts=(str(p),), out=str(tmp_path / "out"), n=2,
                               progress=False))
    assert result.summary["images_generated"] == 60
    assert timer.steps_taken["plan"] == 60 + 1  # every task it planned, then the end
    assert timer.spent["plan"] > 0


class OtherModel(FakeEngine):
    async def model_info(self):
        return {"name": "other", "version": "2", "sha256": "1" * 64}


def _drawn_by_fake(tmp_path, monkeypatch):
    """(prompt file, output folder, its manifest bytes): 2 prompts x 2 images drawn by the
    fake engine's model through the CLI."""
    from adgen.cli import main
    p = tmp_path / "p.txt"
    p.write_text("an apple\na pear\n")
    out = tmp_path / "out"
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(draw=flat_8))
    assert main(["generate", str(p), "-o", str(out), "-n", "2", "--no-progress"]) == 0
    return p, out, (out / "manifest.jsonl").read_bytes()


def test_a_rerun_with_another_model_is_refused_and_changes_nothing(tmp_path, monkeypatch,
                                                                   capsys):
    """The same ids and seeds after a model change would keep the old model's images beside
    the new one's: a rerun with work to do stops with one line naming both models, before
    any image is written, and the folder is as it was; the same model still resumes; a
    manifest with a torn last line still names its model."""
    from adgen.cli import main
    p, out, manifest = _drawn_by_fake(tmp_path, monkeypatch)
    with open(out / "manifest.jsonl", "ab") as f:
        f.write(b'{"custom_id": "line-9-0", "model": {"sha2')  # a killed run's torn line
    before = sorted(q.relative_to(out) for q in out.rglob("*.png"))
    capsys.readouterr()
    p.write_text("an apple\na pear\na plum\n")  # work to do: a prompt more
    other = OtherModel(draw=flat_8)
    monkeypatch.setattr(job, "make_engine", lambda cfg: other)
    assert main(["generate", str(p), "-o", str(out), "-n", "2", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert "fake (000000000000)" in err and "other (111111111111)" in err and "-o" in err
    assert sorted(q.relative_to(out) for q in out.rglob("*.png")) == before
    assert (out / "manifest.jsonl").read_bytes().startswith(manifest)
    assert jr.manifest_model(out)["name"] == "fake"
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(draw=flat_8))
    assert main(["generate", str(p), "-o", str(out), "-n", "2", "--no-progress"]) == 0
    assert "2 images generated, 4 already done" in capsys.readouterr().out


def test_a_rerun_with_nothing_to_do_still_asks_the_server(tmp_path, monkeypatch, capsys):
    """Every image done: the rerun asks what the server serves. Another model is refused
    in one line (the folder is another model's pictures, not this one's); the same model,
    or no server answering, is a rerun with nothing to do."""
    from adgen.cli import main

    class Down(FakeEngine):
        async def wait_ready(self, timeout_s=0):
            raise AdgenError("no server answered")
    p, out, manifest = _drawn_by_fake(tmp_path, monkeypatch)
    capsys.readouterr()
    monkeypatch.setattr(job, "make_engine", lambda cfg: OtherModel(draw=flat_8))
    assert main(["generate", str(p), "-o", str(out), "-n", "2", "--no-progress"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert "fake (000000000000)" in err and "other (111111111111)" in err
    assert (out / "manifest.jsonl").read_bytes() == manifest
    for engine in (FakeEngine, Down):
        monkeypatch.setattr(job, "make_engine", lambda cfg: engine(draw=flat_8))
        assert main(["generate", str(p), "-o", str(out), "-n", "2", "--no-progress"]) == 0
        assert "0 images generated, 4 already done" in capsys.readouterr().out
    assert (out / "manifest.jsonl").read_bytes() == manifest


def test_a_rerun_with_another_upsampler_is_refused(tmp_path):
    """At 256 px the upsampler draws too: the same generator with another upsampler is
    another model for a rerun, and the message names the two upsamplers; the same pair
    resumes, and so does the same generator at 64 px (another size, other paths)."""
    from adgen.serving.jobs.manifest import ModelChangedError
    gen = {"name": "g", "version": "1", "sha256": "a" * 64}
    made = {**gen, "upsampler": {"name": "up-old", "sha256": "b" * 64}}
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"custom_id": "x-0", "model": made}) + "\n")
    job.check_same_model(tmp_path, made)
    with pytest.raises(ModelChangedError) as exc:
        job.check_same_model(tmp_path, {**gen, "upsampler": {"name": "up-new", "sha256": "c" * 64}})
    assert "up-old (bbbbbbbbbbbb)" in str(exc.value) and "up-new (cccccccccccc)" in str(exc.value)
    job.check_same_model(tmp_path, gen)


def test_the_manifest_is_fsynced_at_most_once_a_second_and_when_the_job_ends(tmp_path,
                                                                             monkeypatch):
    """120 batches in well under a second: the journal is flushed once at most on the way
    (not once a batch) and once at the end, after the last line; every line is whole."""
    import time

    import adgen.serving.jobs.manifest as manifest
    synced: list[tuple[int, int]] = []  # (inode, size) of every file fsynced
    real_fsync = manifest.os.fsync

    def counting(fd):
        st = os.fstat(fd)
        synced.append((st.st_ino, st.st_size))
        real_fsync(fd)
    monkeypatch.setattr(manifest.os, "fsync", counting)
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(draw=flat_8))
    p = tmp_path / "p.txt"
    p.write_text("".join(f"thing {i}\n" for i in range(120)))
    out = tmp_path / "out"
    t0 = time.monotonic()
    result = run_job(JobConfig(prompts=(str(p),), out=str(out), n=2, batch_size=2,
                               progress=False))
    wall = time.monotonic() - t0
    assert result.summary["images_generated"] == 240 and result.summary["requests"] == 120
    st = (out / "manifest.jsonl").stat()
    sizes = [size for ino, size in synced if ino == st.st_ino]
    assert 1 <= len(sizes) <= 2 + wall / manifest.FSYNC_EVERY_S
    assert sizes[-1] == st.st_size  # the last line included
    assert len(read_manifest_lines(out)) == 240


def read_manifest_lines(out) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
