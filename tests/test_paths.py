"""The per-user artifacts cache: $ADGEN_ARTIFACTS, else $XDG_CACHE_HOME/adgen, else
~/.cache/adgen; the text encoder export keyed by the MiniLM weights and the exporter
version; `adgen expand` in a fresh folder outside the checkout reuses what the cache holds
(no export, no torch)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adgen import paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_artifacts_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ADGEN_ARTIFACTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return tmp_path


def test_the_cache_is_per_user_and_the_settings_win(no_artifacts_env, monkeypatch):
    tmp = no_artifacts_env
    assert paths.artifacts_dir() == tmp / "home" / ".cache" / "adgen"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid by the XDG rule
    assert paths.artifacts_dir() == tmp / "home" / ".cache" / "adgen"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp / "xdg"))
    assert paths.artifacts_dir() == tmp / "xdg" / "adgen"
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp / "mine"))
    assert paths.artifacts_dir() == tmp / "mine"


def test_the_text_encoder_folder_is_keyed_by_weights_and_exporter(no_artifacts_env,
                                                                   monkeypatch):
    if paths.minilm_weights() is None:
        pytest.skip("needs the MiniLM package (the train extra)")
    key = paths.text_encoder_key()
    assert re.fullmatch(r"[0-9a-f]{16}", key)
    assert paths.text_encoder_dir() == paths.artifacts_dir() / "text_encoder" / key
    # the weights' hash is remembered, so a later process does not read them again
    assert (paths.artifacts_dir() / "text_encoder" / "weights-sha256.json").is_file()
    assert paths.text_encoder_key() == key
    monkeypatch.setattr(paths, "TEXT_ENCODER_EXPORT_VERSION", "another exporter")
    assert paths.text_encoder_key() != key
    # an export laid out flat in the folder (by hand, under ADGEN_ARTIFACTS) is used as is
    flat = paths.artifacts_dir() / "text_encoder"
    (flat / "model.onnx").write_bytes(b"onnx")
    assert paths.text_encoder_dir() == flat


def test_without_the_minilm_package_the_newest_export_is_used(no_artifacts_env, monkeypatch):
    monkeypatch.setattr(paths, "minilm_weights", lambda: None)
    root = paths.artifacts_dir() / "text_encoder"
    assert paths.text_encoder_dir() == root / "unknown"  # nothing built: named as missing
    for i, key in enumerate(("aaaa", "bbbb")):
        (root / key).mkdir(parents=True)
        (root / key / "model.onnx").write_bytes(b"x")
        os.utime(root / key / "model.onnx", (1000 + i, 1000 + i))
    assert paths.text_encoder_dir() == root / "bbbb"


def test_examples_are_the_shipped_ones_unless_here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = paths.example_file("examples/briefs.txt")
    assert shipped == paths.resource_dir("adgen.examples") / "briefs.txt" and shipped.is_file()
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "briefs.txt").write_text("my own briefs\n")
    assert paths.example_file("examples/briefs.txt") == Path("examples/briefs.txt")
    assert paths.example_file("examples/none.txt") == Path("examples/none.txt")
    assert paths.example_file("other/briefs.txt") == Path("other/briefs.txt")


NO_TORCH = """
import importlib.abc, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked: nothing may be exported")
sys.meta_path.insert(0, BlockTorch())
from adgen.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_expand_in_fresh_folders_reuses_the_users_cache(text_encoder_dir, tmp_path):
    """Two working folders outside the checkout, one user cache holding the text encoder
    and the concept embeddings: neither run exports (torch is blocked) or re-embeds."""
    if paths.minilm_weights() is None:
        pytest.skip("needs the MiniLM package (the train extra)")
    cache = tmp_path / "xdg"
    env = {k: v for k, v in os.environ.items() if k != "ADGEN_ARTIFACTS"}
    env.update(XDG_CACHE_HOME=str(cache), TQDM_DISABLE="1")
    key = subprocess.run([sys.executable, "-c",
                          "from adgen.paths import text_encoder_key; print(text_encoder_key())"],
                         env=env, capture_output=True, text=True, check=True).stdout.strip()
    shutil.copytree(text_encoder_dir, cache / "adgen" / "text_encoder" / key)
    (cache / "adgen" / "vocab").mkdir()
    for npz in (ROOT / "artifacts" / "vocab").glob("concepts-*.npz"):
        shutil.copy2(npz, cache / "adgen" / "vocab" / npz.name)  # else embedded on run 1
    seconds, seen = [], []
    for folder in ("first", "second"):  # `adgen expand examples/briefs.txt`, as typed there
        work = tmp_path / folder
        work.mkdir()
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", NO_TORCH, "expand", "examples/briefs.txt",
                            "-q"], cwd=work, env=env, capture_output=True, text=True,
                           timeout=300)
        seconds.append(time.perf_counter() - t0)
        assert r.returncode == 0, r.stderr
        assert "exporting" not in r.stderr
        assert len((work / "prompts.jsonl").read_text().splitlines()) == 36  # 12 briefs x 3
        assert not (work / "artifacts").exists()  # nothing built into the working folder
        seen.append(sorted((cache / "adgen" / "vocab").glob("concepts-*.npz")))
    assert seen[0] and seen[1] == seen[0]  # the second folder read the first one's embeddings
    print(f"[cache] adgen expand examples/briefs.txt in two fresh folders: "
          f"{seconds[0]:.2f} s, {seconds[1]:.2f} s")
