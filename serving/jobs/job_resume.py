"""What a job still has to do: its plan, a window at a time, less the images already done.

An image counts as done when its manifest entry (the last line of its custom_id, looked up
in the on-disk index, adgen.serving.jobs.job_index) has the planned seed, path and prompt, and its file
is a real file below real folders (`images/` and `images/<id>/` are not symbolic links)
whose bytes have the recorded sha256: proven by stat when (size, mtime_ns, inode) are the
ones recorded when the sha256 was last proven, else by hashing the file (and the new stat
is recorded). Anything else is planned again, so a rerun writes every image exactly once.

A resume of a finished job does this for every image of the plan, so the per-image work is
kept to one lookup row, one seed hash and one lstat: seeds derived per prompt
(PromptItem.seeds), one index query per 500 images, each folder's lstat once, and an
ImageTask made only for an image still to do.
"""
from __future__ import annotations

import hashlib
import json
import os
import stat as st_
from dataclasses import dataclass
from pathlib import Path

from adgen.serving.jobs.images import has_symlink, image_suffix
from adgen.serving.jobs.prompt_stream import stream_plan
from adgen.serving.jobs.prompts import LineError, PromptItem

WINDOW = 4096  # images planned and checked against the manifest index at a time


@dataclass(frozen=True)
class ImageTask:
    item: PromptItem
    k: int
    seed: int
    suffix: str = ".png"  # adgen.serving.jobs.images.image_suffix(size, format)

    @property
    def custom_id(self) -> str:
        return f"{self.item.id}-{self.k}"

    @property
    def rel_path(self) -> str:
        return f"images/{self.item.id}/{self.item.id}-{self.k}-s{self.seed}{self.suffix}"


def manifest_model(out: Path, tail: int = 1 << 16) -> dict | None:
    """The `model` of the manifest's last whole image line (name, version, sha256), read from
    its last `tail` bytes only; None when there is none (no manifest, no image line)."""
    path = out / "manifest.jsonl"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - tail))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            model = json.loads(line).get("model")
        except (ValueError, AttributeError):  # a torn or cut-off line, or not an object
            continue
        if isinstance(model, dict) and model.get("sha256"):
            return model
    return None


def read_manifest(out: Path) -> dict[str, dict]:
    """custom_id -> last manifest entry (a torn last line from a killed run is ignored)."""
    path = out / "manifest.jsonl"
    entries: dict[str, dict] = {}
    if not path.is_file():
        return entries
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            entries[rec["custom_id"]] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return entries


def remove_stale_temp_files(out: Path) -> int:
    """Deletes the hidden temp files (`.<name>.<random>.tmp`, see atomic_write_bytes) that a
    run killed mid-write leaves behind; they never carry a real name, so nothing is lost."""
    removed = 0
    folders = [out]
    for sub in ("images", "creatives"):
        images = out / sub
        if images.is_dir() and not images.is_symlink():  # never delete through a planted link
            folders += [images] + [d for d in images.iterdir()
                                   if d.is_dir() and not d.is_symlink()]
    for folder in folders:
        for stale in folder.glob(".*.tmp"):
            try:
                stale.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def is_done(out: Path, task: ImageTask, entry: dict | None) -> bool:
    """One image against a manifest entry (a dict), hashing its file: the reference for
    undone(), which checks a window against the index rows and proves files by stat."""
    if not entry or entry.get("seed") != task.seed or entry.get("path") != task.rel_path \
            or entry.get("prompt") != task.item.prompt:  # an edited prompt is redone
        return False
    if has_symlink(out, task.rel_path):  # rewritten as a real file below real folders
        return False
    f = out / task.rel_path
    try:
        return hashlib.sha256(f.read_bytes()).hexdigest() == entry.get("sha256")
    except OSError:
        return False


def todo_tasks(cfg, out: Path, index, errors, stats: dict, sheet: list, window: int = WINDOW):
    """This shard's ImageTasks not done yet, planned and checked `window` images at a time.
    stats counts prompts, planned and skipped images; bad lines go to `errors`; `sheet` gets
    (custom_id, seed, prompt) of the first 4 x cfg.contact_sheet_max images of the plan."""
    items: list[PromptItem] = []
    size = 0
    # Files are checked relative to the output folder's descriptor: a shorter path walk per
    # lstat than the absolute path (about 10% of the lstat time on a 100k-image resume).
    root = os.open(out, os.O_RDONLY | os.O_DIRECTORY)

    def flush():
        seeds = [it.seeds(cfg.seed) for it in items]
        room = 4 * cfg.contact_sheet_max - len(sheet)  # the sheet's candidates, plan order
        for it, ss in zip(items, seeds):
            if room <= 0:
                break
            sheet.extend((f"{it.id}-{k}", s, it.prompt) for k, s in enumerate(ss[:room]))
            room -= len(ss)
        left = undone(root, items, seeds, index, image_suffix(cfg.size, cfg.format))
        stats["planned"] += size
        stats["skipped"] += size - len(left)
        return left

    try:
        for x in stream_plan(cfg.prompts, cfg.n, cfg.shard, style=cfg.style):
            if isinstance(x, LineError):
                errors.append({"kind": "prompt", **x.to_json()})
                continue
            stats["prompts"] += 1
            items.append(x)
            size += x.n
            if size >= window:
                yield from flush()
                items, size = [], 0
        yield from flush()
    finally:
        os.close(root)


def undone(root: int, items: list[PromptItem], seeds: list[list[int]], index,
           suffix: str = ".png") -> list:
    """ImageTasks of items x their seeds that are not done (see the module docstring);
    root is a descriptor of the output folder, every path is relative to it."""
    rows = index.lookup([f"{it.id}-{k}" for it in items for k in range(it.n)])
    lstat, isdir, isreg = os.lstat, st_.S_ISDIR, st_.S_ISREG

    def opener(path, flags):
        return os.open(path, flags | os.O_NOFOLLOW, dir_fd=root)

    try:
        real_root = isdir(lstat("images", dir_fd=root).st_mode)
    except OSError:
        real_root = False
    left, proven = [], []
    get = rows.get
    for it, ss in zip(items, seeds):
        iid, prompt = it.id, it.prompt
        folder = f"images/{iid}"  # no trailing separator: lstat must not follow a link
        folder_ok = None  # lstat of images/<id> once, on its first image that needs it
        for k, seed in enumerate(ss):
            cid = f"{iid}-{k}"
            e = get(cid)
            rel = f"{folder}/{cid}-s{seed}{suffix}"
            if e is None or not real_root or e[1] != seed or e[2] != rel or e[3] != prompt:
                left.append(ImageTask(it, k, seed, suffix))
                continue
            if folder_ok is None:
                try:
                    folder_ok = isdir(lstat(folder, dir_fd=root).st_mode)
                except OSError:
                    folder_ok = False
            ok = folder_ok
            if ok:
                try:
                    info = lstat(rel, dir_fd=root)
                    ok = isreg(info.st_mode)
                except OSError:
                    ok = False
                if ok and (info.st_size, info.st_mtime_ns, info.st_ino) != e[5:]:
                    try:
                        with open(rel, "rb", opener=opener) as fh:
                            ok = hashlib.sha256(fh.read()).hexdigest() == e[4]
                    except OSError:
                        ok = False
                    if ok:
                        proven.append((info.st_size, info.st_mtime_ns, info.st_ino, cid))
            if not ok:
                left.append(ImageTask(it, k, seed, suffix))
    index.prove(proven)
    return left
