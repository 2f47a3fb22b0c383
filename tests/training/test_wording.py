"""The composer heads' training wordings: varied, bound to their labels, and apart from the
wordings that measure them (adgen eval's paraphrases, benchmarks.wording's unseen set)."""
from __future__ import annotations

import numpy as np

from adgen.captions import FAMILIES, PARAPHRASE_TEMPLATES
from adgen.training.train_composer import FAMILY_PARAPHRASE, composer_captions
from adgen.training.wording import NEVER_TRAINED, draw_form
from benchmarks import wording

RECORDS = [{"name": "cat face", "aliases": ["kitty"]}, {"name": "red apple", "aliases": []},
           {"name": "green apple", "aliases": []}, {"name": "rocket", "aliases": []}]


def test_no_training_caption_says_what_the_measuring_wordings_say():
    texts, _ = composer_captions(RECORDS, FAMILIES, per_concept=1500, seed=7)
    assert not [t for t in texts if any(p in t for p in NEVER_TRAINED)]
    # ... and every measuring wording is caught by that list, so it is the whole check.
    measuring = [*PARAPHRASE_TEMPLATES, FAMILY_PARAPHRASE, *wording.UNSEEN_TEMPLATES,
                 *wording.UNSEEN_OBJECT_FORMS, *wording.UNSEEN_FAMILY]
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


def test_a_name_with_its_own_colour_is_recoloured_not_doubled():
    texts, labels = composer_captions(RECORDS, FAMILIES, per_concept=400, seed=2)
    apples = [t for t, (c, _, _, o) in zip(texts, labels) if c == 1 and o]
    assert apples and not [t for t in apples if "red apple" in t]
