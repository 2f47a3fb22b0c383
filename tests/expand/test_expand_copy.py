"""Ad copy through `adgen expand`: the LLM's structured copy validated (fallback to the
offline rules per prompt), copy written to prompts.jsonl on both paths, the schema asked."""
from __future__ import annotations

import json

from expand_helpers import chat_body
from adgen.prompting.expand import Brief, ExpandConfig, OfflineExpander, run_expand
from adgen.prompting.llm import LLMExpander, response_format


def expander(vocab, server, tmp_path, **kw):
    cfg = ExpandConfig(inputs=(), out="x.jsonl", llm="openai", base_url=server.base_url,
                       model="test-model", max_retries=0, backoff=0.01, timeout=5.0,
                       cache_dir=str(tmp_path / "cache"), structured="json_schema", k=2, **kw)
    return LLMExpander(vocab, OfflineExpander(vocab), cfg)


def test_llm_copy_is_validated_per_prompt(small_vocab, llm_http, tmp_path, no_key):
    good = {"prompt": "a running shoe, flat sticker style, on a teal background",
            "headline": "Run into summer", "cta": "Shop now"}
    bad = {"prompt": "a running shoe, flat sticker style, on a navy background",
           "headline": "Visit <a href=x>our shop</a>", "cta": "Click"}
    llm_http.push((200, chat_body(json.dumps({"prompts": [good, bad]}))))
    exp = expander(small_vocab, llm_http, tmp_path).expand(
        Brief("b", "summer sale on running sneakers"), 2)
    assert exp.prompts[0].copy == {"headline": "Run into summer", "cta": "Shop now"}
    assert exp.prompts[0].meta["copy_source"] == "llm"
    assert exp.prompts[1].copy is None  # the offline rules write it (to_records)
    assert exp.prompts[1].meta["copy_source"] == "fallback:headline-unsafe"
    schema = llm_http.chat_requests()[0]["json"]["response_format"]["json_schema"]["schema"]
    item = schema["properties"]["prompts"]["items"]
    assert item["required"] == ["prompt", "headline", "cta"]
    assert item["properties"]["headline"]["maxLength"] == 40
    assert item["properties"]["cta"]["maxLength"] == 18
    assert response_format("json_object", 1)["schema"]["properties"]["prompts"]["items"] == item


def test_chinese_brief_keeps_chinese_copy(small_vocab, llm_http, tmp_path, no_key):
    reply = [{"prompt": "a running shoe, flat sticker style, on a red background",
              "headline": "夏季运动鞋大促销", "cta": "立即购买"},
             {"prompt": "a running shoe, flat sticker style, on a yellow background",
              "headline": "Summer sneaker sale", "cta": "Shop now"}]  # wrong language
    llm_http.push((200, chat_body(json.dumps({"prompts": reply}, ensure_ascii=False))))
    exp = expander(small_vocab, llm_http, tmp_path).expand(Brief("b", "夏季运动鞋大促销"), 2)
    assert exp.prompts[0].copy == {"headline": "夏季运动鞋大促销", "cta": "立即购买"}
    assert exp.prompts[1].meta["copy_source"] == "fallback:headline-language"


def test_prompts_file_has_copy_on_both_paths(small_vocab, llm_http, tmp_path, no_key):
    briefs = tmp_path / "b.txt"
    briefs.write_text("pizza delivery in 30 minutes, friday night special\n"
                      "夏季运动鞋大促销\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    run_expand(ExpandConfig(inputs=(str(briefs),), out=str(out), k=2), vocab=small_vocab,
               progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows and all(r["brief"].startswith("pizza") for r in rows)  # zh: ungrounded offline
    assert rows[0]["copy"] == {"headline": "Pizza delivery in 30 minutes", "cta": "Order now"}
    assert rows[1]["copy"]["cta"] == "Get it delivered"
    assert rows[0]["meta"]["copy_source"] == "rules" and rows[0]["meta"]["copy_lang"] == "en"
    llm_http.default = (200, chat_body(json.dumps({"prompts": [
        {"prompt": "a running shoe, flat sticker style, on a red background",
         "headline": "夏季大促销", "cta": "立即购买"}]}, ensure_ascii=False)))
    run_expand(ExpandConfig(inputs=(str(briefs),), out=str(out), k=1, llm="openai",
                            base_url=llm_http.base_url, model="test-model", max_retries=0,
                            cache=False, structured="none"), vocab=small_vocab, progress=False)
    rows = {json.loads(x)["brief"]: json.loads(x) for x in out.read_text().splitlines()}
    assert rows["夏季运动鞋大促销"]["copy"] == {"headline": "夏季大促销", "cta": "立即购买"}
