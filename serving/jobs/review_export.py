"""The export of a review: the approved images of a job and their creatives, with their
manifest lines, copied (or hard-linked) into a folder that appears whole or not at all.

    r = export_approved(out, Path("ship"), index, decisions.current, link=False)
    r.images, r.creatives, r.errors   # errors: (custom_id, reason) of files left out
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from adgen.atomic import atomic_dir, atomic_write_json
from adgen.serving.jobs.review_index import MANIFEST, STATE_DIR, ReviewError, ReviewIndex, \
    parse_line, safe_path

EXPORT_MARK = "review_export.json"  # an export folder says so; only such a folder is replaced


@dataclass(frozen=True)
class ExportResult:
    dest: Path
    images: int
    creatives: int
    linked: int  # files hard-linked (the rest copied)
    errors: list = field(default_factory=list)  # (custom_id, reason) of files left out


def check_export_dest(out: Path, dest: Path) -> Path:
    """dest, resolved, if an export may be written there; ReviewError otherwise."""
    base, target = Path(out).resolve(), Path(dest).resolve()
    if target == base or base.is_relative_to(target):
        raise ReviewError(f"export folder {dest} would replace the job folder {out}")
    for inner in ("images", "creatives", STATE_DIR):
        if target.is_relative_to(base / inner):
            raise ReviewError(f"export folder {dest} is inside the job's {inner}/ folder; "
                              "choose a folder outside it")
    if target.exists() and (not target.is_dir() or (any(target.iterdir())
                                                     and not (target / EXPORT_MARK).is_file())):
        raise ReviewError(f"export folder {dest} exists and is not an earlier review export; "
                          "choose a new or empty folder")
    return target


def export_approved(out: Path, dest: Path, index: ReviewIndex, decisions: dict[str, str],
                    link: bool = False) -> ExportResult:
    """Copies (link=True: hard-links, copying where the file system cannot) the approved
    images and their creatives into dest under the same relative paths, with their manifest
    lines in dest/manifest.jsonl, in manifest order. The folder appears whole or not at all
    (an earlier export there is replaced only then). A file that is missing or leads out of
    the job is left out and reported; the others are exported."""
    out = Path(out)
    target = check_export_dest(out, dest)
    index.sync()
    approved = [cid for cid in index.ids if decisions.get(cid) == "approve"]
    images = creatives = linked = 0
    errors: list[tuple[str, str]] = []
    with atomic_dir(target) as tmp:
        with open(tmp / MANIFEST, "wb") as manifest:
            for cid in approved:
                for raw in index.lines_of(cid):
                    rec = parse_line(raw)
                    try:
                        src = safe_path(out, rec["path"])
                    except ReviewError as exc:
                        errors.append((rec["custom_id"], str(exc)))
                        continue
                    to = tmp / rec["path"]
                    to.parent.mkdir(parents=True, exist_ok=True)
                    if link and _hard_link(src, to):
                        linked += 1
                    else:
                        shutil.copy2(src, to)
                    manifest.write(raw)
                    if rec.get("kind") == "creative":
                        creatives += 1
                    else:
                        images += 1
            manifest.flush()
            os.fsync(manifest.fileno())
        atomic_write_json(tmp / EXPORT_MARK, {
            "source": str(out.resolve()), "images": images, "creatives": creatives,
            "linked": linked, "left_out": len(errors),
            "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, fsync=True)
    return ExportResult(target, images, creatives, linked, errors)


def _hard_link(src: Path, to: Path) -> bool:
    try:
        os.link(src, to)
        return True
    except OSError:  # another file system, or links not allowed: copy instead
        return False
