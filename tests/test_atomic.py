"""adgen.atomic: all or nothing, for files and folders."""
from __future__ import annotations

import json
import stat

import pytest

from adgen.atomic import atomic_dir, atomic_file, atomic_write, atomic_write_json


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_atomic_write_bytes_text_and_json(tmp_path):
    atomic_write(tmp_path / "a.bin", b"\x00\x01")
    atomic_write(tmp_path / "sub" / "b.txt", "héllo\n", fsync=True)
    atomic_write_json(tmp_path / "c.json", {"k": [1, 2]})
    assert (tmp_path / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "sub" / "b.txt").read_text(encoding="utf-8") == "héllo\n"
    assert json.loads((tmp_path / "c.json").read_text()) == {"k": [1, 2]}
    assert stat.S_IMODE((tmp_path / "a.bin").stat().st_mode) == 0o644
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "manifest.jsonl"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as f:
            f.write("half a ne")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_atomic_file_refuses_append_mode(tmp_path):
    with pytest.raises(ValueError, match="whole files"):
        with atomic_file(tmp_path / "x", "a"):
            pass


def test_atomic_dir_swaps_a_finished_folder_in_and_the_old_one_out(tmp_path):
    out = tmp_path / "ckpt"
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_bytes(b"v1")
        assert not out.exists()  # nothing visible until the block ends
    with atomic_dir(out) as tmp:
        (tmp / "weights").write_bytes(b"v2")
    assert (out / "weights").read_bytes() == b"v2"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert _leftovers(tmp_path) == []


def test_a_failed_folder_leaves_the_old_one(tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    (out / "keep").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(out) as tmp:
            (tmp / "half").write_text("x")
            raise KeyboardInterrupt
    assert [p.name for p in out.iterdir()] == ["keep"] and _leftovers(tmp_path) == []


def test_atomic_dir_without_replace_refuses_before_writing(tmp_path):
    out = tmp_path / "repo"
    out.mkdir()
    with pytest.raises(FileExistsError):
        with atomic_dir(out, replace=False):
            raise AssertionError("the body must not run")
    assert _leftovers(tmp_path) == []
