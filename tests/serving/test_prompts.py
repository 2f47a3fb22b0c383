"""Prompt files (docs/design.md §5): good lines parse, each bad line is one error with its reason."""
import json

import pytest

from adgen.contract import MAX_PROMPT_BYTES
from adgen.latents import derive_seed
from adgen.serving.jobs.prompts import MAX_N, PromptFileError, parse_prompt_file, parse_prompt_files


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return p


def test_txt_skips_blanks_and_comments_and_numbers_ids_by_line(tmp_path):
    p = write(tmp_path, "p.txt", "# header\n\na red apple\n  \nblue car  \n")
    items, errors = parse_prompt_file(p, default_n=3)
    assert errors == []
    assert [(i.id, i.prompt, i.n) for i in items] == [("line-3", "a red apple", 3),
                                                      ("line-5", "blue car", 3)]


def test_jsonl_fields_and_per_line_errors(tmp_path):
    lines = [
        {"prompt": "a cat", "id": "cat", "n": 2, "seed": 7, "brief": "cats", "meta": {"a": 1}},
        {"prompt": "a dog"},
        {"prompt": "escape", "id": "../../etc"},
        {"prompt": "dup", "id": "cat"},
        {"prompt": "", "id": "empty"},
        {"prompt": "x", "n": MAX_N + 1},
        {"prompt": "x", "seed": -1},
        {"prompt": "x" * (MAX_PROMPT_BYTES + 1)},
        {"id": "no-prompt"},
    ]
    text = "\n".join(json.dumps(x) for x in lines) + "\n{not json\n[1, 2]\n"
    items, errors = parse_prompt_file(write(tmp_path, "p.jsonl", text))
    assert [(i.id, i.n, i.seed, i.brief, i.meta) for i in items] == [
        ("cat", 2, 7, "cats", {"a": 1}), ("line-2", 1, None, None, {})]
    by_line = {e.line: e.reason for e in errors}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "must match" in by_line[3]
    assert "duplicate id 'cat'" in by_line[4]
    assert "empty" in by_line[5]
    assert "n must be in" in by_line[6]
    assert "seed must be in" in by_line[7]
    assert f"over the {MAX_PROMPT_BYTES}-byte limit" in by_line[8]
    assert "prompt must be a string" in by_line[9]
    assert "invalid JSON" in by_line[10]
    assert "JSON object" in by_line[11]
    assert all(e.file == str(tmp_path / "p.jsonl") for e in errors)


def test_csv_with_optional_columns_and_bad_rows(tmp_path):
    text = 'prompt,id,n,seed,brief\n"a red apple, on teal",apple,2,5,fruit\nbanana,,x,,\n' \
           'cherry,ch/erry,,,\nplain,,,,\n'
    items, errors = parse_prompt_file(write(tmp_path, "p.csv", text))
    assert [(i.id, i.prompt, i.n, i.seed, i.brief) for i in items] == [
        ("apple", "a red apple, on teal", 2, 5, "fruit"), ("line-5", "plain", 1, None, None)]
    assert [(e.line, e.reason.split(" ")[0]) for e in errors] == [(3, "n"), (4, "id")]


def test_csv_without_prompt_column_is_a_file_error(tmp_path):
    with pytest.raises(PromptFileError, match="'prompt' column"):
        parse_prompt_file(write(tmp_path, "p.csv", "text,id\nhello,a\n"))


def test_non_utf8_line_costs_only_that_line(tmp_path):
    p = write(tmp_path, "p.txt", b"good one\n\xff\xfe bad\nanother good\n")
    items, errors = parse_prompt_file(p)
    assert [i.prompt for i in items] == ["good one", "another good"]
    assert [(e.line, e.reason) for e in errors] == [(2, "line is not valid UTF-8")]


@pytest.mark.parametrize("name,content,match", [
    ("p.pdf", "x", "unknown prompt file type"),
    ("missing.txt", None, "no such file"),
])
def test_unreadable_files(tmp_path, name, content, match):
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(PromptFileError, match=match):
        parse_prompt_file(p)


def test_ids_unique_across_files_and_default_ids_do_not_collide(tmp_path):
    a = write(tmp_path, "a.txt", "one\ntwo\n")
    b = write(tmp_path, "b.txt", "three\n")
    c = write(tmp_path, "c.jsonl", json.dumps({"prompt": "dup", "id": "line-1"}) + "\n")
    items, errors = parse_prompt_files([a, b, c])
    assert [i.id for i in items] == ["line-1", "line-2", "b.line-1"]
    assert len(errors) == 1 and "duplicate id 'line-1'" in errors[0].reason


def test_seeds_line_seed_is_exact_and_base_seed_is_derived(tmp_path):
    p = write(tmp_path, "p.jsonl", json.dumps({"prompt": "a", "id": "a", "seed": 40, "n": 3})
              + "\n" + json.dumps({"prompt": "b", "id": "b"}) + "\n")
    a, b = parse_prompt_file(p)[0]
    assert [a.seed_for(k, 99) for k in range(3)] == [40, 41, 42]
    assert b.seed_for(2, 99) == derive_seed(99, "b", 2) != b.seed_for(2, 98)


def test_malformed_lines_each_give_one_clear_error_and_lose_no_good_line(tmp_path):
    lines = [b'{"prompt": "good one", "id": "g1"}', b'{"prompt": "caf\xe9"}',
             b'{"prompt": "deep", "meta": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
             b'{"prompt": ["a list"]}', b'{"prompt": "x", "n": "three"}',
             b'{"prompt": "x", "id": "' + b"i" * 129 + b'"}', b'{"prompt": "x", "id": "../x"}',
             b'{"prompt": "x", "id": ".."}', b'{"prompt": "x", "id": "g1"}',
             b'{"prompt": "good two", "id": "' + b"i" * 128 + b'"}']
    p = write(tmp_path, "p.jsonl", b"\n".join(lines) + b"\n")
    items, errors = parse_prompt_file(p)
    assert [i.prompt for i in items] == ["good one", "good two"]
    reasons = {e.line: e.reason for e in errors}
    assert reasons == {
        2: "line is not valid UTF-8", 3: "invalid JSON: nested too deeply",
        4: "prompt must be a string, got list", 5: "n must be an integer, got 'three'",
        6: f"id {'i' * 129!r} must match [A-Za-z0-9._-]{{1,128}}",
        7: "id '../x' must match [A-Za-z0-9._-]{1,128}", 8: "id '..' is not allowed",
        9: "duplicate id 'g1'"}
    assert all(e.file == str(p) for e in errors)


def test_csv_bad_bytes_and_a_folder(tmp_path):
    p = write(tmp_path, "p.csv", b"prompt,id\nok,a\n\xff\xfe,b\nok too,c\n")
    items, errors = parse_prompt_file(p)
    assert [i.id for i in items] == ["a", "c"]
    assert [(e.line, e.reason) for e in errors] == [(3, "line is not valid UTF-8")]
    (tmp_path / "dir.txt").mkdir()
    with pytest.raises(PromptFileError, match="is a folder, not a prompt file"):
        parse_prompt_file(tmp_path / "dir.txt")
