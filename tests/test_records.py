"""adgen.records, the one reader of prompt and brief files: every malformed line is one
error with file, line number and reason; no good line is lost; files are streamed."""
from __future__ import annotations

import itertools
import json
import re

import pytest

from adgen.records import (BAD_UTF8, ID_RE, LineError, RecordFileError, check_id, id_prefix,
                           iter_records, open_records, read_records)


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def records(path, **kw):
    return list(read_records(path, **kw))


def good(rows):
    return [(line, rec) for line, rec, err in rows if err is None]


def bad(rows):
    return [(line, err.reason) for line, _, err in rows if err is not None]


def test_txt_skips_blanks_and_comments_and_keeps_line_numbers(tmp_path):
    p = write(tmp_path, "b.txt", b"\xef\xbb\xbf# header\n\n  # indented comment\r\n"
                                 b"sneakers sale\r\n  \n coffee promo \nnot # a comment\n")
    rows = records(p, field="brief")
    assert good(rows) == [(4, {"brief": "sneakers sale"}), (6, {"brief": "coffee promo"}),
                          (7, {"brief": "not # a comment"})]
    assert bad(rows) == []


def test_lines_split_on_lf_only(tmp_path):
    """FF, VT and U+2028 inside a line do not start a new one (line numbers stay true)."""
    p = write(tmp_path, "p.txt", "a\x0cb\nc\u2028d\nlast\n")
    assert [line for line, _ in good(records(p))] == [1, 2, 3]
    j = write(tmp_path, "p.jsonl", json.dumps({"prompt": "x\u2028y"}, ensure_ascii=False)
              + "\n" + json.dumps({"prompt": "z"}) + "\n")
    assert good(records(j)) == [(1, {"prompt": "x\u2028y"}), (2, {"prompt": "z"})]


def test_jsonl_malformed_lines_are_one_error_each(tmp_path):
    lines = [b'{"prompt": "first"}', b"\xff\xfe not utf-8", b"[" * 100_000 + b"]" * 100_000,
             b'{"n": ' + b"9" * 5000 + b"}", b"{broken", b'{"a": 1} trailing', b"[1, 2]",
             b"null", b'"text"', b"", b"   ", b'{"prompt": "last"}']
    p = write(tmp_path, "p.jsonl", b"\n".join(lines) + b"\n")
    rows = records(p)
    assert good(rows) == [(1, {"prompt": "first"}), (12, {"prompt": "last"})]
    reasons = dict(bad(rows))
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8, 9]  # blank lines are no error
    assert reasons[2] == BAD_UTF8
    assert reasons[3] == "invalid JSON: nested too deeply"
    assert reasons[4].startswith("invalid JSON") and "4300 digits" in reasons[4]
    assert reasons[5].startswith("invalid JSON:") and "(column" in reasons[5]
    assert "Extra data" in reasons[6]
    assert {reasons[i] for i in (7, 8, 9)} == {"line must be a JSON object"}
    assert all(len(r) < 200 for r in reasons.values())
    assert all(err.file == str(p) and err.line == line for line, _, err in rows if err)


def test_csv_header_rows_and_bad_rows(tmp_path):
    text = (b'prompt,id\n"a red apple, on teal",apple\n\xff,x\nfour,fields,too,many\n'
            b',\n"two\nlines",multi\n' + b'"' + b"y" * 200_000 + b'",huge\n'
            b" plain , p2 \n")
    p = write(tmp_path, "p.csv", text)
    rows = records(p)
    assert good(rows) == [(2, {"prompt": "a red apple, on teal", "id": "apple"}),
                          (7, {"prompt": "two\nlines", "id": "multi"}),
                          (9, {"prompt": "plain", "id": "p2"})]
    reasons = dict(bad(rows))
    assert reasons[3] == BAD_UTF8 and reasons[4] == "more fields than the header"
    assert reasons[8].startswith("unreadable CSV row: field larger than field limit")
    assert sorted(reasons) == [3, 4, 8]  # the empty row (line 5) is skipped like a blank


def test_csv_needs_one_of_the_columns(tmp_path):
    p = write(tmp_path, "b.csv", "prompt,id\ncoffee,c1\n")
    assert good(records(p, kind="brief", field="brief", columns=("brief", "prompt"))) == \
        [(2, {"prompt": "coffee", "id": "c1"})]
    with pytest.raises(RecordFileError, match="'brief' column"):
        records(write(tmp_path, "x.csv", "title\nx\n"), field="brief", columns=("brief",))
    with pytest.raises(RecordFileError, match="'prompt' column"):
        records(write(tmp_path, "e.csv", ""))


@pytest.mark.parametrize("name,make,match", [
    ("notes.docx", lambda p: p.write_text("x"), "unknown brief file type .docx"),
    ("no_suffix", lambda p: p.write_text("x"), r"unknown brief file type \(none\)"),
    ("missing.txt", lambda p: None, "missing.txt: no such file"),
    ("folder.jsonl", lambda p: p.mkdir(), "is a folder, not a brief file"),
])
def test_file_level_errors_are_one_line(tmp_path, name, make, match):
    p = tmp_path / name
    make(p)
    with pytest.raises(RecordFileError, match=match) as info:
        open_records(p, kind="brief")
    assert "\n" not in str(info.value)


def test_records_are_read_as_a_stream():
    """iter_records pulls one line at a time: the first records of an endless file come out."""
    endless = (f'{{"prompt": "p {i}"}}\n'.encode() for i in itertools.count())
    first = list(itertools.islice(iter_records("x.jsonl", endless), 3))
    assert [rec["prompt"] for _, rec, _ in first] == ["p 0", "p 1", "p 2"]
    endless_csv = itertools.chain([b"prompt\n"], (f"p {i}\n".encode() for i in itertools.count()))
    first = list(itertools.islice(iter_records("x.csv", endless_csv), 2))
    assert [(line, rec["prompt"]) for line, rec, _ in first] == [(2, "p 0"), (3, "p 1")]


@pytest.mark.parametrize("value", ["a", "line-3", "A.b_c-9", "x" * 128, "..a", ".hidden"])
def test_valid_ids(value):
    assert check_id(value) == value and ID_RE.fullmatch(value)


@pytest.mark.parametrize("value,reason", [
    ("../x", "must match [A-Za-z0-9._-]{1,128}"), ("a/b", "must match"), ("a\\b", "must match"),
    ("x" * 129, "must match"), ("", "must match"), ("café", "must match"),
    ("nul\x00id", "must match"), (7, "id 7 must match"), (None, "id None must match"),
    ("..", "'..' is not allowed"), (".", "'.' is not allowed"),
])
def test_invalid_ids(value, reason):
    with pytest.raises(ValueError, match=re.escape(reason)):
        check_id(value)


def test_an_enormous_id_gives_a_short_reason():
    with pytest.raises(ValueError) as info:
        check_id("../" * 100_000)
    assert len(str(info.value)) < 200


def test_id_prefix_is_a_valid_id_start():
    assert id_prefix("spring sale.txt") == "spring_sale."
    assert check_id(id_prefix("dir/" + "ü" * 200 + ".jsonl") + "line-1")


def test_prompt_and_brief_files_share_the_reader(tmp_path):
    """The same malformed lines give the same reasons through both readers."""
    from adgen.prompting.expand import read_briefs
    from adgen.serving.jobs.prompts import parse_prompt_file
    lines = [b'{"prompt": "pizza night", "brief": "pizza night", "id": "ok"}', b"\xff",
             b"[" * 50_000, b"[1]", b'{"prompt": "x", "brief": "x", "id": "../x"}',
             b'{"prompt": "y", "brief": "y", "id": "ok"}']
    p = write(tmp_path, "both.jsonl", b"\n".join(lines) + b"\n")
    items, errors = parse_prompt_file(p)
    briefs, skipped = read_briefs([p])
    assert [i.id for i in items] == [b.id for b in briefs] == ["ok"]
    assert [(e.file, e.line, e.reason) for e in errors] == \
        [(s.file, s.line, s.reason) for s in skipped]
    assert [e.line for e in errors] == [2, 3, 4, 5, 6]
    assert isinstance(errors[0], LineError)
