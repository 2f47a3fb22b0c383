"""adgen.prompting.vocab: concept files, the embedding cache, nearest concepts, literal mentions."""
from __future__ import annotations

import json

import numpy as np
import pytest

from adgen.prompting import vocab as vocab_mod
from adgen.prompting.vocab import Concept, Vocabulary, VocabError, concept_phrases, load_concepts

from expand_helpers import write_concepts


class CountingEncoder:
    """The real encoder, counting how many texts it was asked to embed."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.model_dir = inner.model_dir
        self.tokenizer = inner.tokenizer

    def encode(self, texts):
        self.calls += len(texts)
        return self.inner.encode(texts)


def test_load_concepts_reads_records(small_concepts):
    concepts = load_concepts(small_concepts)
    assert concepts[0] == Concept("running shoe", ("athletic shoe",), "Objects", "", "0")
    assert len(concepts) == 28


@pytest.mark.parametrize("line, why", [
    ("{not json", "bad concept record"),
    ('{"aliases": []}', "bad concept record"),
    ('{"name": "", "aliases": []}', "name must be a non-empty string"),
    ('{"name": "x", "aliases": "y"}', "aliases must be a list"),
])
def test_bad_concept_line_names_the_line(tmp_path, line, why):
    path = tmp_path / "c.jsonl"
    path.write_text('{"name": "pizza", "aliases": []}\n' + line + "\n")
    with pytest.raises(VocabError, match=rf"c.jsonl:2: .*{why}"):
        load_concepts(path)


def test_missing_and_empty_concept_files(tmp_path):
    with pytest.raises(VocabError, match="no such concept file"):
        load_concepts(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(VocabError, match="empty"):
        load_concepts(tmp_path / "empty.jsonl")


def test_default_path_prefers_release_model_then_dataset(tmp_path, monkeypatch):
    release = tmp_path / "models" / "adgen-emoji64"
    dataset = tmp_path / "data" / "twemoji64"
    monkeypatch.setattr(vocab_mod, "release_model_dir", lambda: release)
    monkeypatch.setenv("ADGEN_DATA", str(tmp_path / "data"))
    with pytest.raises(VocabError, match="no concept list"):
        vocab_mod.default_concepts_path()
    dataset.mkdir(parents=True)
    write_concepts(dataset / "captions.jsonl")
    assert vocab_mod.default_concepts_path() == dataset / "captions.jsonl"
    release.mkdir(parents=True)
    write_concepts(release / "concepts.jsonl")
    assert vocab_mod.default_concepts_path() == release / "concepts.jsonl"


def test_phrases_drop_code_like_aliases():
    c = Concept("japanese prohibited button", ("u7981", "prohibited"), "Symbols")
    assert concept_phrases(c) == ["japanese prohibited button", "prohibited",
                                  "japanese prohibited button, symbols"]
    assert "1st place medal" in concept_phrases(Concept("1st place medal", ("gold 1",)))


def test_embedding_cache_is_reused_and_keyed_by_file(tmp_path, text_encoder):
    path = write_concepts(tmp_path / "c.jsonl")
    enc = CountingEncoder(text_encoder)
    first = Vocabulary.load(path, encoder=enc, cache_dir=tmp_path / "cache")
    n_phrases = len(first.phrases)
    assert enc.calls == n_phrases
    assert first.embeddings.shape == (n_phrases, 384)
    np.testing.assert_allclose(np.linalg.norm(first.embeddings, axis=1), 1.0, atol=1e-5)
    again = Vocabulary.load(path, encoder=enc, cache_dir=tmp_path / "cache")
    assert enc.calls == n_phrases  # read from the cache, nothing re-embedded
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    # A changed concept file gets its own cache entry.
    path.write_text(path.read_text() + json.dumps({"name": "kite", "aliases": []}) + "\n")
    changed = Vocabulary.load(path, encoder=enc, cache_dir=tmp_path / "cache")
    assert enc.calls == 2 * n_phrases + 1 and changed.concepts[-1].name == "kite"
    assert len(list((tmp_path / "cache").glob("concepts-*.npz"))) == 2


def test_damaged_cache_is_recomputed(tmp_path, text_encoder):
    path = write_concepts(tmp_path / "c.jsonl")
    Vocabulary.load(path, encoder=text_encoder, cache_dir=tmp_path / "cache")
    cache = next((tmp_path / "cache").glob("concepts-*.npz"))
    cache.write_bytes(b"not an npz")
    enc = CountingEncoder(text_encoder)
    v = Vocabulary.load(path, encoder=enc, cache_dir=tmp_path / "cache")
    assert enc.calls == len(v.phrases)
    assert not list((tmp_path / "cache").glob(".concepts-*"))  # no temp files left


def test_nearest_finds_the_concept_behind_a_brief(small_vocab):
    (shoe,), (coffee,) = small_vocab.nearest(["sneakers for joggers", "a fresh cup of coffee"],
                                             top=1)
    assert shoe.concept.name == "running shoe" and shoe.score > 0.4
    assert coffee.concept.name == "hot beverage" and coffee.phrase == "coffee"


def test_mentions_match_whole_words_longest_first(small_vocab):
    names = [c.name for c in small_vocab.mentions("A hot-dog, a T-shirt and a dog face")]
    assert names == ["hot dog", "t-shirt", "dog face"]
    # Generic ad words and colours that are aliases do not claim a concept.
    assert small_vocab.mentions("new arrivals on an orange background") == []
    assert small_vocab.mentions("a category of catalogues") == []
    assert [c.name for c in small_vocab.mentions("one gift for you")] == ["wrapped gift"]


def test_aliases_without_letters_are_not_mentions(tmp_path, text_encoder):
    path = write_concepts(tmp_path / "c.jsonl", [("input numbers", ["1234"], "Symbols"),
                                                  ("hundred points", ["100"], "Symbols")])
    v = Vocabulary.load(path, encoder=text_encoder, cache_dir=tmp_path / "cache")
    assert v.mentions("call 1234 for 100 deals") == []
    assert [c.name for c in v.mentions("hundred points!")] == ["hundred points"]


def test_a_concepts_name_outranks_another_concepts_alias():
    """The emoji data lists 'egg' as an alias of cooking (the pan) and 'cat' of the cat face,
    before the egg and the cat themselves: a word that is a concept's name means it."""
    from adgen.prompting.vocab import literal_names, named_concept
    concepts = [Concept("cooking", ("egg", "frying pan"), "Food", "", "0"),
                Concept("cat face", ("cat",), "Animals", "", "1"),
                Concept("egg", (), "Food", "", "2"), Concept("cat", (), "Animals", "", "3")]
    names = literal_names(concepts)
    assert named_concept("an egg", names) == 2 and named_concept("a cat", names) == 3
    assert named_concept("a frying pan", names) == 0   # aliases still name their concept
