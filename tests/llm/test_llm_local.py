"""`adgen expand --llm openai` against a real local llama.cpp server (SmolLM2-135M).

The model is tiny, so these tests check the contract rather than its taste: every prompt
that comes back is validated and names a concept the generator knows, or the brief falls
back to the offline expander and says so; structured output is negotiated with the server;
a rerun is served from the cache.
"""
from __future__ import annotations

import json
import time

import pytest

from adgen.prompting.expand import Brief, ExpandConfig, OfflineExpander, run_expand
from adgen.prompting.llm import _SUSPICIOUS_RE, MAX_PROMPT_CHARS, LLMExpander

pytestmark = pytest.mark.llm

BRIEFS = ["Summer sale on running sneakers", "Fresh coffee every morning at our cafe",
          "Hot pizza delivered in 30 minutes"]


def cfg_for(base_url, tmp_path, **kw):
    opts = dict(inputs=(), out=str(tmp_path / "p.jsonl"), k=2, llm="openai",
                base_url=base_url, model="smollm2", timeout=120.0, max_retries=1,
                concurrency=1, cache_dir=str(tmp_path / "cache"))
    opts.update(kw)
    return ExpandConfig(**opts)


def test_local_llm_prompts_are_validated_and_grounded(local_llm, full_vocab, tmp_path,
                                                      monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    briefs = tmp_path / "b.txt"
    briefs.write_text("\n".join(BRIEFS) + "\n")
    cfg = cfg_for(local_llm, tmp_path, inputs=(str(briefs),))
    s = run_expand(cfg, vocab=full_vocab, progress=False)
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert s.prompts == len(rows) == 2 * len(BRIEFS)
    assert s.by_expansion.get("llm", 0) >= 2, s.by_expansion  # the server path really ran
    for r in rows:
        assert r["expansion"] == "llm:smollm2" or r["expansion"].startswith("fallback:")
        assert full_vocab.mentions(r["prompt"]) and r["concepts"]
        assert len(r["prompt"]) <= MAX_PROMPT_CHARS and not _SUSPICIOUS_RE.search(r["prompt"])
    # The rerun is answered from the cache for every brief the LLM expanded.
    start = time.perf_counter()
    again = run_expand(cfg, vocab=full_vocab, progress=False)
    assert again.cache_hits == len({r["brief"] for r in rows if r["expansion"] == "llm:smollm2"})
    assert again.cache_hits >= 1 and time.perf_counter() - start < s.seconds


def test_structured_output_is_negotiated_with_llama_cpp(local_llm, full_vocab, tmp_path,
                                                        monkeypatch):
    """llama-cpp-python refuses response_format json_schema; auto settles on json_object
    (with the schema, which llama.cpp turns into a grammar) and the reply parses."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ex = LLMExpander(full_vocab, OfflineExpander(full_vocab),
                     cfg_for(local_llm, tmp_path, cache=False))
    exp = ex.expand(Brief("b", BRIEFS[0]), 2)
    assert ex._mode in ("json_object", "none")
    assert len(exp.prompts) == 2 and all(full_vocab.mentions(p.prompt) for p in exp.prompts)


def test_chinese_brief_goes_through_the_llm_or_is_reported(local_llm, full_vocab, tmp_path,
                                                           monkeypatch):
    """Offline, a Chinese brief is ungrounded; through the LLM it becomes English prompts
    that are grounded (re-grounded when needed), or the brief is reported, never invented."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    ex = LLMExpander(full_vocab, OfflineExpander(full_vocab),
                     cfg_for(local_llm, tmp_path, cache=False))
    assert OfflineExpander(full_vocab).expand(Brief("zh", "夏季运动鞋大促销"), 2).prompts == ()
    exp = ex.expand(Brief("zh", "夏季运动鞋大促销"), 2)
    if exp.prompts:
        assert all(p.expansion == "llm:smollm2" and full_vocab.mentions(p.prompt)
                   for p in exp.prompts)
    else:
        assert exp.reason.startswith("fallback:") and "ungrounded" in exp.reason
