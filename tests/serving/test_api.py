"""The Python API (adgen.Client, adgen.generate, adgen.expand) against a real tritonserver
(the session one, see conftest) and the local engine: the same pixels, file names, seeds,
PNG bytes and manifest fields as the files `adgen generate` writes for the same prompts and
seed; one-line AdgenErrors for bad arguments; `import adgen` stays light."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import adgen
from adgen.errors import AdgenError, APIError
from adgen.serving.jobs.images import read_png

PROMPTS = ["a red apple, flat sticker style, on a teal background", "blue car",
           "summer sale sneakers on a yellow background"]
# manifest fields that depend on the run, not on the image
PER_RUN = {"url", "latency_ms", "created_at"}


def cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "adgen", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300)


def cli_job(tmp_path: Path, *engine_args, n=2, seed=7, size=64) -> tuple[Path, dict]:
    """`adgen generate` on a .txt file of PROMPTS -> (output folder, custom_id -> line)."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / f"cli-{size}"
    r = cli("generate", prompts, "-o", out, "-n", n, "--seed", seed, "--size", size,
            "--no-progress", *engine_args)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    return out, {e["custom_id"]: e for e in lines}


def check_same_as_cli(results, out: Path, manifest: dict, tmp_path: Path, size: int) -> None:
    assert len(results) == len(manifest) == len(PROMPTS) * 2
    saved = tmp_path / f"api-{size}"
    for r in results:
        line = manifest[r.id]
        assert r.image.size == (size, size) and r.image.mode == "RGB"
        assert r.path == line["path"] and r.seed == line["seed"] and r.prompt == line["prompt"]
        pixels, _ = read_png(out / line["path"])
        assert np.array_equal(np.asarray(r.image), pixels)  # pixel-identical
        ours = r.save(saved)  # the job's own writer: its PNG and manifest line
        assert {k: v for k, v in ours.items() if k not in PER_RUN} == \
            {k: v for k, v in line.items() if k not in PER_RUN}
        assert ours["grounding"] == dict(r.grounding)  # checked as the job checks it
        # the same metadata too: the saved PNG is byte for byte the CLI's
        assert (saved / r.path).read_bytes() == (out / line["path"]).read_bytes()
    assert len(jsonl_lines(saved / "manifest.jsonl")) == len(results)


def test_local_engine_is_the_cli_pixel_for_pixel(model_repo, tmp_path):
    out, manifest = cli_job(tmp_path, "--engine", "local", "--model", model_repo)
    client = adgen.Client(engine="local", model=model_repo)
    results = client.generate(PROMPTS, n=2, seed=7)
    assert [r.id for r in results] == ["line-1-0", "line-1-1", "line-2-0", "line-2-1",
                                       "line-3-0", "line-3-1"]
    assert len(set(results)) == 6  # frozen and hashable (the image and model aside)
    assert {r.engine for r in results} == {"local"}
    check_same_as_cli(results, out, manifest, tmp_path, 64)
    # the module shortcut is the same call
    again = adgen.generate(PROMPTS[:1], n=1, seed=7, engine="local", model=model_repo)
    assert again[0].pixels_sha256 == results[0].pixels_sha256


@pytest.mark.triton
@pytest.mark.parametrize("size", [64, 256])
def test_triton_is_the_cli_pixel_for_pixel(triton, tmp_path, size):
    out, manifest = cli_job(tmp_path, "--url", triton.grpc_url, size=size)
    results = adgen.Client(url=triton.grpc_url).generate(PROMPTS, n=2, seed=7, size=size)
    assert {r.url for r in results} == {triton.grpc_url}
    check_same_as_cli(results, out, manifest, tmp_path, size)


@pytest.mark.triton
def test_triton_and_local_engine_agree(triton, model_repo):
    remote = adgen.Client(url=[triton.grpc_url]).generate(PROMPTS[0], n=3, seed=1)
    local = adgen.Client(engine="local", model=model_repo).generate(PROMPTS[0], n=3, seed=1)
    assert [r.pixels_sha256 for r in remote] == [r.pixels_sha256 for r in local]
    assert len({r.pixels_sha256 for r in remote}) == 3  # three seeds, three images


def test_batch_and_concurrency_follow_the_served_config(model_repo):
    """Left unset, they are what the repository's `adgen` model is configured for (as
    `adgen generate`); given ones win, each on its own."""
    from adgen.serving.jobs.served import from_pbtxt
    served = from_pbtxt(Path(model_repo) / "adgen" / "config.pbtxt")
    assert adgen.Client(engine="local", model=model_repo)._batching(64) == \
        served.client_defaults()
    assert adgen.Client(engine="local", model=model_repo, batch_size=5)._batching(64) == \
        (5, served.concurrency)
    assert adgen.Client(engine="local", model=model_repo, batch_size=5,
                        concurrency=1)._batching(64) == (5, 1)
    with pytest.raises(APIError, match="batch_size must be in"):
        adgen.Client(engine="local", model=model_repo, batch_size=0)


def jsonl_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_style_names_a_design_family(model_repo, tmp_path):
    client = adgen.Client(engine="local", model=model_repo)
    [plain] = client.generate("a cat", n=1)
    [noto] = client.generate("a cat", n=1, style="noto")
    assert noto.prompt == "a cat, in noto emoji style" and noto.style == "noto"
    assert noto.seed == plain.seed  # same id and base seed: only the prompt differs
    assert noto.save(tmp_path)["prompt"] == noto.prompt


@pytest.mark.parametrize("kwargs, message", [
    ({"style": "comic"}, "unknown style 'comic'; choose one of twemoji, noto, fluent"),
    ({"size": 128}, "size must be 64 or 256, got 128"),
    ({"n": 0}, "n must be an integer in [1, 1024], got 0"),
    ({"seed": -1}, "seed must be an integer in [0, 2**63-1], got -1"),
    ({"prompts": []}, "prompts must be a non-empty list of strings or Prompts"),
    ({"prompts": ["ok", ""]}, "prompt 2: prompt is empty"),
    ({"prompts": ["x" * 2001]}, "prompt 1: prompt is 2001 bytes, over the 2000-byte limit"),
])
def test_bad_arguments_are_one_line_adgen_errors(model_repo, kwargs, message):
    client = adgen.Client(engine="local", model=model_repo)
    args = {"prompts": ["a red apple"], **kwargs}
    with pytest.raises(AdgenError) as info:
        client.generate(**args)
    assert str(info.value) == message and "\n" not in str(info.value)
    assert isinstance(info.value, APIError)


def test_bad_clients_are_one_line_adgen_errors(tmp_path):
    with pytest.raises(AdgenError, match="unknown engine 'gpu'; choose triton or local"):
        adgen.Client(engine="gpu")
    with pytest.raises(AdgenError, match="is neither a model repository"):
        adgen.Client(engine="local", model=tmp_path).generate("a red apple", n=1)
    from adgen.serving.jobs.triton_server import free_port
    nobody = adgen.Client(url=f"127.0.0.1:{free_port()}", retries=0, timeout_s=2)
    with pytest.raises(AdgenError) as info:
        nobody.generate("a red apple", n=1)
    assert "not ready on any of" in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def api_artifacts(text_encoder_dir, tmp_path, monkeypatch) -> Path:
    """ADGEN_ARTIFACTS in tmp (caches land there) with the session's text encoder and the
    checkout's concept embeddings, so `expand` neither exports nor re-embeds."""
    from adgen.paths import artifacts_dir
    root = tmp_path / "artifacts"
    (root / "vocab").mkdir(parents=True)
    for npz in (artifacts_dir() / "vocab").glob("concepts-*.npz"):
        shutil.copy2(npz, root / "vocab" / npz.name)
    (root / "text_encoder").symlink_to(text_encoder_dir, target_is_directory=True)
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(root))
    return root


def test_expand_then_generate_carries_brief_and_copy(model_repo, api_artifacts):
    client = adgen.Client(engine="local", model=model_repo)
    prompts = client.expand(["new smartphone pre-order campaign on a navy background",
                             "valentine chocolate gift box"], k=2)
    assert [p.id for p in prompts] == ["line-1-0", "line-1-1", "line-2-0", "line-2-1"]
    assert prompts[0].concepts == ("mobile phone",) and prompts[0].expansion == "offline"
    assert all(p.copy["headline"] and p.copy["cta"] for p in prompts)
    results = client.generate(prompts, n=1)
    line = results[0].save(api_artifacts.parent / "out")
    assert line["id"] == "line-1-0" and line["brief"] == prompts[0].brief
    assert line["expansion"] == "offline" and line["copy"] == dict(prompts[0].copy)


def test_expand_through_an_openai_compatible_llm(api_artifacts, monkeypatch):
    """llm="openai": the LLM expander with its validation, against a real local HTTP server
    that speaks the chat API (tests/expand/expand_helpers.ScriptedLLM)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "expand"))
    from expand_helpers import ScriptedLLM, prompts_reply
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = ScriptedLLM()
    server.thread.start()
    try:
        server.push(prompts_reply("a no mobile phones, flat sticker style, on a navy background",
                                  "a mobile phone, flat sticker style, on a pink background"))
        client = adgen.Client(llm="openai", llm_base_url=server.base_url, llm_model="tiny")
        prompts = client.expand(PHONE := "new smartphone pre-order campaign", k=2)
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
    assert [p.expansion for p in prompts] == ["llm:tiny", "llm:tiny"]
    assert [p.concepts for p in prompts] == [("mobile phone",)] * 2  # never the ban sign
    assert prompts[0].brief == PHONE and "no mobile" not in prompts[0].prompt


def test_generate_works_inside_a_running_event_loop(model_repo):
    """A notebook cell runs inside an event loop; the API must not call asyncio.run there."""
    client = adgen.Client(engine="local", model=model_repo)

    async def cell():
        return client.generate("a red apple", n=2)
    assert len(asyncio.run(cell())) == 2


def test_import_adgen_stays_light():
    code = ("import sys, adgen\n"
            "heavy = [m for m in ('numpy', 'onnxruntime', 'torch', 'PIL', 'tritonclient') "
            "if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "assert adgen.Client.__name__ == 'Client' and 'generate' in dir(adgen)\n"
            "assert 'torch' not in sys.modules and 'onnxruntime' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError):
        adgen.no_such_name  # noqa: B018
