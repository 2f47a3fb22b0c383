"""Jobs of any size: the streamed plan equals the in-memory parse, duplicate ids
are caught across windows and through Bloom false positives, the manifest index survives a
torn line and a replaced manifest, and a job stopped part-way resumes with every image once."""
import hashlib
import json
import os

import numpy as np
import pytest

import adgen.serving.jobs.job as job
import adgen.serving.jobs.prompt_stream as ps
from adgen.serving.jobs.job import JobConfig, run_job
from adgen.serving.jobs.job_index import ManifestIndex, Reservoir
from adgen.serving.jobs.prompts import LineError, parse_prompt_files
from tests.serving.fake_engine import FakeEngine


def _files(tmp_path):
    a = tmp_path / "a.jsonl"
    rows = [{"id": f"i{j % 37}", "prompt": f"p {j}", "n": 1 + j % 3} for j in range(120)]
    rows[5] = {"id": "bad/id", "prompt": "x"}
    a.write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn\n")
    b = tmp_path / "b.txt"
    b.write_text("one\n\xff\ntwo\n".encode("latin-1").decode("latin-1"))
    c = tmp_path / "c.csv"
    c.write_text("prompt,id\nthree,i3\nfour,line-1\n")
    return [str(a), str(b), str(c)]


def _stream(paths, **kw):
    items, errors = [], []
    for x in ps.stream_plan(paths, **kw):
        (errors if isinstance(x, LineError) else items).append(x)
    return items, errors


@pytest.mark.parametrize("bloom_bits", [None, 1 << 16])  # 1<<16 bits: every id a suspect
def test_stream_equals_the_in_memory_parse(tmp_path, monkeypatch, bloom_bits):
    paths = _files(tmp_path)
    if bloom_bits:
        monkeypatch.setattr(ps.Bloom, "check_and_add",
                            lambda self, ids: np.ones(len(ids), dtype=bool))
    want_items, want_errors = parse_prompt_files(paths, default_n=2)
    items, errors = _stream(paths, default_n=2, window=7)
    key = lambda x: (getattr(x, "source", None) or x.file, x.line)  # noqa: E731
    assert sorted(items, key=key) == sorted(want_items, key=key)
    assert [i.id for i in items] == [i.id for i in want_items] or bloom_bits
    assert sorted(errors, key=key) == sorted(want_errors, key=key)
    assert sum("duplicate id" in e.reason for e in errors) == 120 - 1 - 37 + 1


def test_items_held_as_suspects_keep_every_field(tmp_path, monkeypatch):
    """A suspect line goes through the on-disk hold and a second pass; it comes back whole
    (copy and meta are not compared by ==, so they are checked here)."""
    p = tmp_path / "p.jsonl"
    rows = [{"id": "a", "prompt": "x", "seed": 3, "n": 2, "brief": "b", "meta": {"m": 1},
             "copy": {"headline": "Hot deal", "cta": "Shop now"}}, {"id": "a", "prompt": "y"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(ps.Bloom, "check_and_add",
                        lambda self, ids: np.ones(len(ids), dtype=bool))
    (item,), (dup,) = _stream([str(p)])
    want = parse_prompt_files([str(p)])[0][0]
    assert (item, item.meta, item.copy) == (want, {"m": 1}, want.copy)
    assert dup.line == 2 and "duplicate id 'a'" in dup.reason


def test_malformed_lines_stream_as_errors_in_their_shard(tmp_path):
    """Bad bytes, deep nesting and bad ids are reported once across shards, with file and
    line, by the shared reader; good lines around them all arrive."""
    p = tmp_path / "p.jsonl"
    p.write_bytes(b"\n".join([b'{"prompt": "a", "id": "g1"}', b"\xff\xfe", b"[" * 100_000,
                              b'{"prompt": "b", "id": "../x"}', b'{"prompt": "c", "id": "g2"}'])
                  + b"\n")
    parts = [_stream([str(p)], shard=(i, 2)) for i in range(2)]
    assert sorted(i.id for items, _ in parts for i in items) == ["g1", "g2"]
    errors = sorted(((e.file, e.line, e.reason) for _, errs in parts for e in errs),
                    key=lambda e: e[1])
    assert [(f, line) for f, line, _ in errors] == [(str(p), 2), (str(p), 3), (str(p), 4)]
    assert [r.split(":")[0] for _, _, r in errors] == \
        ["line is not valid UTF-8", "invalid JSON", "id '../x' must match [A-Za-z0-9._-]{1,128}"]


def test_stream_shards_partition_items_and_errors(tmp_path):
    paths = _files(tmp_path)
    whole = _stream(paths)
    parts = [_stream(paths, shard=(i, 3)) for i in range(3)]
    assert all(p[0] for p in parts)
    assert sorted(i.id for p in parts for i in p[0]) == sorted(i.id for i in whole[0])
    assert sum(len(p[1]) for p in parts) == len(whole[1])
    for i, (items, _) in enumerate(parts):
        assert all(ps.shard_of(it.id, 3) == i for it in items)


def _manifest(out):
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()
            if x.startswith("{") and x.endswith("}")]
    return rows


def test_stopped_job_resumes_every_image_once_and_reruns_by_stat(tmp_path, monkeypatch):
    p = tmp_path / "p.txt"
    p.write_text("".join(f"prompt {i}\n" for i in range(300)) + '"x\x01"\n')
    out = tmp_path / "out"
    cfg = JobConfig(prompts=(str(p),), out=str(out), n=3, batch_size=8, concurrency=2,
                    progress=False, contact_sheet_max=16)
    monkeypatch.setattr(job, "WINDOW", 50)
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine(budget=30))
    first = run_job(cfg)
    done1 = first.summary["images_generated"]
    assert 0 < done1 < 900 and first.summary["images_failed"] == 900 - done1
    with open(out / "manifest.jsonl", "a") as f:
        f.write('{"custom_id": "line-1-0", "pa')  # a kill mid-line
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine())
    second = run_job(cfg)
    assert second.summary["images_skipped_resume"] == done1
    assert second.summary["images_generated"] == 900 - done1
    ids = [r["custom_id"] for r in _manifest(out)]
    assert len(ids) == len(set(ids)) == 900
    for r in _manifest(out):
        assert hashlib.sha256((out / r["path"]).read_bytes()).hexdigest() == r["sha256"]
    s = json.loads((out / "summary.json").read_text())
    assert s["contact_sheet"] == "contact_sheet.png" and s["prompt_lines_failed"] == 1
    assert [json.loads(x)["kind"] for x in (out / "errors.jsonl").read_text().splitlines()] \
        == ["prompt"]
    # a third run proves every file by stat, without reading it; a changed file is redone
    victim = out / _manifest(out)[0]["path"]
    victim.write_bytes(b"not the png")
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine())
    third = run_job(cfg)
    assert third.summary["images_skipped_resume"] == 899
    assert third.summary["images_generated"] == 1


def test_index_rebuilds_when_the_manifest_is_replaced(tmp_path):
    m = tmp_path / "manifest.jsonl"
    m.write_text(json.dumps({"custom_id": "a-0", "seed": 1}) + "\n")
    idx = ManifestIndex(tmp_path)
    assert idx.sync() == 1 and set(idx.lookup(["a-0", "b-0"])) == {"a-0"}
    m.write_text(json.dumps({"custom_id": "b-0", "seed": 2}) + "\n")  # same size, new file
    assert idx.sync() == 1 and set(idx.lookup(["a-0", "b-0"])) == {"b-0"}
    os.unlink(m)
    assert idx.sync() == 0 and idx.lookup(["b-0"]) == {}
    idx.close()


def test_reservoir_is_exact_when_small_and_bounded_when_large():
    r = Reservoir(size=100)
    for v in range(50):
        r.append(float(v))
    assert job.percentiles(r) == job.percentiles([float(v) for v in range(50)])
    for v in range(10_000):
        r.append(1.0)
    assert len(r.values) == 100 and len(r) == 10_050


def test_a_rerun_sweeps_temp_files_only_after_a_run_that_did_not_finish(tmp_path, monkeypatch):
    p = tmp_path / "p.txt"
    p.write_text("one\ntwo\n")
    out = tmp_path / "out"
    cfg = JobConfig(prompts=(str(p),), out=str(out), n=2, progress=False)
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine())
    run_job(cfg)
    sheet = (out / "contact_sheet.png").stat().st_mtime_ns
    stale = out / "images" / "line-1" / ".line-1-0-s1.png.k1ll3d.tmp"
    idx = ManifestIndex(out)
    idx.set_finished(False)  # as a SIGKILLed run leaves it
    idx.close()
    stale.write_bytes(b"half a png")
    assert run_job(cfg).summary["images_skipped_resume"] == 4
    assert not stale.exists()
    assert (out / "contact_sheet.png").stat().st_mtime_ns == sheet  # same sheet: kept
