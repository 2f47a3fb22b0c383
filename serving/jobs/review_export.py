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
    counts = {"images": 0, "creatives": 0, "linked": 0}
    errors: list[tuple[str, str]] = []
    try:
        with atomic_dir(target) as tmp:
            with open(tmp / MANIFEST, "wb") as manifest:
                for cid in approved:
                    for raw in index.lines_of(cid):
                        rec = parse_line(raw)
                        try:
                            how = _put(out, rec["path"], tmp / rec["path"], link)
                        except ReviewError as exc:  # this file alone is left out
                            errors.append((rec["custom_id"], str(exc)))
                            continue
                        manifest.write(raw)
                        counts["linked"] += how == "linked"
                        counts["creatives" if rec.get("kind") == "creative" else "images"] += 1
                manifest.flush()
                os.fsync(manifest.fileno())
            atomic_write_json(tmp / EXPORT_MARK, {
                "source": str(out.resolve()), **counts, "left_out": len(errors),
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, fsync=True)
    except OSError as exc:  # where the export goes: nothing of it is left behind
        raise ReviewError(f"cannot write the export folder {dest} "
                          f"({exc.strerror or exc})") from None
    return ExportResult(target, counts["images"], counts["creatives"], counts["linked"], errors)


def _put(out: Path, rel: str, to: Path, link: bool) -> str:
    """Job file `rel` at `to`: "linked" or "copied"; ReviewError when the job's file is
    missing, leads out of the job or cannot be read (OSError: `to` cannot be written)."""
    src = safe_path(out, rel)
    to.parent.mkdir(parents=True, exist_ok=True)
    if link and _hard_link(src, to):
        return "linked"
    try:
        fin = open(src, "rb")
    except OSError as exc:
        raise ReviewError(f"{rel}: cannot be read ({exc.strerror or exc})") from None
    with fin, open(to, "wb") as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)
    shutil.copystat(src, to)
    return "copied"


def _hard_link(src: Path, to: Path) -> bool:
    try:
        os.link(src, to)
        return True
    except OSError:  # another file system, or links not allowed: copy instead
        return False
