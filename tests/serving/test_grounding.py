"""Grounding in `adgen generate` and the API: every image's manifest line (and PNG metadata)
says which known concept its prompt is drawn as and how sure that is; prompts that name
nothing known get one warning line and a count in summary.json, never an error; --style
appends a design family to every prompt; a missing or bad concept list leaves "grounding"
null with a warning. The engine is tests/serving/fake_engine.py (no model); the grounding
is real: the release concept list scored with the exported MiniLM text encoder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from adgen import api
from adgen.captions import COLOR_NAMES, FAMILIES, PARAPHRASE_TEMPLATES, TRAIN_TEMPLATES, \
    caption
from adgen.cli import main
from adgen.serving.jobs import job
from adgen.serving.jobs.grounding import THRESHOLD, load_grounder, subject
from adgen.serving.jobs.images import read_png
from adgen.serving.jobs.prompt_stream import styled
from tests.serving.fake_engine import FakeEngine

KNOWN = "a red apple, flat sticker style, on a teal background"  # names it: no encoder
KNOWN_2 = "a red apple, flat sticker style, on a navy background"  # the same subject
UNKNOWN = "wireless earbuds on a teal background"
WORDED = "a shiny red apple, flat sticker style, on a teal background"  # known, own words


@pytest.fixture
def fake_engine(monkeypatch, text_encoder):
    """Jobs and the API draw with FakeEngine; the grounding reads the exported encoder."""
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine())
    monkeypatch.setattr(api, "make_engine", lambda cfg: FakeEngine())


def prompt_file(tmp_path: Path, *prompts: str) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(prompts) + "\n")
    return path


def manifest(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]


def test_subject_is_the_prompt_less_the_caption_templates_words():
    for template in TRAIN_TEMPLATES + PARAPHRASE_TEMPLATES:
        for colour in COLOR_NAMES:
            text = caption("red apple", colour, template)
            assert subject(text) in ("red apple", "a red apple"), text
            assert subject(styled(text, "noto")) in ("red apple", "a red apple")
    assert subject("two dogs playing with a ball") == "two dogs playing with a ball"
    assert subject("wireless earbuds on a pastel pink background") == "wireless earbuds"
    assert subject("a teal background") == "a teal background"  # nothing else: all of it


def test_every_line_says_what_its_prompt_is_drawn_as(fake_engine, tmp_path):
    out = tmp_path / "out"
    result = job.run_job(job.JobConfig(prompts=(str(prompt_file(tmp_path, KNOWN, UNKNOWN,
                                                                 KNOWN_2)),),
                                       out=str(out), n=2, progress=False))
    lines = manifest(out)
    assert len(lines) == 6 and result.ok
    by_prompt = {}
    for line in lines:
        g = line["grounding"]
        assert set(g) == {"concept", "score", "grounded"} and round(g["score"], 3) == g["score"]
        assert g["grounded"] == (g["score"] >= THRESHOLD)
        by_prompt.setdefault(line["prompt"], []).append(g)
        _, text = read_png(out / line["path"])  # the PNG's own metadata says the same
        assert json.loads(text["adgen"])["grounding"] == g
    known, unknown = by_prompt[KNOWN], by_prompt[UNKNOWN]
    assert known[0] == known[1] == by_prompt[KNOWN_2][0]  # per prompt, not per image
    assert known[0]["concept"] == "red apple" and known[0]["grounded"]
    assert not unknown[0]["grounded"] and unknown[0]["score"] < THRESHOLD
    assert result.summary["grounding"]["prompts_checked"] == 3
    assert result.summary["grounding"]["prompts_ungrounded"] == 1
    assert result.warning == ('warning: 1 of 3 prompts name nothing the model knows (drawn '
                              'as the nearest known concept; see "grounding" in '
                              'manifest.jsonl)')


def test_each_distinct_subject_is_embedded_once_per_job(fake_engine, tmp_path, monkeypatch):
    grounder, why = load_grounder()  # the job's own: loaded once per process
    assert grounder is not None, why
    encoded = []
    real = grounder.vocab.encoder

    class Counting:  # the real encoder, counting what it is asked to embed
        def encode(self, texts):
            encoded.extend(texts)
            return real.encode(texts)
    monkeypatch.setattr(grounder.vocab, "encoder", Counting())
    monkeypatch.setattr(job, "WINDOW", 2)  # windows of 2 images: 5 windows for 10 prompts
    prompts = [f"{KNOWN_2.replace('navy', c)}" for c in ("teal", "pink", "white", "black")]
    prompts += [UNKNOWN.replace("teal", c) for c in ("pink", "white", "black")]
    prompts += ["a blender making a smoothie", "a blender making a smoothie, noto emoji",
                "a blender making a smoothie on a white background", WORDED]
    result = job.run_job(job.JobConfig(prompts=(str(prompt_file(tmp_path, *prompts)),),
                                       out=str(tmp_path / "out"), progress=False))
    # "a red apple" is the concept's own name: known without the encoder
    assert sorted(encoded) == ["a blender making a smoothie", "a shiny red apple",
                               "wireless earbuds"]
    lines = manifest(tmp_path / "out")
    assert len(lines) == 11
    g = {x["prompt"]: x["grounding"] for x in lines}
    assert g[KNOWN] == {"concept": "red apple", "score": 1.0, "grounded": True}
    assert g[WORDED]["concept"] == "red apple" and THRESHOLD <= g[WORDED]["score"] < 1.0
    assert (result.summary["grounding"]["subjects_named"],
            result.summary["grounding"]["subjects_embedded"]) == (1, 3)


def test_a_subject_that_is_a_concepts_name_or_alias_needs_no_encoder(
        fake_engine, tmp_path, monkeypatch):
    """Names and specific aliases, whatever their case, hyphens or leading article, are
    their concept at score 1.0; a subject with any other word is embedded; a job of named
    subjects never loads the concept embeddings or the text encoder."""
    named = ["The T-Shirt on a white background", "an athletic shoe icon on a pink background",
             "tshirt, flat sticker style", "A RED APPLE"]
    worded = ["a striped t-shirt", "an ox"]  # another word; a name under 3 letters
    loads = _new_process(monkeypatch)
    result = job.run_job(job.JobConfig(prompts=(str(prompt_file(tmp_path, *named)),),
                                       out=str(tmp_path / "a"), progress=False))
    assert loads == []
    assert [x["grounding"] for x in manifest(tmp_path / "a")] == [
        {"concept": c, "score": 1.0, "grounded": True}
        for c in ("t-shirt", "running shoe", "t-shirt", "red apple")]
    assert result.summary["grounding"]["subjects_named"] == 4
    result = job.run_job(job.JobConfig(prompts=(str(prompt_file(tmp_path, *worded)),),
                                       out=str(tmp_path / "b"), progress=False))
    assert len(loads) == 1
    got = [x["grounding"] for x in manifest(tmp_path / "b")]
    assert [g["concept"] for g in got] == ["t-shirt", "ox"] and all(
        g["score"] < 1.0 for g in got)
    assert (result.summary["grounding"]["subjects_named"],
            result.summary["grounding"]["subjects_embedded"]) == (0, 2)


def test_the_jobs_grounder_encodes_on_one_thread_and_a_warm_one_on_every_core():
    """A job grounds beside the server on the same cores: one onnxruntime thread, no intra-op
    pool spinning between calls. Warming the cache (repo build, bench) runs alone: all cores."""
    grounder, why = load_grounder()
    assert grounder is not None, why
    assert grounder.vocab.encoder.session.get_session_options().intra_op_num_threads == 1
    warm, why = load_grounder(threads=0)
    assert warm is not None and warm is not grounder, why
    assert warm.vocab.encoder.session.get_session_options().intra_op_num_threads == 0
    assert (warm.vocab.embeddings == grounder.vocab.embeddings).all()  # the same cache


def test_cli_warns_in_one_line_and_counts_without_failing(fake_engine, tmp_path, capsys):
    out = tmp_path / "out"
    p = prompt_file(tmp_path, KNOWN, UNKNOWN, "a cat wearing sunglasses")
    assert main(["generate", str(p), "-o", str(out), "--no-progress"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['warning: 2 of 3 prompts name nothing the model knows (drawn as the '
                   'nearest known concept; see "grounding" in manifest.jsonl)']
    summary = json.loads((out / "summary.json").read_text())
    assert summary["grounding"]["prompts_ungrounded"] == 2
    assert summary["grounding"]["threshold"] == THRESHOLD
    # prompts that all name known things: no warning at all
    p2 = prompt_file(tmp_path, KNOWN, "a cat")
    assert main(["generate", str(p2), "-o", str(tmp_path / "known"), "--no-progress"]) == 0
    assert capsys.readouterr().err == ""


def test_style_appends_the_family_to_every_prompt(fake_engine, tmp_path, capsys):
    out = tmp_path / "out"
    p = prompt_file(tmp_path, KNOWN, "a cat")
    args = ["generate", str(p), "-o", str(out), "-n", "2", "--style", "noto", "--no-progress"]
    assert main(args) == 0
    lines = manifest(out)
    assert {x["prompt"] for x in lines} == {f"{KNOWN}, in noto emoji style",
                                            "a cat, in noto emoji style"}
    assert {x["grounding"]["concept"] for x in lines} == {"red apple", "cat"}
    capsys.readouterr()
    assert main(args) == 0  # the rerun sees the same styled prompts: all done already
    assert "0 images generated, 4 already done" in capsys.readouterr().out
    assert main(["generate", str(p), "-o", str(tmp_path / "o2"), "--style", "comic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'comic'" in err[0] and all(f in err[0] for f in FAMILIES)
    assert not (tmp_path / "o2").exists()


def test_api_images_carry_grounding_and_the_shared_style(fake_engine, tmp_path):
    client = api.Client()
    known, unknown = client.generate([KNOWN, UNKNOWN], n=1)
    assert known.grounding["concept"] == "red apple" and known.grounding["grounded"]
    assert not unknown.grounding["grounded"]
    assert unknown.save(tmp_path)["grounding"] == dict(unknown.grounding)
    [noto] = client.generate("a cat", n=1, style="noto")
    assert noto.prompt == styled("a cat", "noto") == "a cat, in noto emoji style"
    assert noto.grounding["concept"] == "cat"


@pytest.mark.parametrize("concepts, reason", [
    ("missing.jsonl", "no such concept file"),
    ("bad.jsonl", "bad concept record"),
])
def test_without_a_concept_list_grounding_is_null_and_said_so(fake_engine, tmp_path, capsys,
                                                              concepts, reason):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    out = tmp_path / "out"
    p = prompt_file(tmp_path, KNOWN, UNKNOWN)
    assert main(["generate", str(p), "-o", str(out), "--no-progress",
                 "--concepts", str(tmp_path / concepts)]) == 0  # the images still come
    assert [x["grounding"] for x in manifest(out)] == [None, None]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("warning: prompts not checked against the "
                                               "model's concepts") and reason in err[0]
    summary = json.loads((out / "summary.json").read_text())["grounding"]
    assert summary["prompts_checked"] == 0 and reason in summary["unavailable"]


def test_requests_go_out_while_the_grounder_loads_and_records_follow():
    """grounded_tasks hands out tasks before the text encoder has loaded (the first requests
    need no grounding); each task's record arrives with it, in order, and the tally counts
    every prompt once."""
    import threading

    from adgen.serving.jobs.grounding import Tally, grounded_tasks, record_of
    from adgen.serving.jobs.job_resume import ImageTask
    from adgen.serving.jobs.prompts import PromptItem

    released = threading.Event()

    def load():
        assert released.wait(30), "the first task was never handed out"
        return load_grounder()
    prompts = [KNOWN_2, UNKNOWN, KNOWN_2.replace("navy", "pink")]
    tasks = [ImageTask(PromptItem(id=f"p{i}", prompt=p, n=2, line=i + 1), k, 1000 + k)
             for i, p in enumerate(prompts) for k in range(2)]
    tally = Tally()
    it = grounded_tasks(iter(tasks), load, tally, window=2)
    first = next(it)  # would wait for the loader forever if records came first
    released.set()
    got = [first, *it]
    assert [t.custom_id for t in got] == [t.custom_id for t in tasks]
    records = [record_of(t) for t in got]
    assert [r["grounded"] for r in records] == [True, True, False, False, True, True]
    assert records[0] == records[4]  # the same subject: one record
    assert (tally.checked, tally.ungrounded, tally.unavailable) == (3, 1, "")
    assert tally.concepts.endswith("concepts.jsonl")


def _new_process(monkeypatch) -> list:
    """What a new `adgen generate` process starts with: no grounder or vocabulary in
    memory. -> the list of concept files Vocabulary.load is asked to load from now on."""
    from adgen.prompting.vocab import Vocabulary
    from adgen.serving.jobs import grounding
    monkeypatch.setattr(grounding, "_GROUNDERS", {})
    monkeypatch.setattr(grounding, "_VOCABS", {})
    loads, real = [], Vocabulary.load.__func__

    def counting(cls, path=None, *a, **k):
        loads.append(path)
        return real(cls, path, *a, **k)
    monkeypatch.setattr(Vocabulary, "load", classmethod(counting))
    return loads


def test_a_later_job_reads_seen_subjects_back_without_loading_the_encoder(
        fake_engine, tmp_path, monkeypatch, grounding_cache):
    prompts = prompt_file(tmp_path, WORDED, UNKNOWN, "a blender making a smoothie")
    loads = _new_process(monkeypatch)
    first = job.run_job(job.JobConfig(prompts=(str(prompts),), out=str(tmp_path / "a"),
                                      n=2, progress=False))
    assert len(loads) == 1 and grounding_cache.is_file()
    assert (first.summary["grounding"]["subjects_embedded"],
            first.summary["grounding"]["subjects_cached"]) == (3, 0)
    # the same subjects in other prompts (other backgrounds), in a new process
    again = prompt_file(tmp_path, WORDED.replace("teal", "navy"),
                        UNKNOWN.replace("teal", "pink"),
                        "a blender making a smoothie, flat sticker style")
    loads = _new_process(monkeypatch)
    second = job.run_job(job.JobConfig(prompts=(str(again),), out=str(tmp_path / "b"),
                                       n=2, progress=False))
    assert loads == []  # neither the concept embeddings nor the text encoder
    assert (second.summary["grounding"]["subjects_embedded"],
            second.summary["grounding"]["subjects_cached"]) == (0, 3)
    assert [x["grounding"] for x in manifest(tmp_path / "b")] == \
        [x["grounding"] for x in manifest(tmp_path / "a")]
    assert second.warning == first.warning  # 1 of 3 prompts names nothing known


def test_the_grounding_cache_can_be_off_damaged_or_for_another_concept_list(
        fake_engine, tmp_path, monkeypatch, grounding_cache):
    from adgen.prompting.vocab import default_concepts_path
    prompts = prompt_file(tmp_path, WORDED, UNKNOWN)

    def run(out, concepts=None):
        loads = _new_process(monkeypatch)
        result = job.run_job(job.JobConfig(prompts=(str(prompts),), out=str(tmp_path / out),
                                           progress=False, concepts=concepts))
        g = result.summary["grounding"]
        return len(loads), g["subjects_embedded"], g["subjects_cached"], \
            [x["grounding"] for x in manifest(tmp_path / out)]
    loaded, embedded, cached, want = run("first")
    assert (loaded, embedded, cached) == (1, 2, 0)
    # another concept list (a few of the same concepts): its own rows
    other = tmp_path / "concepts.jsonl"
    lines = default_concepts_path().read_text().splitlines()
    other.write_text("\n".join(lines[:12] + [x for x in lines if '"red apple"' in x]) + "\n")
    assert run("other", str(other))[:3] == (1, 2, 0)
    monkeypatch.setenv("ADGEN_GROUNDING_CACHE", "off")
    assert run("off") == (1, 2, 0, want)
    assert not (tmp_path / "off" / "grounding.sqlite").exists()
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"not a database" * 100)
    monkeypatch.setenv("ADGEN_GROUNDING_CACHE", str(damaged))
    assert run("damaged") == (1, 2, 0, want)  # grounded as without a cache; no error
    monkeypatch.setenv("ADGEN_GROUNDING_CACHE", str(tmp_path))  # a folder, not a file
    assert run("folder") == (1, 2, 0, want)
    monkeypatch.setenv("ADGEN_GROUNDING_CACHE", str(grounding_cache))
    assert run("again") == (0, 0, 2, want)


def test_the_grounding_cache_keeps_the_newest_rows(tmp_path, monkeypatch):
    from adgen.serving.jobs import grounding_cache as gc
    monkeypatch.setattr(gc, "MAX_ROWS", 3)
    cache = gc.GroundingCache(tmp_path / "g.sqlite", "k")
    for i in range(5):
        cache.put({f"s{i}": (f"c{i}", i / 10)})
    assert cache.get([f"s{i}" for i in range(5)]) == {"s2": ("c2", 0.2), "s3": ("c3", 0.3),
                                                      "s4": ("c4", 0.4)}
    assert gc.GroundingCache(tmp_path / "g.sqlite", "other").get(["s4"]) == {}
    cache.close()


def test_two_processes_share_one_grounding_cache(tmp_path):
    """Shards of one job run as separate processes on one machine: both write the same
    table at once (WAL, a short busy wait) and neither turns its cache off."""
    import subprocess
    import sys
    code = ("import sys; from pathlib import Path\n"
            "from adgen.serving.jobs.grounding_cache import GroundingCache\n"
            "c = GroundingCache(Path(sys.argv[1]), 'k'); who = sys.argv[2]\n"
            "for i in range(200):\n"
            "    c.put({f'{who}-{i}-{j}': ('c', 0.5) for j in range(10)})\n"
            "    assert len(c.get([f'{who}-{i}-{j}' for j in range(10)])) == 10\n"
            "assert not c.off\n")
    path = tmp_path / "g.sqlite"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), who])
             for who in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    from adgen.serving.jobs.grounding_cache import GroundingCache
    both = GroundingCache(path, "k").get([f"{w}-{i}-{j}" for w in "ab" for i in range(200)
                                          for j in range(10)])
    assert len(both) == 4000
