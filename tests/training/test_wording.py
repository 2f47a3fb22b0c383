"""The composer heads' training wordings: varied, bound to their labels, and apart from the
wordings that measure them (adgen eval's paraphrases, benchmarks.wording's unseen set)."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch

from adgen.captions import COLOR_NAMES, FAMILIES, PARAPHRASE_TEMPLATES
from adgen.training.train_composer import FAMILY_PARAPHRASE, composer_captions
from adgen.training.wording import GRAMMARS, NEVER_TRAINED, draw_form
from benchmarks import wording

RECORDS = [{"name": "cat face", "aliases": ["kitty"]}, {"name": "red apple", "aliases": []},
           {"name": "green apple", "aliases": []}, {"name": "rocket", "aliases": []}]


@pytest.mark.parametrize("grammar", GRAMMARS)
def test_no_training_caption_says_what_the_measuring_wordings_say(grammar):
    texts, _ = composer_captions(RECORDS, FAMILIES, per_concept=1500, seed=7, grammar=grammar)
    assert not [t for t in texts if any(p in t for p in NEVER_TRAINED)]
    # ... and every measuring wording is caught by that list, so it is the whole check.
    measuring = [*PARAPHRASE_TEMPLATES, FAMILY_PARAPHRASE,
                 *(w for wordings in wording.UNSEEN_SETS.values() for t in wordings for w in t)]
    assert all(any(p in m for p in NEVER_TRAINED) for m in measuring)


def test_the_grammar_varies_order_and_binds_each_colour_to_its_word():
    rng = np.random.default_rng(0)
    forms = [draw_form(rng) for _ in range(400)]
    texts = [f.render("rocket", "purple", "teal") for f in forms]
    assert len(set(texts)) > 150
    assert all("purple" in t and "teal" in t and "rocket" in t for t in texts)
    # the background is said before the subject too, not always after it
    assert sum(t.index("teal") < t.index("rocket") for t in texts) > 40
    # a twin shares its form: swapping the two colour words back gives the same caption
    for f, t in zip(forms, texts):
        twin = f.render("rocket", "teal", "purple")
        assert twin.replace("teal", "@").replace("purple", "teal").replace("@", "purple") == t


@pytest.mark.parametrize("grammar, digest", [(1, "3609754f99226db7"), (2, "da3a9662d3f1624f")])
def test_an_older_grammar_still_draws_the_captions_of_its_rounds(grammar, digest):
    """A new version appends to every table; an older version's seed must give the captions
    (and so the cached encodings) the release's rounds on it were trained on. Version 1's
    digest: seeds 2, 3 and 4 on the family dataset drew the captions whose encodings those
    rounds had cached (checked when version 2 was added); version 2's was taken before a
    third version was tried (commit 1165258, not adopted), which left it unchanged."""
    texts, labels = composer_captions(RECORDS, FAMILIES, per_concept=50, seed=2,
                                      grammar=grammar)
    got = hashlib.sha256(json.dumps([texts, labels.tolist()]).encode()).hexdigest()[:16]
    assert got == digest
    other, same = composer_captions(RECORDS, FAMILIES, per_concept=50, seed=2,
                                    grammar=3 - grammar)
    assert other != texts and len(set(other)) > 0.9 * len(other)
    assert np.array_equal(same, labels)   # one seed: the same labels in either version
    with pytest.raises(ValueError, match="grammar"):
        composer_captions(RECORDS, FAMILIES, per_concept=1, grammar=max(GRAMMARS) + 1)


def test_a_word_that_names_another_concept_is_never_a_label_of_this_one():
    """'cat' is an alias of the cat face in the emoji data and the name of the cat: its
    captions must all say the cat, or the heads read "a cat" as either by the wording."""
    records = [{"name": "cat face", "aliases": ["cat", "kitty"]},
               {"name": "cat", "aliases": []}, {"name": "thumbs up", "aliases": ["1"]},
               {"name": "thumbs down", "aliases": ["1"]}]
    texts, labels = composer_captions(records, FAMILIES, per_concept=300, seed=3, grammar=2)
    said = {c: [t for t, lab in zip(texts, labels) if lab[0] == c] for c in range(4)}
    assert not [t for t in said[0] if re.search(r"\bcat\b(?! face)", t)]
    assert [t for t in said[0] if "kitty" in t] and [t for t in said[1] if "cat" in t]
    assert not [t for c in (2, 3) for t in said[c] if re.search(r"\b1\b", t)]


def test_a_name_with_its_own_colour_is_recoloured_not_doubled():
    texts, labels = composer_captions(RECORDS, FAMILIES, per_concept=400, seed=2)
    apples = [t for t, (c, _, _, o) in zip(texts, labels) if c == 1 and o]
    assert apples and not [t for t in apples if "red apple" in t]


@pytest.mark.usefixtures("text_encoder_dir")
def test_the_wording_benchmark_scores_what_the_heads_read(tmp_path):
    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    from tests.training.family_factory import family_dataset
    from tests.training.test_composer import set_heads
    data = family_dataset(tmp_path, n=11)
    torch.manual_seed(0)
    G = build_generator("composer", n_concepts=10, hidden=32, dec_width=4).eval()
    set_heads(G, concept=3, family=G.n_families, color=5, obj=0)   # always the same four reads
    ckpt = save_generator(G, {}, tmp_path / "ckpt")
    assert wording.main([str(ckpt), "--data", str(data), "--items", "60",
                         "--results-dir", str(tmp_path / "res")]) == 0
    rows = json.loads(next((tmp_path / "res").rglob("wording.json")).read_text())["rows"]
    from adgen.training.families import load_families
    ds = load_families(data)
    ds.records[3]["name"] = "red apple"   # a name with a colour word: the colour-named set
    named_texts, named_labels = wording.colour_named(ds.records, len(ds.families))
    assert len(named_texts) == len(COLOR_NAMES) and "red apple" in named_texts[0]
    assert (named_labels[:, 0] == 3).all() and (named_labels[:, 3] == 0).all()
    shared = wording.items(ds.records, ds.families, 60, 0)
    assert [r["wording"] for r in rows][:len(wording.WORDINGS)] == list(wording.WORDINGS)
    for r in rows:   # the share of each set's prompts whose label is the heads' fixed pick
        labels = shared if r["wording"] in wording.WORDINGS else None
        if labels is None:  # the dataset's own colour-named concepts, if it has any
            labels = wording.colour_named(load_families(data).records, len(ds.families))[1]
        assert r["prompts"] == len(labels)
        assert r["concept"] == pytest.approx(np.mean(labels[:, 0] == 3))
        assert r["family"] == pytest.approx(np.mean(labels[:, 1] == len(ds.families)))
        assert r["background"] == pytest.approx(np.mean(labels[:, 2] == 5))
        assert r["object_false"] == 0.0 and r["object_named"] in (0.0, None)
    assert 0 < rows[0]["family"] < 1
