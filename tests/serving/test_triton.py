"""Against a real tritonserver (one per session, see conftest): gRPC and HTTP inference,
determinism across calls / engines / PyTorch, per-request errors in a mixed batch, failover,
and the bulk job (resume after a killed run, bad prompt files)."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from adgen.contract import MAX_PROMPT_BYTES

pytestmark = pytest.mark.triton

PROMPT = "a red apple, flat sticker style, on a teal background"


def grpc_infer(url, prompts, seeds, model="adgen"):
    import tritonclient.grpc as grpcclient

    from adgen.serving.jobs.client import make_inputs
    with grpcclient.InferenceServerClient(url) as c:
        return c.infer(model, make_inputs(prompts, seeds)).as_numpy("IMAGE")


def test_grpc_inference_shape_dtype_and_repeatability(triton):
    a = grpc_infer(triton.grpc_url, [PROMPT, "blue car"], [1, 2])
    b = grpc_infer(triton.grpc_url, [PROMPT, "blue car"], [1, 2])
    assert a.shape == (2, 64, 64, 3) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a[0], a[1])


def test_http_inference_matches_grpc(triton):
    import tritonclient.http as httpclient
    c = httpclient.InferenceServerClient(triton.http_url)
    p = httpclient.InferInput("PROMPT", [1, 1], "BYTES")
    p.set_data_from_numpy(np.array([[PROMPT.encode()]], dtype=object))
    s = httpclient.InferInput("SEED", [1, 1], "INT64")
    s.set_data_from_numpy(np.array([[1]], dtype=np.int64))
    http_img = c.infer("adgen", [p, s]).as_numpy("IMAGE")
    c.close()
    assert http_img.tobytes() == grpc_infer(triton.grpc_url, [PROMPT], [1]).tobytes()


def test_triton_local_engine_and_pytorch_agree(triton, model_repo, small_checkpoint,
                                               text_encoder):
    import torch

    from adgen.serving.runtime.backend import to_uint8
    from adgen.latents import seeds_to_z
    from adgen.serving.jobs.local_engine import LocalEngine
    from adgen.training.checkpoint import load_generator
    prompts = [PROMPT, "summer sale sneakers on a yellow background", "ok"]
    seeds = [0, 123456789, 2**63 - 1]
    served = grpc_infer(triton.grpc_url, prompts, seeds)
    local = LocalEngine(model_repo).run(prompts, seeds)
    assert served.tobytes() == local.tobytes()  # byte-identical, not merely close
    loaded = load_generator(small_checkpoint)
    with torch.inference_mode():
        raw = loaded.module.eval()(torch.from_numpy(text_encoder.encode(prompts)),
                                   torch.from_numpy(seeds_to_z(seeds, loaded.z_dim))).numpy()
    ref = to_uint8(raw)
    diff = np.abs(ref.astype(np.int16) - served.astype(np.int16))
    assert diff.max() <= 1, f"max uint8 difference to PyTorch {diff.max()}"


def test_mixed_batch_fails_only_the_bad_requests(triton):
    """Concurrent requests share one dynamic batch; each bad one gets its own INVALID_ARG."""
    import tritonclient.grpc.aio as aio

    from adgen.serving.jobs.client import make_inputs
    from tritonclient.utils import InferenceServerException

    cases = [("good", [PROMPT], [1]), ("long", ["x" * (MAX_PROMPT_BYTES + 1)], [1]),
             ("good", ["blue car"], [2]), ("negative", [PROMPT], [-5]),
             ("utf8", None, [3]), ("good", [PROMPT], [3])]

    def inputs(prompts, seeds):
        if prompts is None:  # raw bytes that are not UTF-8
            inp = make_inputs(["placeholder"], seeds)
            inp[0].set_data_from_numpy(np.array([[b"caf\xe9 \xff"]], dtype=object))
            return inp
        return make_inputs(prompts, seeds)

    async def main():
        async with aio.InferenceServerClient(triton.grpc_url) as c:
            async def one(p, s):
                try:
                    r = await c.infer("adgen", inputs(p, s))
                    return r.as_numpy("IMAGE")
                except InferenceServerException as exc:
                    return exc
            return await asyncio.gather(*(one(p, s) for _, p, s in cases))

    def executions():
        import tritonclient.grpc as grpcclient
        with grpcclient.InferenceServerClient(triton.grpc_url) as c:
            stats = c.get_inference_statistics("adgen", as_json=True)["model_stats"][0]
        return int(stats.get("execution_count", 0)), int(stats.get("inference_count", 0))

    before = executions()
    results = asyncio.run(main())
    after = executions()
    # fewer model executions than requests: good and bad requests shared batches
    assert after[0] - before[0] < len(cases)
    for (kind, _, seeds), res in zip(cases, results):
        if kind == "good":
            assert isinstance(res, np.ndarray) and res.shape == (1, 64, 64, 3)
        else:
            assert isinstance(res, InferenceServerException), kind
            assert "INVALID_ARG" in str(res.status()), (kind, res.status())
    assert "byte limit" in results[1].message() and "UTF-8" in results[4].message()
    assert "got -5" in results[3].message()
    # good results equal what the same inputs give alone
    assert results[5].tobytes() == grpc_infer(triton.grpc_url, [PROMPT], [3]).tobytes()
    assert triton.is_running()


def test_client_fails_over_from_a_dead_url(triton):
    from adgen.serving.jobs.client import AdgenClient, ClientConfig
    from adgen.serving.jobs.triton_server import free_port
    dead = f"127.0.0.1:{free_port()}"
    cfg = ClientConfig(urls=(dead, triton.grpc_url), timeout_s=20, retries=4, backoff_s=0.05)

    async def main():
        async with AdgenClient(cfg) as client:
            outs = [await client.infer([PROMPT], [i]) for i in range(4)]
            return outs, client
    outs, client = asyncio.run(main())
    assert all(url == triton.grpc_url for _, url in outs)
    assert client.calls[dead] >= 1 and client.retried >= 1
    assert outs[1][0].tobytes() == grpc_infer(triton.grpc_url, [PROMPT], [1]).tobytes()


def test_client_gives_one_clear_error_when_no_server_answers():
    from adgen.serving.jobs.client import AdgenClient, ClientConfig, ClientError
    from adgen.serving.jobs.triton_server import free_port
    cfg = ClientConfig(urls=(f"127.0.0.1:{free_port()}",), timeout_s=2, retries=1,
                       backoff_s=0.01)

    async def main():
        async with AdgenClient(cfg) as client:
            await client.infer([PROMPT], [1])
    with pytest.raises(ClientError, match="no server answered after 2 attempts"):
        asyncio.run(main())


# ----------------------------------------------------------------------------- the job

def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "adgen", *args], capture_output=True,
                          text=True, env={**os.environ, "TQDM_DISABLE": "1"})


def manifest(out):
    return [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines() if x]


def test_generate_job_outputs_and_local_engine_identity(triton, model_repo, tmp_path):
    from adgen.serving.jobs.images import read_png
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPT, "id": "apple", "n": 3, "brief": "fruit",
                                   "meta": {"expansion": "offline"}}) + "\n"
                       + json.dumps({"prompt": "blue car", "id": "car", "seed": 42}) + "\n")
    out_t, out_l = tmp_path / "triton", tmp_path / "local"
    r = run_cli("generate", str(prompts), "-o", str(out_t), "-n", "2", "--seed", "9",
                "--url", triton.grpc_url, "--batch-size", "2", "--concurrency", "3")
    assert r.returncode == 0, r.stderr
    r = run_cli("generate", str(prompts), "-o", str(out_l), "-n", "2", "--seed", "9",
                "--engine", "local", "--model", str(model_repo))
    assert r.returncode == 0, r.stderr
    mt, ml = manifest(out_t), manifest(out_l)
    assert sorted(e["custom_id"] for e in mt) == ["apple-0", "apple-1", "apple-2",
                                                  "car-0", "car-1"]
    car = {e["custom_id"]: e for e in mt}
    assert car["car-0"]["seed"] == 42 and car["car-1"]["seed"] == 43
    assert car["car-1"]["path"] == "images/car/car-1-s43.png"
    # same pixels through Triton and in-process, for every image
    assert {e["custom_id"]: e["pixels_sha256"] for e in mt} == \
        {e["custom_id"]: e["pixels_sha256"] for e in ml}
    e = car["apple-0"]
    pixels, text = read_png(out_t / e["path"])
    meta = json.loads(text["adgen"])
    assert meta["prompt"] == PROMPT and meta["brief"] == "fruit" and meta["seed"] == e["seed"]
    assert meta["engine"] == "triton" and meta["expansion"] == "offline"
    assert meta["model"]["sha256"] and meta["model"]["sha256"] == e["model"]["sha256"]
    assert PROMPT in text["parameters"] and str(e["seed"]) in text["parameters"]
    summary = json.loads((out_t / "summary.json").read_text())
    assert summary["images_generated"] == 5 and summary["images_failed"] == 0
    assert summary["images_per_s"] > 0 and summary["latency_ms"]["p99"] >= \
        summary["latency_ms"]["p50"] > 0
    assert (out_t / "contact_sheet.png").is_file()
    assert (out_t / "errors.jsonl").read_text() == ""


def test_resume_after_a_killed_run_writes_nothing_twice(triton, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(6)))
    out = tmp_path / "out"
    args = [sys.executable, "-m", "adgen", "generate", str(prompts), "-o", str(out),
            "-n", "8", "--url", triton.grpc_url, "--batch-size", "1", "--concurrency", "1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if (out / "manifest.jsonl").is_file() and len(manifest(out)) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {e["custom_id"]: e for e in manifest(out)}
    assert 5 <= len(first) < 48, "the run was not killed part-way"
    stamps = {cid: os.stat(out / e["path"]).st_mtime_ns for cid, e in first.items()}
    r = run_cli("generate", str(prompts), "-o", str(out), "-n", "8", "--url", triton.grpc_url)
    assert r.returncode == 0, r.stderr
    entries = manifest(out)
    ids = [e["custom_id"] for e in entries]
    assert len(ids) == len(set(ids)) == 48  # every image once, nothing twice
    for cid, stamp in stamps.items():  # finished images were not rewritten
        assert os.stat(out / first[cid]["path"]).st_mtime_ns == stamp
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_skipped_resume"] == len(first)
    assert summary["images_generated"] == 48 - len(first)
    assert not list(out.rglob("*.tmp"))
    r = run_cli("generate", str(prompts), "-o", str(out), "-n", "8", "--url", triton.grpc_url)
    assert r.returncode == 0 and "0 images generated, 48 already done" in r.stdout


def test_bad_prompt_files(triton, tmp_path):
    good_and_bad = tmp_path / "mixed.jsonl"
    good_and_bad.write_bytes(
        json.dumps({"prompt": PROMPT, "id": "ok"}).encode() + b"\n{broken\n"
        + json.dumps({"prompt": "x" * (MAX_PROMPT_BYTES + 10), "id": "long"}).encode() + b"\n"
        + json.dumps({"prompt": "y", "id": "a/../../b"}).encode() + b"\n")
    out = tmp_path / "out"
    r = run_cli("generate", str(good_and_bad), "-o", str(out), "--url", triton.grpc_url)
    assert r.returncode == 1
    assert "1 images generated" in r.stdout
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["line"], e["file"]) for e in errors] == [(2, str(good_and_bad)),
                                                        (3, str(good_and_bad)),
                                                        (4, str(good_and_bad))]
    assert not (tmp_path / "b").exists() and [p.name for p in (out / "images").iterdir()] == ["ok"]
    for bad, message in [(tmp_path / "nope.txt", "no such file"),
                         (tmp_path / "x.docx", "unknown prompt file type")]:
        if bad.suffix == ".docx":
            bad.write_text("hello")
        r = run_cli("generate", str(bad), "-o", str(tmp_path / "o2"), "--url", triton.grpc_url)
        assert r.returncode == 2 and r.stderr.strip().startswith("error:") and message in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_server_launcher_refuses_a_taken_port_and_a_missing_repository(triton, tmp_path):
    from adgen.serving.jobs.triton_server import ServerConfig, ServerError, TritonServer, free_port
    busy = int(triton.grpc_url.rsplit(":", 1)[1])
    with pytest.raises(ServerError, match=f"gRPC port {busy} on 127.0.0.1 is already in use"):
        TritonServer(ServerConfig(triton.config.repository, grpc_port=busy,
                                  http_port=free_port(), metrics_port=free_port())).start()
    with pytest.raises(ServerError, match="does not exist"):
        TritonServer(ServerConfig(str(tmp_path / "none"))).start()


def test_ensemble_variant_serves_the_same_bytes(triton, small_onnx, text_encoder_dir, tmp_path):
    """The composition measured against the fused model must keep the contract and bytes."""
    from adgen.export.repo import build_repository
    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
    repo = build_repository(tmp_path / "repo", variant="python-ensemble", model=small_onnx,
                            text_encoder=text_encoder_dir, progress=False, upsampler=False)
    assert sorted(p.name for p in repo.iterdir() if p.is_dir()) == [
        "adgen", "generator", "latents", "postprocess", "text_encoder"]
    cfg = ServerConfig(str(repo), grpc_port=free_port(), http_port=free_port(),
                       metrics_port=free_port(), log_file=str(tmp_path / "log"))
    with TritonServer(cfg) as server:
        ensemble = grpc_infer(server.grpc_url, [PROMPT, "blue car"], [5, 6])
    assert ensemble.tobytes() == grpc_infer(triton.grpc_url, [PROMPT, "blue car"], [5, 6]).tobytes()


def test_server_lost_mid_job_then_rerun_completes(lean_repo, tmp_path):
    """Server stops during a job: the rest fail as UNAVAILABLE (exit 1), nothing is lost,
    and the same command finishes the job once a server is back on the same port."""
    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
    cfg = ServerConfig(str(lean_repo), grpc_port=free_port(), http_port=free_port(),
                       metrics_port=free_port(), log_file=str(tmp_path / "log"))
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"prompt {i}\n" for i in range(5)))
    out = tmp_path / "out"
    url = f"127.0.0.1:{cfg.grpc_port}"
    args = [sys.executable, "-m", "adgen", "generate", str(prompts), "-o", str(out),
            "-n", "10", "--url", url, "--batch-size", "1", "--concurrency", "1",
            "--retries", "2", "--timeout", "5"]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    with TritonServer(cfg) as server:
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
                (out / "manifest.jsonl").is_file() and len(manifest(out)) >= 3):
            time.sleep(0.05)
        server.stop()
    stdout, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1
    done = len(manifest(out))
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert done + len(errors) == 50 and 3 <= done < 50
    assert all(e["status"] == "UNAVAILABLE" and e["kind"] == "image" for e in errors), errors[:3]
    with TritonServer(cfg):
        r = subprocess.run(args, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    ids = [e["custom_id"] for e in manifest(out)]
    assert len(ids) == len(set(ids)) == 50
    assert (out / "errors.jsonl").read_text() == ""


def test_job_isolates_an_image_the_server_rejects(triton, tmp_path):
    """A request rejected with INVALID_ARGUMENT is retried image by image: only the bad
    image fails. (The prompt parser would catch this prompt; here it is forced through.)"""
    from adgen.serving.jobs.client import AdgenClient, ClientConfig
    from adgen.serving.jobs.job import ImageTask, JobConfig, Writer, _generate
    from adgen.serving.jobs.prompts import PromptItem

    class NoBar:
        def update(self, n):
            pass
    good = PromptItem("good", PROMPT, 3)
    bad = PromptItem("bad", "x" * (MAX_PROMPT_BYTES + 1), 1)
    tasks = [ImageTask(good, 0, 1), ImageTask(bad, 0, 2), ImageTask(good, 1, 3),
             ImageTask(good, 2, 4)]
    cfg = JobConfig(prompts=("unused.txt",), out=str(tmp_path), batch_size=4,
                    urls=(triton.grpc_url,))
    errors, latencies = [], []

    async def main():
        async with AdgenClient(ClientConfig(urls=(triton.grpc_url,))) as client:
            return await _generate(cfg, client, tasks, lambda m: Writer(tmp_path, "triton", m),
                                   errors, latencies, NoBar())
    result = asyncio.run(main())
    assert result["generated"] == 3 and result["failed"] == 1
    assert [(e["custom_id"], e["status"]) for e in errors] == [("bad-0", "INVALID_ARGUMENT")]
    assert "byte limit" in errors[0]["reason"]
    assert sorted(e["custom_id"] for e in manifest(tmp_path)) == ["good-0", "good-1", "good-2"]
