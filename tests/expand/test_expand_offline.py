"""Brief files, the offline grounded expander, the output file and `adgen expand` (offline)."""
from __future__ import annotations

import json

import pytest

from adgen.captions import COLOR_NAMES, TEMPLATES
from adgen.cli import main
from adgen.prompting.expand import (Brief, ExpandConfig, ExpandError, OfflineExpander, colours_for,
                            palette_order, read_briefs, run_expand)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- brief files

def test_txt_briefs_skip_comments_and_blank_lines(tmp_path):
    briefs, skipped = read_briefs([write(tmp_path / "b.txt", "# header\n\nsneakers sale\n"
                                                               "  coffee promo  \n")])
    assert [(b.id, b.text, b.line) for b in briefs] == [("line-3", "sneakers sale", 3),
                                                         ("line-4", "coffee promo", 4)]
    assert skipped == []


def test_jsonl_briefs_and_per_line_errors(tmp_path):
    lines = ['{"brief": "pizza night", "id": "p1"}', '{"prompt": "coffee morning"}',
             '{"brief": "x", "id": "../escape"}', "{broken", "[1, 2]", '{"text": "no field"}',
             '{"brief": "again", "id": "p1"}', '{"brief": "   "}', '{"brief": 7}']
    briefs, skipped = read_briefs([write(tmp_path / "b.jsonl", "\n".join(lines) + "\n")])
    assert [(b.id, b.text) for b in briefs] == [("p1", "pizza night"), ("line-2", "coffee morning")]
    reasons = {s.line: s.reason for s in skipped}
    assert set(reasons) == {3, 4, 5, 6, 7, 8, 9}
    assert "must match" in reasons[3] and "invalid JSON" in reasons[4]
    assert "must be a JSON object" in reasons[5] and "no 'brief'" in reasons[6]
    assert "duplicate id 'p1'" in reasons[7] and "empty" in reasons[8]
    assert "must be a string" in reasons[9]
    assert all(s.kind == "error" and s.file.endswith("b.jsonl") for s in skipped)


def test_csv_briefs_need_a_brief_column(tmp_path):
    briefs, skipped = read_briefs([write(tmp_path / "b.csv",
                                         'id,brief\nc1,"guitar sale, 20% off"\n,pizza\n')])
    assert [(b.id, b.text) for b in briefs] == [("c1", "guitar sale, 20% off"), ("line-3", "pizza")]
    with pytest.raises(ExpandError, match="'brief' column"):
        read_briefs([write(tmp_path / "bad.csv", "title\nx\n")])


def test_control_characters_are_stripped_and_bad_bytes_are_a_line_error(tmp_path):
    path = tmp_path / "b.txt"
    path.write_bytes(b"coffee\x07 \x1b[31mpromo\n\xff\xfe broken\npizza\n")
    briefs, skipped = read_briefs([path])
    assert [b.text for b in briefs] == ["coffee [31mpromo", "pizza"]
    assert [(s.line, s.reason) for s in skipped] == [(2, "line is not valid UTF-8")]


def test_file_level_errors_are_one_line(tmp_path):
    with pytest.raises(ExpandError, match="unknown brief file type .md"):
        read_briefs([write(tmp_path / "b.md", "x")])
    with pytest.raises(ExpandError, match="no such file"):
        read_briefs([tmp_path / "missing.txt"])
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(ExpandError, match="is a folder, not a brief file"):
        read_briefs([tmp_path / "folder.txt"])


def test_malformed_brief_lines_cost_only_their_line(tmp_path):
    """The reader prompt files use: bad bytes, JSON nested too deeply, a 5000-digit number,
    overlong or path-like ids and bad CSV rows are each one error; every good line is kept."""
    lines = [b'{"brief": "pizza night", "id": "ok-1"}', b'{"brief": "caf\xe9 promo"}',
             b"[" * 100_000 + b"]" * 100_000, b'{"brief": "x", "n": ' + b"9" * 5000 + b"}",
             b'{"brief": "long", "id": "' + b"a" * 126 + b'"}',
             b'{"brief": "slash", "id": "a/b"}', b'{"brief": "tea time", "id": "ok-2"}']
    path = tmp_path / "b.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    briefs, skipped = read_briefs([path])
    assert [b.id for b in briefs] == ["ok-1", "ok-2"]
    reasons = {s.line: s.reason for s in skipped}
    assert reasons[2] == "line is not valid UTF-8"
    assert reasons[3] == "invalid JSON: nested too deeply"
    assert "4300 digits" in reasons[4]
    assert "leaves room for the '-<k>'" in reasons[5]  # prompt ids add "-<k>" to 128 max
    assert "must match [A-Za-z0-9._-]{1,128}" in reasons[6]
    assert all(len(r) < 200 for r in reasons.values())
    csv_path = tmp_path / "b.csv"
    csv_path.write_bytes(b"prompt,id\npizza,c1\n\xff\xfe,c2\ntoo,many,fields\ncoffee,c3\n")
    briefs, skipped = read_briefs([csv_path])
    assert [(b.id, b.text) for b in briefs] == [("c1", "pizza"), ("c3", "coffee")]
    assert [(s.line, s.reason) for s in skipped] == [(3, "line is not valid UTF-8"),
                                                     (4, "more fields than the header")]


def test_several_files_get_prefixed_unique_ids(tmp_path):
    a = write(tmp_path / "spring sale.txt", "tulips\n")
    b = write(tmp_path / "b.txt", "umbrellas\n")
    briefs, _ = read_briefs([a, b])
    assert [b.id for b in briefs] == ["spring_sale.line-1", "b.line-1"]


# ---------------------------------------------------------------- offline expander

def test_offline_prompts_are_grounded_captions(small_vocab):
    exp = OfflineExpander(small_vocab).expand(Brief("b1", "Summer sale on running sneakers"), 3)
    assert exp.reason == "" and len(exp.prompts) == 3
    for p in exp.prompts:
        assert p.concepts == ("running shoe",) and p.expansion == "offline"
        a_color = ("an " if p.color[0] in "aeiou" else "a ") + p.color
        assert p.prompt == f"a running shoe, flat sticker style, on {a_color} background"
    assert len({p.color for p in exp.prompts}) == 3  # variations differ


def test_offline_is_deterministic_and_keeps_brief_colours(small_vocab):
    ex = OfflineExpander(small_vocab)
    a = ex.expand(Brief("b", "fresh coffee for the cafe"), 4)
    b = ex.expand(Brief("b", "fresh coffee for the cafe"), 4)
    assert [p.prompt for p in a.prompts] == [p.prompt for p in b.prompts]
    red = ex.expand(Brief("r", "pizza night, red and yellow theme"), 3)
    assert [p.color for p in red.prompts] == ["yellow", "red", "yellow"]
    # "Black Friday" names a day, not a background; an explicit colour still counts.
    assert colours_for("Black Friday laptops", 3) == palette_order("Black Friday laptops")[:3]
    assert colours_for("Black Friday laptops on black", 2) == ["black", "black"]


def test_style_words_pick_the_matching_training_template(small_vocab):
    exp = OfflineExpander(small_vocab).expand(Brief("b", "guitar icons for the shop"), 1)
    colour = exp.prompts[0].color
    assert exp.prompts[0].prompt == TEMPLATES[1].format(
        name="guitar", a_color=("an " if colour[0] in "aeiou" else "a ") + colour)


def test_variations_use_close_concepts_only(small_vocab):
    exp = OfflineExpander(small_vocab, margin=0.5).expand(
        Brief("b", "valentine chocolate gift box"), 6)
    names = {p.concepts[0] for p in exp.prompts}
    assert "chocolate bar" in names or "wrapped gift" in names
    tight = OfflineExpander(small_vocab, margin=0.0).expand(
        Brief("b", "valentine chocolate gift box"), 3)
    assert len({p.concepts[0] for p in tight.prompts}) == 1


@pytest.mark.parametrize("brief, why", [
    ("夏季运动鞋大促销", "not in English"),
    ("Zorblat frindle quexi vump", "words the text encoder does not know"),
    ("Quarterly compliance webinar for enterprise procurement teams", "nothing the generator"),
])
def test_ungrounded_briefs_are_reported_not_invented(small_vocab, brief, why):
    exp = OfflineExpander(small_vocab).expand(Brief("x", brief), 3)
    assert exp.prompts == () and exp.reason.startswith("ungrounded:") and why in exp.reason


# ---------------------------------------------------------------- run_expand and the CLI

def test_output_is_a_prompt_file_generate_reads(tmp_path, small_vocab):
    from adgen.serving.jobs.prompts import parse_prompt_file
    briefs = write(tmp_path / "b.txt", "running sneakers\n夏季运动鞋\nbirthday balloons\n")
    out = tmp_path / "prompts.jsonl"
    s = run_expand(ExpandConfig(inputs=(str(briefs),), out=str(out), k=2, n=4),
                   vocab=small_vocab, progress=False)
    assert (s.briefs, s.prompts, s.errors, s.ungrounded) == (3, 4, 0, 1)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["line-1-0", "line-1-1", "line-3-0", "line-3-1"]
    for r in rows:
        assert r["expansion"] == r["meta"]["expansion"] == "offline"
        assert r["concepts"] == r["meta"]["concepts"] and r["n"] == 4
        assert r["meta"]["color"] in COLOR_NAMES
    items, errors = parse_prompt_file(out)
    assert errors == [] and [i.id for i in items] == [r["id"] for r in rows]
    assert items[0].brief == "running sneakers" and items[0].n == 4
    side = [json.loads(line) for line in (tmp_path / "prompts.skipped.jsonl").read_text()
            .splitlines()]
    assert [(x["line"], x["kind"], x["brief_id"]) for x in side] == [(2, "ungrounded", "line-2")]


def test_stale_skipped_file_is_removed(tmp_path, small_vocab):
    out = tmp_path / "p.jsonl"
    (tmp_path / "p.skipped.jsonl").write_text("old\n")
    run_expand(ExpandConfig(inputs=(str(write(tmp_path / "b.txt", "pizza\n")),), out=str(out)),
               vocab=small_vocab, progress=False)
    assert not (tmp_path / "p.skipped.jsonl").exists()


def run_cli(args, capsys):
    try:
        code = main(args)
    except SystemExit as exc:  # partial failures exit 1 this way (see adgen/cli/expand.py)
        code = exc.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_cli_offline_end_to_end(tmp_path, capsys, isolated_artifacts, small_concepts):
    briefs = write(tmp_path / "b.jsonl", '{"brief": "pizza friday"}\n{oops\n')
    out = tmp_path / "p.jsonl"
    code, stdout, stderr = run_cli(["expand", str(briefs), "-o", str(out), "-k", "2",
                                    "--concepts", str(small_concepts), "-q"], capsys)
    assert code == 1  # one bad line
    assert "2 prompts from 1 of 2 briefs (2 offline" in stdout
    assert "1 bad lines, 0 ungrounded" in stderr
    assert all("pizza" in json.loads(x)["prompt"] for x in out.read_text().splitlines())
    assert list((isolated_artifacts / "vocab").glob("concepts-*.npz"))


def test_cli_dry_run_prints_config_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    code, stdout, _ = run_cli(["expand", "briefs.txt", "-o", str(out), "--dry-run", "-k", "5"],
                              capsys)
    cfg = json.loads(stdout)
    assert code == 0 and cfg["k"] == 5 and cfg["llm"] == "offline" and not out.exists()


@pytest.mark.parametrize("args, message", [
    (["-k", "0"], "-k must be in [1, 64]"),
    (["-o", "prompts.txt"], "-o must name a .jsonl file"),
    (["--concurrency", "0"], "--concurrency and --top must be >= 1"),
])
def test_cli_bad_options_are_one_line_errors(tmp_path, capsys, args, message):
    argv = ["expand", str(write(tmp_path / "b.txt", "pizza\n")), "-o", str(tmp_path / "p.jsonl")]
    code, _, err = run_cli(argv + args, capsys)
    assert code == 2 and err.strip() == f"error: {message}" + err.strip().split(message, 1)[1]
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "p.jsonl").exists()


def test_cli_fatal_error_leaves_existing_output_untouched(tmp_path, capsys):
    out = write(tmp_path / "p.jsonl", '{"id": "keep", "prompt": "a pizza"}\n')
    code, _, err = run_cli(["expand", str(tmp_path / "missing.txt"), "-o", str(out)], capsys)
    assert code == 2 and "missing.txt: no such file" in err
    assert out.read_text() == '{"id": "keep", "prompt": "a pizza"}\n'


def test_cli_help_has_examples(capsys):
    code, stdout, _ = run_cli(["expand", "--help"], capsys)
    assert code == 0 and "Examples:" in stdout and "--llm" in stdout and "OPENAI_API_KEY" in stdout


def test_generate_of_expanded_prompts_loads_no_encoder(tmp_path, capsys, monkeypatch,
                                                       isolated_artifacts, small_concepts):
    """`adgen expand` writes prompts whose subjects are concept names, which `adgen generate`
    grounds without the text encoder; prompts in an LLM's own words are grounded by expand
    into the machine's grounding cache (ground_prompt_file), which generate reads back."""
    from adgen.prompting.vocab import Vocabulary
    from adgen.serving.jobs import grounding, job
    from tests.serving.fake_engine import FakeEngine
    briefs = write(tmp_path / "b.txt", "pizza friday\nsummer sale on ice cream\n")
    out = tmp_path / "p.jsonl"
    code, _, _ = run_cli(["expand", str(briefs), "-o", str(out), "-k", "2",
                          "--concepts", str(small_concepts), "-q"], capsys)
    assert code == 0
    worded = write(tmp_path / "w.jsonl", "".join(
        json.dumps({"prompt": p}) + "\n" for p in (
            "a glossy pizza slice on a teal background", "a melting ice cream cone")))
    assert grounding.ground_prompt_file(worded, small_concepts) == 2  # what expand runs
    monkeypatch.setattr(grounding, "_GROUNDERS", {})  # as in a new process
    monkeypatch.setattr(grounding, "_VOCABS", {})
    monkeypatch.setattr(Vocabulary, "load", None)  # it would fail if generate needed it
    monkeypatch.setattr(job, "make_engine", lambda cfg: FakeEngine())
    got = {}
    for prompts in (out, worded):
        result = job.run_job(job.JobConfig(prompts=(str(prompts),),
                                           out=str(tmp_path / prompts.stem),
                                           concepts=str(small_concepts), progress=False))
        g = result.summary["grounding"]
        assert result.ok and g["unavailable"] is None and g["subjects_embedded"] == 0
        got[prompts.stem] = g["prompts_checked"], g["subjects_cached"], g["subjects_named"]
    assert got["p"][:2] == (4, 0) and got["p"][2] >= 1  # variations may share a subject
    assert got["w"] == (2, 2, 0)
