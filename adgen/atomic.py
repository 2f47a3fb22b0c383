"""The one way adgen writes a file or a folder that readers may see: all or nothing.

    atomic_write(path, b"...")              # bytes or str; temp file beside it + rename
    atomic_write_json(path, {"a": 1})       # indent 2, trailing newline
    with atomic_file(path, "w") as f:       # stream into the temp file; renamed on success
        f.write(...)
    with atomic_dir(out_dir) as tmp:        # fill tmp; swapped into place on success,
        (tmp / "weights").write_bytes(...)  # an existing out_dir replaced only then

A failure (an exception, Ctrl-C) removes the temp file or folder and leaves what was there
before untouched. Temp names start with a dot and end in `.tmp` (files) or `-tmp-<random>`
(folders) so a sweep can recognise them. fsync=True also flushes the data (and the rename,
through the folder) to disk before returning: for manifests and state a crash must not
truncate. Writing below a job's output folder without following planted links is
adgen.serving.jobs.images.atomic_write_bytes(root=...): the same temp-and-rename, done
through folder descriptors opened without following links (a link is never written through).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "wb", *, fsync: bool = False,
                encoding: str | None = None) -> Iterator[IO]:
    """A file object on a temp file beside `path`; renamed to `path` when the block ends
    without an exception, removed otherwise. mode: "wb" or "w" (text, utf-8 by default)."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes whole files: mode 'wb' or 'w', not {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None,
                       newline="" if text else None) as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; outputs are meant to be read by others
        os.replace(tmp, path)
        if fsync:
            _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | Path, data: bytes | str, *, fsync: bool = False) -> Path:
    """Writes `data` (str as utf-8) to `path` all at once; returns the path."""
    with atomic_file(path, "w" if isinstance(data, str) else "wb", fsync=fsync) as f:
        f.write(data)
    return Path(path)


def atomic_write_json(path: str | Path, data, *, fsync: bool = False, **dumps) -> Path:
    """json.dumps(data, indent=2) plus a newline, written with atomic_write."""
    dumps.setdefault("indent", 2)
    return atomic_write(path, json.dumps(data, **dumps) + "\n", fsync=fsync)


@contextlib.contextmanager
def atomic_dir(out_dir: str | Path, *, replace: bool = True) -> Iterator[Path]:
    """A temp folder beside `out_dir` to fill; when the block ends without an exception it
    takes out_dir's place (an existing out_dir is moved aside first and removed after, or put
    back if the swap fails). replace=False refuses an existing out_dir (FileExistsError)
    before anything is written."""
    out_dir = Path(out_dir)
    if not replace and out_dir.exists():
        raise FileExistsError(f"{out_dir} exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; model folders are read by servers as others
        yield tmp
        old = None
        if out_dir.exists() or out_dir.is_symlink():
            if not replace:
                raise FileExistsError(f"{out_dir} exists")
            old = out_dir.with_name(f".{out_dir.name}-old-{tmp.name.rsplit('-', 1)[-1]}")
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except BaseException:
            if old is not None:
                os.replace(old, out_dir)
            raise
        if old is not None:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
