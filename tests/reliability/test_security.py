"""Security promises of docs/design.md §9, tried against the real code paths:
ids never escape the output folder; servers bind 127.0.0.1 unless --host says otherwise
(with a warning); checkpoints never unpickle; a planted API key reaches no log, manifest,
PNG, cache or error message; prompt text is inert in every output format."""
from __future__ import annotations

import ast
import hashlib
import ipaddress
import json
import pickle
import shutil
from pathlib import Path

import pytest

from reliability_helpers import (check_output, cli_env, manifest, run_cli, run_clis,
                                 start_server)

ROOT = Path(__file__).resolve().parents[2]
BAD = ROOT / "tests" / "data" / "bad"
KEY = "sk-adgen-PLANTED-9c41e7b2d05f4a8e"


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# ----------------------------------------------------------------------------- ids

def test_ids_never_escape_the_output_folder(model_repo, tmp_path):
    """Hostile ids (../, /, absolute, backslash, drive letters, ., ..) in .jsonl and .csv,
    next to good ones: nothing is written anywhere but inside <out>/images/<good id>/."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(BAD / "id_escape.jsonl", work / "ids.jsonl")
    (work / "ids.csv").write_text(
        "prompt,id\nfine,csv-fine\nx,../../outside\nx,/tmp/abs\nx,..\nx,sub/dir\n"
        "x,\"..\\\\win\"\nx,.\nx,a..b/../..\n")
    out = work / "out"
    before = files_under(tmp_path)
    r = run_cli("generate", work / "ids.jsonl", work / "ids.csv", "-o", out,
                "--engine", "local", "--model", model_repo, "--threads", 1)
    assert r.returncode == 1, r.stderr  # the hostile lines are per-line errors
    created = files_under(tmp_path) - before
    assert created and all(p.resolve().is_relative_to(out.resolve()) for p in created)
    entries = check_output(out)
    assert {e["id"] for e in entries.values()} == {"esc-ok", "...", "esc-ok-2", "csv-fine"}
    folders = {p.name for p in (out / "images").iterdir()}
    assert folders == {"esc-ok", "...", "esc-ok-2", "csv-fine"}
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert sorted(e["line"] for e in errors if e["file"].endswith("ids.csv")) == \
        [3, 4, 5, 6, 7, 8, 9]


def test_symlinks_planted_in_the_output_folder_are_never_written_through(model_repo,
                                                                          tmp_path):
    """Someone who can write in <out>/images/ plants links: images/<id> -> a folder
    elsewhere, a PNG name -> a file elsewhere, and a stale-looking temp file in the linked
    folder. A rerun (resume) must replace the links with real folders/files, write nothing
    through them, delete nothing through them, and say so."""
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple sticker\na blue car sticker\na green gift box sticker\n")
    out = tmp_path / "out"
    args = ["generate", prompts, "-o", out, "--engine", "local", "--model", model_repo,
            "--threads", 1, "-n", 2]
    fresh = tmp_path / "fresh"  # a link planted before the first run
    fresh.mkdir()
    (fresh / ".bait.png.x.tmp").write_bytes(b"keep me")
    (out / "images").mkdir(parents=True)
    (out / "images" / "line-3").symlink_to(fresh, target_is_directory=True)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "images/line-3 was a symbolic link; replaced it with a folder" in r.stderr
    assert [p.name for p in fresh.iterdir()] == [".bait.png.x.tmp"]  # before: PNGs went here
    first = check_output(out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.png"
    victim.write_bytes(b"not yours")
    bait = elsewhere / ".looks-stale.png.x.tmp"  # matches the stale temp file pattern
    bait.write_bytes(b"keep me")
    # images/line-1 -> elsewhere (the folder itself a link, with a finished-looking copy)
    for e in first.values():
        if e["id"] == "line-1":
            (elsewhere / Path(e["path"]).name).write_bytes((out / e["path"]).read_bytes())
    shutil.rmtree(out / "images" / "line-1")
    (out / "images" / "line-1").symlink_to(elsewhere, target_is_directory=True)
    # images/line-2/<png> -> a file elsewhere
    png2 = next(out / e["path"] for e in first.values() if e["id"] == "line-2")
    png2.unlink()
    png2.symlink_to(victim)
    before = {p: p.read_bytes() for p in elsewhere.iterdir()}

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "images/line-1 was a symbolic link; replaced it with a folder" in r.stderr
    assert {p: p.read_bytes() for p in elsewhere.iterdir()} == before  # nothing written
    assert not (out / "images" / "line-1").is_symlink() and not png2.is_symlink()
    done = {e["custom_id"]: e for e in manifest(out)}  # a redone image's later line wins
    assert set(done) == set(first)
    for e in done.values():
        f = out / e["path"]
        assert f.is_file() and hashlib.sha256(f.read_bytes()).hexdigest() == e["sha256"]
    links = [p for p in out.rglob("*") if p.is_symlink()]
    assert not links, links
    assert {c: e["pixels_sha256"] for c, e in done.items()} == \
        {c: e["pixels_sha256"] for c, e in first.items()}  # the same images, rewritten
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_generated"] == 3 and summary["images_skipped_resume"] == 3

    # A manifest that is a link is refused, not appended through.
    (out / "manifest.jsonl").rename(tmp_path / "manifest.real")
    (out / "manifest.jsonl").symlink_to(tmp_path / "manifest.real")
    (out / "images" / "line-3").rename(tmp_path / "line-3.moved")  # leave work to do
    size = (tmp_path / "manifest.real").stat().st_size
    r = run_cli(*args)
    assert r.returncode == 2 and "manifest.jsonl is a symbolic link" in r.stderr, r.stderr
    assert (tmp_path / "manifest.real").stat().st_size == size


# ----------------------------------------------------------------------------- binding

def _listening(port: int) -> set[str]:
    """Local addresses of LISTEN sockets on `port`, from /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:
                continue
            # hex of 32-bit words in host (little-endian) order
            raw = b"".join(bytes.fromhex(addr[i:i + 8])[::-1] for i in range(0, len(addr), 8))
            ip = ipaddress.ip_address(raw)
            if ip.version == 6 and ip.ipv4_mapped:  # gRPC listens on ::ffff:127.0.0.1
                ip = ip.ipv4_mapped
            found.add(str(ip))
    return found


@pytest.mark.triton
def test_the_local_server_listens_on_loopback_only(triton):
    for port in (triton.config.grpc_port, triton.config.http_port, triton.config.metrics_port):
        assert _listening(port) == {"127.0.0.1"}, (port, _listening(port))


def test_serve_binds_loopback_by_default_and_warns_for_other_hosts(tmp_path):
    hosts = (("0.0.0.0", True), ("10.1.2.3", True), ("my-host", True),
             ("localhost", False), ("::1", False), ("127.0.0.2", False))
    dry_run = ("serve", "--repository", tmp_path, "--no-build", "--dry-run")
    r, *runs = run_clis(dry_run, *((*dry_run, "--host", host) for host, _ in hosts))
    assert r.returncode == 0 and r.stderr == ""
    command = json.loads(r.stdout)["command"]
    for flag in ("--grpc-address", "--http-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in command
    for (host, warns), r in zip(hosts, runs, strict=True):
        assert r.returncode == 0
        assert ("warning: --host" in r.stderr) is warns, (host, r.stderr)
        assert f"--grpc-address={host}" in json.loads(r.stdout)["command"]


# ----------------------------------------------------------------------------- pickles

class _Planted:
    """Unpickling this creates the marker file: the proof that something unpickled."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_files(folder: Path, marker: Path, good_config: Path) -> list[Path]:
    import torch
    paths = []
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):  # 0/1 are text-like, 2-5 binary
        ckpt = folder / f"proto{proto}"
        ckpt.mkdir()
        (ckpt / "generator.safetensors").write_bytes(pickle.dumps(_Planted(marker), proto))
        shutil.copy(good_config, ckpt / "config.json")
        paths.append(ckpt)
    zipped = folder / "torchsave"
    zipped.mkdir()
    torch.save({"weights": _Planted(marker)}, zipped / "generator.safetensors")
    shutil.copy(good_config, zipped / "config.json")
    paths.append(zipped)
    for name in ("evil.pt", "evil.pth", "evil.ckpt", "evil.pkl", "evil.bin"):
        torch.save({"weights": _Planted(marker)}, folder / name)
        paths.append(folder / name)
    return paths


def test_checkpoints_never_unpickle(small_checkpoint, tmp_path):
    from adgen.training.checkpoint import CheckpointError, load_generator, load_tensors
    marker = tmp_path / "UNPICKLED"
    paths = _pickle_files(tmp_path, marker, small_checkpoint / "config.json")
    pickle.loads(pickle.dumps(_Planted(marker)))  # the payload is live ...
    assert marker.exists()
    marker.unlink()  # ... so from here on its absence means nothing unpickled it
    for path in paths:
        with pytest.raises(CheckpointError):
            load_generator(path)
        weights = path / "generator.safetensors" if path.is_dir() else path
        with pytest.raises(CheckpointError):
            load_tensors(weights)  # the training-state loader (train --resume)
    cli = paths[:2] + paths[-5:-4]  # the CLI path: one clear line, exit 2
    for r in run_clis(*(("export", "onnx", p, "-o", tmp_path / f"onnx-{p.name}") for p in cli)):
        assert r.returncode == 2 and r.stderr.startswith("error: "), r.stderr[-500:]
        assert len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()


def test_no_code_path_can_unpickle():
    """Static guard: no pickle/marshal/joblib/dill loads, no torch.load, no np.load with
    allow_pickle=True, no yaml.load without a safe loader anywhere in the packages."""
    banned_calls = {("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"),
                    ("joblib", "load"), ("dill", "load"), ("dill", "loads"),
                    ("torch", "load"), ("shelve", "open"), ("yaml", "load"),
                    ("yaml", "unsafe_load")}
    hits = []
    for package in ("adgen", "serving", "prompting", "training", "export", "benchmarks",
                    "triton_models"):
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                    continue
                owner = node.func.value
                name = owner.id if isinstance(owner, ast.Name) else \
                    owner.attr if isinstance(owner, ast.Attribute) else ""
                call = (name, node.func.attr)
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if call in banned_calls:
                    hits.append(f"{where} {name}.{node.func.attr}")
                for kw in node.keywords:
                    if kw.arg == "allow_pickle" and not (
                            isinstance(kw.value, ast.Constant) and kw.value.value is False):
                        hits.append(f"{where} allow_pickle={ast.unparse(kw.value)}")
    assert not hits, hits


# ----------------------------------------------------------------------------- API key

def _leaks(text_or_bytes) -> bool:
    data = text_or_bytes.encode() if isinstance(text_or_bytes, str) else text_or_bytes
    return KEY.encode() in data or KEY[-16:].encode() in data


@pytest.mark.triton
def test_a_planted_api_key_reaches_no_output_log_cache_or_error(lean_repo, expand_env,
                                                                 key_echoing_error, seed_vocab,
                                                                 tmp_path):
    """OPENAI_API_KEY is set for every process (the LLM endpoint, tritonserver, expand,
    generate); the LLM even echoes it in a 401 and a 500. Afterwards the key is in no file
    under the test folder (outputs, manifests, PNG text chunks, caches, the server log)
    and in no stdout/stderr - including the error paths."""
    from expand_helpers import ScriptedLLM, chat_body

    from adgen.serving.jobs.images import read_png
    from adgen.serving.jobs.triton_server import free_port
    briefs, concepts, env = expand_env
    env = {**env, "OPENAI_API_KEY": KEY}
    # generate grounds prompts against the release concepts: their cached embeddings are
    # copied in (scanned below like every file); expand still writes its own vocab cache
    seed_vocab(env["ADGEN_ARTIFACTS"])
    llm = ScriptedLLM()

    def reply(payload):
        user = payload["messages"][-1]["content"]
        return key_echoing_error(user, KEY, on_401="valentine", on_500="pizza") or \
            (200, chat_body(json.dumps({"prompts": [
                "a running shoe, flat sticker style, on a teal background"]})))
    llm.default = reply
    llm.thread.start()
    server = start_server(lean_repo, tmp_path / "server.log", env={"OPENAI_API_KEY": KEY})
    outputs = []
    try:
        prompts = tmp_path / "prompts.jsonl"
        outputs.append(run_cli("expand", briefs, "-o", prompts, "--llm", "openai", "--model",
                               "m", "--base-url", llm.base_url, "--concepts", concepts,
                               "--max-retries", 0, "-q", env=env))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
        assert llm.chat_requests() and all(
            r["headers"].get("authorization") == f"Bearer {KEY}" for r in llm.chat_requests())
        # the rest read what expand wrote and nothing of each other's: run side by side
        dead = f"127.0.0.1:{free_port()}"
        outputs += run_clis(
            ("generate", prompts, "-o", tmp_path / "out-triton", "--url", server.grpc_url),
            ("generate", prompts, "-o", tmp_path / "out-local", "--engine", "local",
             "--model", lean_repo),
            # error paths: no server answers; the LLM endpoint is down
            ("generate", prompts, "-o", tmp_path / "out-dead", "--url", dead, "--retries", 0,
             "--timeout", 2),
            ("expand", briefs, "-o", tmp_path / "p2.jsonl", "--llm", "openai", "--base-url",
             f"http://{dead}/v1", "--concepts", concepts, "--max-retries", 0, "--no-cache",
             "-q"), env=env)
        triton_run, local_run, dead_run, expand_down = outputs[1:]
        assert triton_run.returncode == 0, triton_run.stderr
        assert local_run.returncode == 0, local_run.stderr
        assert dead_run.returncode != 0
        assert expand_down.returncode == 0, expand_down.stderr
    finally:
        assert server.stop() == 0
        llm.httpd.shutdown()
        llm.httpd.server_close()
    for r in outputs:
        assert not _leaks(r.stdout) and not _leaks(r.stderr), r.args
    scanned = 0
    for path in files_under(tmp_path):
        if path.is_symlink():
            continue  # the linked text encoder is not an output
        data = path.read_bytes()
        scanned += 1
        assert not _leaks(data), path
        if path.suffix == ".png":
            _, text = read_png(path)  # decoded text chunks, even if compressed
            assert not any(_leaks(v) for v in text.values()), path
    assert scanned >= 10 and (tmp_path / "server.log").stat().st_size > 0
    rows = [json.loads(x) for x in prompts.read_text().splitlines()]
    assert {r["expansion"] for r in rows} >= {"fallback:http-401", "fallback:http-500"}


# ----------------------------------------------------------------------------- prompts

HOSTILE = [
    "<script>alert('x')</script> a red apple",
    "<img src=x onerror=alert(1)> & &amp; </title></html>",
    '", "custom_id": "evil-0", "path": "../../etc/passwd", "x": "',
    "$(touch MARKER) `touch MARKER` ; touch MARKER #",
    "{0} {prompt} {__class__} %s %n %(x)s {{}}",
    "\u202eelppa der a (right-to-left override)",
    "![x](http://evil.example/x.png) [link](javascript:alert(1))",
    "../../../../etc/passwd as plain text",
    "Robert'); DROP TABLE images;--",
    "\u00e9\u00e8 \u4e2d\u6587 \U0001F34E emoji and accents",
    "ends with a backslash \\",
]


def test_prompt_text_is_inert_in_every_output_format(model_repo, tmp_path):
    from adgen.serving.jobs.images import read_png
    marker = tmp_path / "MARKER"
    prompts = tmp_path / "hostile.jsonl"
    texts = [h.replace("MARKER", str(marker)) for h in HOSTILE]
    prompts.write_text("".join(json.dumps({"prompt": t, "id": f"h{i}", "brief": t}) + "\n"
                               for i, t in enumerate(texts)), encoding="utf-8")
    out = tmp_path / "out"
    r = run_cli("generate", prompts, "-o", out, "--engine", "local", "--model", model_repo,
                "--threads", 1, env=cli_env())
    assert r.returncode == 0, r.stderr
    assert not marker.exists()  # nothing was handed to a shell
    for t in texts:
        assert t not in r.stdout and t not in r.stderr  # prompts are not echoed
    entries = check_output(out, {f"h{i}-0" for i in range(len(texts))})
    keys = None
    for i, t in enumerate(texts):
        e = entries[f"h{i}-0"]
        keys = keys or set(e)
        assert set(e) == keys and e["prompt"] == t and e["brief"] == t
        assert e["path"].startswith(f"images/h{i}/h{i}-0-s")
        _, chunks = read_png(out / e["path"])
        assert set(chunks) == {"parameters", "adgen"}
        assert "\n" not in chunks["parameters"] and chunks["parameters"].startswith(t + " | seed: ")
        meta = json.loads(chunks["adgen"])
        assert meta["prompt"] == t and meta["custom_id"] == f"h{i}-0"
    assert "evil-0" not in entries and len(entries) == len(texts)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images_generated"] == len(texts)
    assert read_png(out / "contact_sheet.png")[0].ndim == 3  # text drawn as pixels only
    markup = [p for p in out.rglob("*") if p.suffix.lower() in (".html", ".htm", ".svg", ".md")]
    for page in markup:  # none today; if one is added, the prompt must be escaped in it
        assert "<script>" not in page.read_text(encoding="utf-8"), page
