"""The bad prompt-file corpus (tests/data/bad, expected.json): every bad line is reported
with its file and line number, every good line around it is generated, and a file that
cannot be a prompt file at all (a folder, empty, no prompt column, ...) stops the job
with one `error:` line before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability_helpers import check_output, run_cli

BAD = Path(__file__).resolve().parent.parent / "data" / "bad"
EXPECTED = json.loads((BAD / "expected.json").read_text(encoding="utf-8"))


def build_generated(folder: Path) -> list[Path]:
    """The corpus files too big to commit, built from their recipe."""
    recipes = {
        # a 1 MiB line between two good ones
        "long_line": b"long neighbour one\n" + b"x" * (1 << 20) + b"\nlong neighbour three\n",
        # a CSV field over the csv module's 128 KiB field limit
        "huge_field": b"prompt,id\nhuge neighbour,huge-ok\n" + b"y" * 200_000
                      + b",huge-bad\nhuge neighbour two,huge-ok-2\n",
    }
    paths = []
    for spec in EXPECTED["generated"]:
        path = folder / spec["file"]
        path.write_bytes(recipes[spec["recipe"]])
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """All line-level corpus files, in the order expected.json lists them."""
    generated = build_generated(tmp_path_factory.mktemp("bad-generated"))
    return [BAD / spec["file"] for spec in EXPECTED["line_files"]] + generated


def expected_specs():
    return EXPECTED["line_files"] + EXPECTED["generated"]


def test_the_corpus_covers_at_least_30_kinds_of_bad_input():
    kinds = {e[2] for spec in expected_specs() for e in spec["errors"]}
    kinds |= {f["kind"] for f in EXPECTED["file_errors"]}
    kinds |= {spec["note"] for spec in expected_specs() if not spec["errors"]}  # tolerated
    assert len(kinds) >= 30, len(kinds)
    for spec in EXPECTED["line_files"]:
        assert (BAD / spec["file"]).exists(), spec["file"]


def test_every_bad_line_is_reported_with_file_line_and_reason(corpus):
    from adgen.serving.jobs.prompts import parse_prompt_files
    items, errors = parse_prompt_files(corpus)
    got = {(Path(e.file).name, e.line): e.reason for e in errors}
    want = {(spec["file"], line): (reason, kind) for spec in expected_specs()
            for line, reason, kind in spec["errors"]}
    assert set(got) == set(want), {"unexpected": sorted(set(got) - set(want)),
                                   "missing": sorted(set(want) - set(got))}
    for key, (reason, kind) in want.items():
        assert reason in got[key], (key, kind, got[key])
        assert len(got[key]) < 200, "a reason is one short line, never the offending input"
    assert {it.id for it in items} == {g for spec in expected_specs() for g in spec["good"]}


def test_one_job_generates_every_good_line_around_the_bad_ones(corpus, model_repo, tmp_path):
    out = tmp_path / "out"
    r = run_cli("generate", *corpus, "-o", out, "--engine", "local", "--model", model_repo,
                "--threads", 1, "--batch-size", 8)
    assert r.returncode == 1, r.stderr  # bad lines make the exit code non-zero ...
    assert r.stderr.strip().endswith(f"errors: {out / 'errors.jsonl'}")
    total = sum(spec["images"] for spec in expected_specs())
    assert f"{total} images generated" in r.stdout  # ... but every good line is generated
    entries = check_output(out)
    assert len(entries) == total
    assert {e["id"] for e in entries.values()} == \
        {g for spec in expected_specs() for g in spec["good"]}

    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert all(e["kind"] == "prompt" for e in errors)
    got = {(Path(e["file"]).name, e["line"]) for e in errors}
    assert got == {(spec["file"], e[0]) for spec in expected_specs() for e in spec["errors"]}
    assert {e["file"] for e in errors} <= {str(p) for p in corpus}  # the path as given

    prompts = {e["id"]: e["prompt"] for e in entries.values()}
    assert prompts["bom-1"] == "a green tree"  # no U+FEFF
    assert prompts["crlf.line-1"] == "a red apple"  # no CR
    assert prompts["csv-crlf-1"] == "red apple" and prompts["csv-crlf-2"] == "quoted, with comma"
    assert prompts["sur-ok"] == "\U0001F34E apple"
    assert len(prompts["size-2000"].encode()) == 2000
    assert prompts["ctl-tab-ok"] == "a red apple\twith a tab"
    assert (out / "images" / "...").is_dir()  # a plain folder inside images/ (checked above)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["prompt_lines_failed"] == len(errors)
    assert summary["images_generated"] == total and summary["images_failed"] == 0


@pytest.mark.parametrize("spec", EXPECTED["file_errors"], ids=lambda s: s["path"])
def test_a_file_that_is_no_prompt_file_stops_the_job_before_anything_is_written(
        spec, tmp_path, capsys):
    from adgen.cli import main
    out = tmp_path / "out"
    code = main(["generate", str(BAD / spec["path"]), "-o", str(out),
                 "--engine", "local", "--model", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert spec["error"] in err and "Traceback" not in err
    assert not out.exists()  # refused before the output folder was even created


def test_a_directory_beside_a_good_file_through_the_real_cli(tmp_path):
    """File-level errors are argument errors: the job refuses before writing anything
    (nothing is half done), rather than silently generating only some of the files."""
    good = tmp_path / "good.txt"
    good.write_text("a red apple\n")
    r = run_cli("generate", good, BAD / "a_directory.txt", "-o", tmp_path / "out")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == f"error: {BAD / 'a_directory.txt'}: is a folder, not a prompt file"
    assert not (tmp_path / "out").exists()
