"""Job planning without a server: shards, seeds, resume bookkeeping, option checks."""
import json

import pytest

from adgen.serving.jobs.job import JobConfig, JobError, plan, read_manifest
from adgen.latents import derive_seed


def test_shards_partition_the_images_and_keep_their_seeds(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("".join(f"prompt {i}\n" for i in range(40)) + '"bad"\n')
    full = plan(JobConfig(prompts=(str(p),), out="x", n=3, seed=5))[1]
    shards = [plan(JobConfig(prompts=(str(p),), out="x", n=3, seed=5, shard=(i, 3)))[1]
              for i in range(3)]
    ids = [sorted(t.custom_id for t in s) for s in shards]
    assert all(ids)  # every shard got work
    assert sorted(sum(ids, [])) == sorted(t.custom_id for t in full)  # a partition
    seeds = {t.custom_id: t.seed for s in shards for t in s}
    assert seeds == {t.custom_id: t.seed for t in full}
    assert seeds["line-1-2"] == derive_seed(5, "line-1", 2)


def test_bad_lines_are_reported_by_exactly_one_shard(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("{bad\n" * 5)
    counts = [len(plan(JobConfig(prompts=(str(p),), out="x", shard=(i, 2)))[2]) for i in range(2)]
    assert sum(counts) == 5


def test_manifest_reader_ignores_a_torn_last_line(tmp_path):
    rows = [{"custom_id": "a-0", "seed": 1}, {"custom_id": "a-0", "seed": 2}]
    (tmp_path / "manifest.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows) + '{"custom_id": "b-0", "se')
    assert read_manifest(tmp_path) == {"a-0": {"custom_id": "a-0", "seed": 2}}


@pytest.mark.parametrize("kw,match", [
    ({"engine": "cloud"}, "unknown engine"),
    ({"engine": "local"}, "needs --model"),
    ({"shard": (2, 2)}, "shard 2/2"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"n": 100_000}, "n must be <= 1024"),
    ({"batch_size": 512}, "<= 256"),
    ({"prompts": ()}, "no prompt file"),
])
def test_bad_options(kw, match):
    cfg = {"prompts": ("p.txt",), "out": "x", **kw}
    with pytest.raises(JobError, match=match):
        JobConfig(**cfg).check()


def test_generate_dry_run_prints_the_plan(tmp_path, capsys):
    from adgen.cli import main
    p = tmp_path / "p.txt"
    p.write_text("one\ntwo\n")
    assert main(["generate", str(p), "-o", str(tmp_path / "o"), "-n", "3", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 6 and out["config"]["n"] == 3
    assert not (tmp_path / "o").exists()
    assert main(["generate", str(p), "-o", "o", "--shard", "3"]) == 2
    assert "--shard must look like i/n" in capsys.readouterr().err


def test_resume_redoes_an_image_whose_prompt_or_file_changed(tmp_path):
    import hashlib

    from adgen.serving.jobs.job import ImageTask, is_done
    from adgen.serving.jobs.prompts import PromptItem
    task = ImageTask(PromptItem("a", "a red apple", 1), 0, 7)
    f = tmp_path / task.rel_path
    f.parent.mkdir(parents=True)
    f.write_bytes(b"png")
    entry = {"custom_id": "a-0", "seed": 7, "path": task.rel_path, "prompt": "a red apple",
             "sha256": hashlib.sha256(b"png").hexdigest()}
    assert is_done(tmp_path, task, entry)
    assert not is_done(tmp_path, task, {**entry, "prompt": "a blue apple"})
    assert not is_done(tmp_path, task, {**entry, "seed": 8})
    f.write_bytes(b"torn")
    assert not is_done(tmp_path, task, entry)
