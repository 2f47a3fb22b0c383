"""Expansion keeps the ad's meaning: a prohibition, warning or mourning symbol ("no mobile
phones", warning, skull, coffin, ...) reaches a prompt only when the brief asks for it, and
prompts read as English ("a 'no smoking' sign", never "a no smoking").

Checked on the whole release concept list, every brief shipped in examples/ and the labelled
set tests/data/briefs_negation.jsonl ({"brief", "asks": the guarded concepts it asks for}),
offline and through the LLM path against a scripted OpenAI-compatible server."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from expand_helpers import prompts_reply
from adgen.paths import release_model_dir, resource_dir
from adgen.prompting.expand import Brief, ExpandConfig, OfflineExpander, read_briefs
from adgen.prompting.llm import LLMExpander, system_prompt
from adgen.prompting.vocab import GUARDED, guard_kind, load_concepts, prompt_caption, \
    prompt_name, takes_article

LABELLED = Path(__file__).resolve().parent.parent / "data" / "briefs_negation.jsonl"
PHONE_BRIEF = "new smartphone pre-order campaign on a navy background"

# Words that mark a concept as a prohibition, a negated state, a warning or a mourning
# symbol, read in names and aliases of the concept list.
NEGATIVE_RE = re.compile(r"^no\b|\bno (?!evil\b|mouth\b|mail\b)\w+|\bprohibit|\bforbid|"
                         r"\bwarning\b|\bhazard|radioactive|\bskull\b|coffin|funeral|\burn\b|"
                         r"headstone|tombstone|crossbones|\bslash\b|\bmuted?\b|\boff$|"
                         r"gesturing no|cross mark|\bsos\b|\bstop sign\b|rotating light")
# Concepts the words above catch that are no such symbol (reviewed one by one).
NOT_NEGATIVE = {
    "hourglass not done": "an hourglass with sand still running",
    "open mailbox with lowered flag": "a mailbox",
}


def labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def example_briefs() -> list[str]:
    files = sorted(resource_dir("adgen.examples").glob("*.txt"))
    briefs, _ = read_briefs(files)
    return [b.text for b in briefs]


def test_every_negative_concept_of_the_release_list_is_guarded():
    concepts = load_concepts(release_model_dir() / "concepts.jsonl")
    names = {c.name for c in concepts}
    assert set(GUARDED) <= names  # no entry of the table is a typo
    caught = [c.name for c in concepts
              if NEGATIVE_RE.search(" | ".join((c.name,) + c.aliases))]
    unguarded = [n for n in caught if guard_kind(n) is None and n not in NOT_NEGATIVE]
    assert not unguarded
    assert len(caught) >= 25  # the words do find the "no ..." signs and the rest


def test_a_later_concept_list_is_guarded_by_the_name_rules():
    assert guard_kind("no swimming") == "prohibition"
    assert guard_kind("dog with slash") == "prohibition"
    assert guard_kind("skull with roses") == "prohibition"
    assert guard_kind("mobile phone") is None and guard_kind("notebook") is None


def test_the_labelled_set_is_big_and_covers_both_sides():
    rows = labelled()
    assert len(rows) >= 50
    assert sum(bool(r["asks"]) for r in rows) >= 15 and sum(not r["asks"] for r in rows) >= 30


def test_asked_for_matches_the_labels(full_vocab):
    wrong = {r["brief"]: sorted(full_vocab.asked_for(r["brief"])) for r in labelled()
             if full_vocab.asked_for(r["brief"]) != set(r["asks"])}
    assert not wrong


def _guarded_in(vocab, prompt: str) -> set[str]:
    return {c.name for c in vocab.mentions(prompt) if guard_kind(c.name)}


def test_offline_prompts_carry_no_guarded_concept_unless_asked(full_vocab):
    expander = OfflineExpander(full_vocab)
    cases = [(b, set()) for b in example_briefs()] + \
        [(r["brief"], set(r["asks"])) for r in labelled()]
    assert len(cases) >= 70
    leaks, used = {}, set()
    for i, (text, asks) in enumerate(cases):
        for p in expander.expand(Brief(f"b{i}", text), 4).prompts:
            found = {c for c in p.concepts if guard_kind(c)} | _guarded_in(full_vocab, p.prompt)
            used |= found
            if found - asks:
                leaks[text] = (p.prompt, sorted(found - asks))
    assert not leaks
    assert {"no smoking", "no mobile phones", "biohazard"} <= used  # asked for: given


def test_the_demo_phone_brief_gives_a_phone(full_vocab):
    exp = OfflineExpander(full_vocab).expand(Brief("phone", PHONE_BRIEF), 3)
    assert [p.concepts for p in exp.prompts] == [("mobile phone",)] * 3
    assert all(p.prompt.startswith("a mobile phone,") and "navy" in p.prompt
               for p in exp.prompts)


def test_prompts_read_as_english(full_vocab):
    expander = OfflineExpander(full_vocab)
    briefs = example_briefs() + [r["brief"] for r in labelled()]
    made = [p for i, b in enumerate(briefs) for p in expander.expand(Brief(f"b{i}", b), 3).prompts]
    prompts = [p.prompt for p in made]
    assert not [p for p in prompts if re.search(r"\ban? no\b|\ban? warning,| s ", p)]
    assert "a 'no smoking' sign, flat sticker style" in " ".join(prompts)
    # no "a" before a plural or uncountable name ("a ballet shoes", "a potable water")
    plural = [p for p in made if not takes_article(prompt_name(p.concepts[0]))]
    assert plural and not [p.prompt for p in plural if re.match(r"an? ", p.prompt)]
    assert prompt_name("no mobile phones") == "'no mobile phones' sign"
    assert prompt_name("woman s hat") == "woman's hat" and prompt_name("apple") == "apple"
    assert prompt_caption("fireworks", "green") == \
        "fireworks, flat sticker style, on a green background"
    assert prompt_caption("bus", "red").startswith("a bus,")
    assert prompt_caption("people with bunny ears", "red").startswith("people with")
    assert prompt_caption("umbrella with rain drops", "red").startswith("an umbrella with")


def llm_expander(vocab, server, tmp_path):
    cfg = ExpandConfig(inputs=(), out="x.jsonl", llm="openai", base_url=server.base_url,
                       model="test-model", max_retries=1, backoff=0.01, timeout=5.0,
                       cache_dir=str(tmp_path / "cache"), structured="none", k=2)
    return LLMExpander(vocab, OfflineExpander(vocab), cfg)


def test_llm_instructions_carry_the_rule():
    text = system_prompt(3, ["mobile phone"])
    assert "Never use a prohibition, warning or mourning symbol" in text
    assert "unless the brief itself asks for one" in text


@pytest.mark.parametrize("reply", [
    "a no mobile phones, flat sticker style, on a navy background",
    "a mobile phone next to a 'no mobile phones' sign on a navy background",
    "a warning sign and a skull, flat sticker style, on a navy background",
])
def test_llm_replies_with_an_unasked_symbol_never_pass(full_vocab, llm_http, tmp_path, no_key,
                                                       reply):
    llm_http.push(prompts_reply(reply, reply))
    exp = llm_expander(full_vocab, llm_http, tmp_path).expand(Brief("b", PHONE_BRIEF), 2)
    assert exp.prompts
    for p in exp.prompts:
        assert not {c for c in p.concepts if guard_kind(c)}
        assert not _guarded_in(full_vocab, p.prompt), p.prompt
    # what the LLM was handed: the brief's concepts less the symbols it did not ask for
    user = llm_http.chat_requests()[0]["json"]["messages"][1]["content"]
    assert "mobile phone" in user and "no mobile phones" not in user


def test_llm_keeps_a_symbol_the_brief_asks_for(full_vocab, llm_http, tmp_path, no_key):
    llm_http.push(prompts_reply("a no smoking, flat sticker style, on a red background",
                                "no smoking"))
    exp = llm_expander(full_vocab, llm_http, tmp_path).expand(
        Brief("b", "no smoking sign for the hotel terrace"), 2)
    assert [p.concepts for p in exp.prompts] == [("no smoking",)] * 2
    # the reply's own wording, made English; a bare name gets the caption form
    assert exp.prompts[0].prompt == "a 'no smoking' sign, flat sticker style, on a red background"
    assert exp.prompts[1].prompt.startswith("a 'no smoking' sign, flat sticker style")
