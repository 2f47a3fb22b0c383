"""`adgen demo` end to end with a stand-in release model (a small real checkpoint)."""
import json

import pytest

import adgen.export.repo
import adgen.cli.demo

pytestmark = pytest.mark.triton


def test_demo_without_release_model_fails_with_one_line(monkeypatch, tmp_path, capsys):
    from adgen.cli import main
    monkeypatch.setattr(adgen.cli.demo, "release_model_dir", lambda: tmp_path / "no-model")
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the release model is missing") and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_demo_builds_serves_expands_generates_and_stops(monkeypatch, tmp_path,
                                                        small_checkpoint, text_encoder_dir,
                                                        tiny_upsampler):
    for module in (adgen.cli.demo, adgen.export.repo):
        monkeypatch.setattr(module, "release_model_dir", lambda: small_checkpoint)
        monkeypatch.setattr(module, "artifacts_dir", lambda: tmp_path / "artifacts")
    monkeypatch.setattr(adgen.export.repo, "release_upsampler_dir", lambda: tiny_upsampler)
    monkeypatch.chdir(tmp_path)  # the briefs come from the package, not the folder
    cfg = adgen.cli.demo.DemoConfig(briefs="examples/briefs.txt", out=str(tmp_path / "demo"),
                                  n=2, k=1, progress=False)
    result = adgen.cli.demo.run_demo(cfg)
    assert result["ok"]
    out = tmp_path / "demo" / "generated"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_generated"] == 2 * summary["prompts"] > 0
    assert summary["contact_sheet"] == "contact_sheet.png" and (out / "contact_sheet.png").is_file()
    assert ("offline expander" in result["prompt_source"]
            or "plain briefs" in result["prompt_source"])
    assert (tmp_path / "artifacts" / "demo" / "model_repository" / "adgen").is_dir()
    # both sizes: the same prompts and seeds at 256 px through adgen_256
    big = json.loads((tmp_path / "demo" / "generated_256" / "summary.json").read_text())
    assert big["images_generated"] == summary["images_generated"]
    from PIL import Image
    first = json.loads((tmp_path / "demo" / "generated_256" / "manifest.jsonl")
                       .read_text().splitlines()[0])
    with Image.open(tmp_path / "demo" / "generated_256" / first["path"]) as im:
        assert im.size == (256, 256)
    # the server is gone: its log says it stopped, nothing listens on its port any more
    from adgen.serving.jobs.triton_server import port_in_use
    log = (tmp_path / "demo" / "triton.log").read_text()
    port = int(summary["urls"][0].rsplit(":", 1)[1])
    assert not port_in_use("127.0.0.1", port)
    assert "successfully unloaded 'adgen' version 1" in log
