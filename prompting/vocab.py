"""The generator's vocabulary: the concepts it was trained on, and their MiniLM embeddings.

A GAN only knows its training concepts, so prompt expansion is grounded here. Concepts
come from the release model's ``concepts.jsonl`` (falling back to the dataset's
``captions.jsonl``); each concept is embedded through several phrases (its name, its
aliases, and "name, category") and scores a query by its best phrase. The phrase
embeddings are cached under ``artifacts/vocab/`` keyed by the concept file's sha256, the
text encoder's hash and the phrase-building version, so a changed file or encoder
re-embeds and an unchanged one costs a file read.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from adgen.atomic import atomic_file
from adgen.captions import CANONICAL_TEMPLATE, COLOR_NAMES, article, caption
from adgen.errors import AdgenError
from adgen.paths import artifacts_dir, data_dir, release_model_dir
from adgen.paths import sha256_file as _sha256
from adgen.serving.runtime.text import TextEncoder

PHRASE_VERSION = 1  # bump when the phrases built per concept change (invalidates caches)

# Aliases that are ordinary words in ad copy or colour names: matching them literally would
# claim a concept that nobody asked for ("new", "free", "orange"). Names always count.
_GENERIC_ALIASES = frozenset({
    "new", "free", "cool", "top", "end", "back", "soon", "up", "ok", "on", "sos", "vs", "id",
    "date", "art", "satisfied", "relaxed", "question", "exclamation", "symbols", "mega",
    "shopping", "sound", "chart", "office", "calling", "secret", "congratulations", "accept",
    "parking", "loop", "flags", "feet", "hand", "fist", "wave", "boom", "anger", "dash",
    "sweat", "joy", "smile", "grin", "cry", "sleeping", "thinking", "worried", "angry",
    "birthday", "pound", "metal", "mask", "bath", "scream", "tada",
    # keycap aliases: numbers are everywhere in ad copy ("two for one")
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "hash", "asterisk",
})
_COLOUR_WORDS = frozenset(COLOR_NAMES) | {
    "grey", "blue", "violet", "gold", "golden", "cream", "tan", "turquoise", "silver", "lime",
    "magenta", "orange", "olive", "peach", "coral", "rose",
}


# Concepts that say "don't", "danger" or "death" - prohibition signs, muted/off states,
# hazard and warning signs, mourning symbols, insults, tobacco - turn an ad against its own
# product (a phone ad showing "no mobile phones"). They are never chosen for a brief unless
# it asks for one: by the concept's name or alias, by one of its words below, or (for a
# "no ..." sign) by "no <one of its words>" said as a rule (_NO_RULE_RE: "no phones at
# dinner" asks for "no mobile phones", "no phone contract" does not).
# name -> (kind, words in a brief that ask for it).
GUARDED: dict[str, tuple[str, tuple[str, ...]]] = {
    "no entry": ("prohibition", ("do not enter", "no access", "entry forbidden", "keep out")),
    "prohibited": ("prohibition", ("prohibition", "forbidden", "not allowed", "banned")),
    "no mobile phones": ("prohibition", ("phone free", "switch off your phone")),
    "no smoking": ("prohibition", ("non smoking", "nonsmoking", "smoke free", "quit smoking",
                                   "stop smoking")),
    "no littering": ("prohibition", ("litter", "littering", "keep it clean")),
    "no bicycles": ("prohibition", ("no bikes", "no cycling")),
    "no pedestrians": ("prohibition", ("no walking",)),
    "no one under eighteen": ("prohibition", ("adults only", "age restricted", "over 18",
                                              "18 plus", "eighteen")),
    "japanese prohibited button": ("prohibition", ("prohibition", "forbidden")),
    "japanese no vacancy button": ("prohibition", ("fully booked", "sold out")),
    "japanese not free of charge button": ("prohibition", ("not free", "paid only")),
    "stop sign": ("prohibition", ("traffic sign", "road safety", "driving school")),
    "cross mark": ("prohibition", ("wrong", "incorrect", "mistake", "reject", "cancel")),
    "cross mark button": ("prohibition", ("wrong", "incorrect", "mistake", "reject",
                                          "cancel")),
    "person gesturing no": ("prohibition", ("say no", "refuse", "refusal")),
    "woman gesturing no": ("prohibition", ("say no", "refuse", "refusal")),
    "man gesturing no": ("prohibition", ("say no", "refuse", "refusal")),
    "bell with slash": ("negation", ("mute", "silent", "silence", "do not disturb",
                                     "notifications off")),
    "mobile phone off": ("negation", ("phone off", "switch off", "turn off", "offline",
                                      "digital detox", "silent")),
    "muted speaker": ("negation", ("mute", "muted", "silent", "silence", "sound off")),
    "warning": ("warning", ("caution", "hazard", "hazardous", "danger", "dangerous",
                            "safety sign")),
    "radioactive": ("warning", ("radiation", "nuclear")),
    "biohazard": ("warning", ("biological hazard", "infectious", "lab safety")),
    "skull and crossbones": ("warning", ("poison", "poisonous", "toxic", "pirate",
                                         "pirates")),
    "sos button": ("warning", ("sos", "emergency", "rescue", "distress")),
    "police car light": ("warning", ("police", "emergency", "siren", "alarm")),
    "skull": ("mourning", ("halloween", "day of the dead", "skeleton", "spooky", "pirate",
                           "pirates")),
    "coffin": ("mourning", ("funeral", "vampire", "dracula", "undertaker")),
    "funeral urn": ("mourning", ("funeral", "cremation", "memorial", "ashes")),
    "headstone": ("mourning", ("cemetery", "grave", "gravestone", "tombstone", "graveyard",
                               "memorial")),
    "middle finger": ("offensive", ()),
    "pile of poo": ("offensive", ("poo", "poop")),
    "face with symbols on mouth": ("offensive", ("cursing", "swearing")),
    # a smoke detector or a smoke-free restaurant must not get a cigarette
    "cigarette": ("hazard", ("cigarettes", "tobacco", "cigar", "vape", "vaping", "smoker",
                             "smokers")),
}
# A concept list of another version is guarded by these name rules too ("no ..." signs).
_GUARDED_NAME_RE = re.compile(r"^no\b|\bprohibited\b|\bwith slash\b|\bgesturing no\b|"
                              r"\bwarning\b|\bbiohazard\b|\bradioactive\b|\bcoffin\b|"
                              r"\bfuneral\b|\bheadstone\b|\bskull\b")


_NO_RULE_RE = re.compile(r"\bno ([a-z]+)(?=$|[^a-z ]| (?:sign|signs|zone|zones|area|allowed|"
                         r"policy|rules?|please|at|in|on|during|inside|here|beyond|after|"
                         r"before|while)\b)")


def guard_kind(name: str) -> str | None:
    """'prohibition', 'negation', 'warning', 'mourning', 'offensive' or 'hazard' for a
    concept an ad gets only when its brief asks for it; None for every other concept."""
    key = name.strip().lower()
    if key in GUARDED:
        return GUARDED[key][0]
    return "prohibition" if _GUARDED_NAME_RE.search(key) else None


# Sign concepts whose bare name is an adjective or a verb ("a warning" is not a picture).
_SIGN_NAMES = {"warning": "warning sign", "radioactive": "radioactive sign",
               "biohazard": "biohazard sign", "prohibited": "'prohibited' sign"}


def prompt_name(name: str) -> str:
    """How a concept is named in a prompt, as English: a "no ..." concept is a sign
    ("a 'no smoking' sign", never "a no smoking"), "warning" a warning sign, and a
    possessive keeps its apostrophe ("woman s hat" -> "woman's hat"); the rest as named."""
    key = name.strip()
    if re.match(r"no\b", key.lower()):
        return f"'{key}' sign"
    if key.lower() in _SIGN_NAMES:
        return _SIGN_NAMES[key.lower()]
    return re.sub(r"(?<=\w) s\b", "'s", key)


# Where a concept name's head noun ends ("umbrella with rain drops": "umbrella"), and head
# words that are plural or uncountable without ending in a plain "s".
_HEAD_END_RE = re.compile(r" (?:with|over|showing|holding|blowing|of|in|under|on) ")
_PLURAL_HEADS = frozenset({"people", "men", "women", "children"})
_MASS_HEADS = frozenset({"water", "bread", "rice", "popcorn", "butter", "salt", "spaghetti",
                         "sushi", "garlic", "broccoli", "bacon", "meat", "ginger"})


def takes_article(name: str) -> bool:
    """False for a plural or uncountable head noun ("ballet shoes", "woman and man holding
    hands", "potable water"), which reads as English without "a"; True otherwise ("bus",
    "cactus", "princess", "sign of the horns")."""
    head = _HEAD_END_RE.split(name.strip().lower(), maxsplit=1)[0]
    last = head.split()[-1] if head.split() else ""
    if " and " in f" {head} " or last in _PLURAL_HEADS or last in _MASS_HEADS:
        return False
    return not (last.endswith("s") and not last.endswith(("ss", "us", "is", "os", "'s")))


def prompt_caption(name: str, colour: str, template: str = CANONICAL_TEMPLATE) -> str:
    """adgen.captions.caption for a prompt that reads as English: the concept as
    prompt_name says it, without "a" when its head noun is plural or uncountable
    ("fireworks, flat sticker style, on a green background")."""
    text = prompt_name(name)
    line = caption(text, colour, template)
    if takes_article(text) or text.startswith("'"):
        return line
    return line.replace(article(text), text, 1)


class VocabError(AdgenError):
    """A concept file that is missing or unreadable."""


@dataclass(frozen=True)
class Concept:
    name: str
    aliases: tuple[str, ...] = ()
    category: str = ""
    char: str = ""
    codepoints: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "aliases": list(self.aliases), "category": self.category,
                "char": self.char, "codepoints": self.codepoints}


@dataclass(frozen=True)
class Match:
    concept: Concept
    score: float  # cosine similarity of the query to the concept's best phrase
    phrase: str


def default_concepts_path() -> Path:
    """The release model's concepts.jsonl, else data/twemoji64/captions.jsonl."""
    for path in (release_model_dir() / "concepts.jsonl",
                 data_dir() / "twemoji64" / "captions.jsonl"):
        if path.is_file():
            return path
    raise VocabError("no concept list: expected models/adgen-emoji64/concepts.jsonl or "
                     "data/twemoji64/captions.jsonl (run `adgen data build`)")


def load_concepts(path: str | Path | None = None) -> list[Concept]:
    """Concept records (name, aliases, category, char, codepoints), one JSON object a line."""
    path = Path(path) if path else default_concepts_path()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise VocabError(f"{path}: no such concept file") from None
    except (UnicodeDecodeError, IsADirectoryError) as exc:
        raise VocabError(f"{path}: cannot read concept file ({type(exc).__name__})") from None
    concepts = []
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            name = rec["name"]
            aliases = rec.get("aliases") or []
            if not isinstance(name, str) or not name.strip():
                raise ValueError("name must be a non-empty string")
            if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
                raise ValueError("aliases must be a list of strings")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise VocabError(f"{path}:{number}: bad concept record ({exc})") from None
        concepts.append(Concept(name.strip(), tuple(a.strip() for a in aliases if a.strip()),
                                str(rec.get("category", "")), str(rec.get("char", "")),
                                str(rec.get("codepoints", ""))))
    if not concepts:
        raise VocabError(f"{path}: concept file is empty")
    return concepts


def concept_phrases(concept: Concept) -> list[str]:
    """The texts a concept is embedded as. Code-like aliases ('u7981', 'clock12') are dropped."""
    phrases = [concept.name]
    for alias in concept.aliases:
        if re.search(r"\d", alias) and not re.search(r"\d", concept.name):
            continue
        if alias not in phrases:
            phrases.append(alias)
    if concept.category:
        phrases.append(f"{concept.name}, {concept.category.lower()}")
    return phrases



def encoder_id(encoder) -> str:
    """A stable id for the encoder's numbers: its manifest hashes, else the ONNX sha256."""
    explicit = getattr(encoder, "encoder_id", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    model_dir = getattr(encoder, "model_dir", None)
    if model_dir is None:
        raise VocabError("cannot identify the text encoder for the embedding cache")
    return encoder_dir_id(model_dir)


def encoder_dir_id(model_dir: str | Path) -> str:
    """encoder_id of the export in `model_dir`, read without loading it."""
    manifest = Path(model_dir) / "manifest.json"
    if manifest.is_file():
        info = json.loads(manifest.read_text())
        return hashlib.sha256(f"{info.get('weights_sha256')}:{info.get('onnx_sha256')}"
                              .encode()).hexdigest()
    return _sha256(Path(model_dir) / "model.onnx")


def embedding_cache_key(concepts_path: str | Path, encoder_key: str) -> str:
    """What the concept embeddings (and the groundings scored against them) depend on:
    the concept file's bytes, the encoder's numbers and the phrases built per concept."""
    return hashlib.sha256(f"{_sha256(Path(concepts_path))}:{encoder_key}:{PHRASE_VERSION}"
                          .encode()).hexdigest()[:24]


class Vocabulary:
    """Concepts + phrase embeddings; nearest-concept search and literal concept mentions."""

    def __init__(self, concepts: list[Concept], phrases: list[str], owner: np.ndarray,
                 embeddings: np.ndarray, encoder, source: str = ""):
        self.concepts = concepts
        self.phrases = phrases
        self.owner = owner            # int64[P]: concept index of each phrase
        self.embeddings = embeddings  # float32[P, 384], unit norm
        self.encoder = encoder
        self.source = source
        self._by_name = {}
        for c in concepts:
            self._by_name.setdefault(c.name.lower(), c)
        self._mentions = None  # (pattern, owner): built on first use (0.2 s; jobs never ask)

    @classmethod
    def load(cls, path: str | Path | None = None, encoder=None,
             cache_dir: str | Path | None = None, progress: bool = False) -> "Vocabulary":
        """Loads concepts and their embeddings (cached; computed with `encoder` on a miss)."""
        path = Path(path) if path else default_concepts_path()
        concepts = load_concepts(path)
        if encoder is None:
            encoder = TextEncoder()
        phrases, owner = [], []
        for i, c in enumerate(concepts):
            for p in concept_phrases(c):
                phrases.append(p)
                owner.append(i)
        owner_arr = np.asarray(owner, dtype=np.int64)
        key = embedding_cache_key(path, encoder_id(encoder))
        cache_dir = Path(cache_dir) if cache_dir else artifacts_dir() / "vocab"
        cache = cache_dir / f"concepts-{key}.npz"
        embeddings = _read_cache(cache, phrases)
        if embeddings is None:
            embeddings = _embed(encoder, phrases, progress)
            _write_cache(cache, phrases, embeddings)
        return cls(concepts, phrases, owner_arr, embeddings, encoder, str(path))

    def by_name(self, name: str) -> Concept | None:
        return self._by_name.get(name.strip().lower())

    def asked_for(self, text: str) -> set[str]:
        """Names of the guarded concepts (GUARDED, guard_kind) that `text` asks for."""
        norm = f" {_words(text)} "
        named = {c.name for c in self.mentions(text)}
        # "no X" as a rule ("no phones at dinner", "no bikes."), not "no phone contract"
        banned = {w.rstrip("s") for w in _NO_RULE_RE.findall(_normalise(text))}
        asked = set()
        for c in self.concepts:
            if guard_kind(c.name) is None:
                continue
            extra = GUARDED.get(c.name.lower(), ("", ()))[1]
            if c.name in named or any(f" {_words(w)} " in norm for w in extra):
                asked.add(c.name)
            elif c.name.lower().startswith("no "):  # "no phones" asks for "no mobile phones"
                stems = {w.rstrip("s") for w in _words(c.name).split()[1:] if len(w) > 3}
                if stems & banned:
                    asked.add(c.name)
        return asked

    def allowed(self, text: str):
        """A predicate over concept names: True unless the concept is guarded and `text`
        (the brief) does not ask for it."""
        asked = self.asked_for(text)
        return lambda name: guard_kind(name) is None or name in asked

    def nearest_allowed(self, text: str, top: int = 5, brief: str | None = None) -> list[Match]:
        """nearest([text], top) less the guarded concepts that `brief` (default: `text`)
        does not ask for."""
        ok = self.allowed(text if brief is None else brief)
        guarded = sum(1 for c in self.concepts if guard_kind(c.name) is not None)
        matches = self.nearest([text], top=top + guarded)[0]
        return [m for m in matches if ok(m.concept.name)][:top]

    def scores(self, text: str) -> np.ndarray:
        """float32[C]: each concept's best-phrase cosine similarity to `text`."""
        row = self.encoder.encode([text])[0] @ self.embeddings.T  # [P]
        best = np.full(len(self.concepts), -2.0, dtype=np.float32)
        np.maximum.at(best, self.owner, row)  # concept score = max over its phrases
        return best

    def nearest(self, queries: list[str], top: int = 5) -> list[list[Match]]:
        """For each query text, the `top` concepts by best-phrase cosine similarity."""
        if not queries:
            return []
        q = self.encoder.encode(list(queries))       # [Q, 384]
        sims = q @ self.embeddings.T                 # [Q, P]
        out = []
        for row in sims:
            best = np.full(len(self.concepts), -2.0, dtype=np.float32)
            np.maximum.at(best, self.owner, row)     # concept score = max over its phrases
            order = np.argsort(-best, kind="stable")[:top]
            matches = []
            for ci in order:
                phrase_idx = np.flatnonzero(self.owner == ci)
                pi = phrase_idx[int(np.argmax(row[phrase_idx]))]
                matches.append(Match(self.concepts[ci], float(best[ci]), self.phrases[pi]))
            out.append(matches)
        return out

    def mentions(self, text: str) -> list[Concept]:
        """Concepts named literally (name or a specific alias, whole words) in `text`."""
        if self._mentions is None:
            self._mentions = self._build_mentions()
        pattern, owner = self._mentions
        found, seen = [], set()
        for m in pattern.finditer(_normalise(text)):
            ci = owner[m.group(0)]
            if ci not in seen:
                seen.add(ci)
                found.append(self.concepts[ci])
        return found

    def _build_mentions(self):
        owner = literal_names(self.concepts)
        # Longest first so 'red apple' wins over 'apple' and 'hot dog' over 'dog'.
        keys = sorted(owner, key=len, reverse=True)
        pattern = re.compile(r"(?<![a-z0-9])(?:" + "|".join(re.escape(k) for k in keys)
                             + r")(?![a-z0-9])")
        return pattern, owner


def literal_names(concepts: list[Concept]) -> dict[str, int]:
    """Normalised concept names and specific aliases -> index of the concept that says it
    ('t shirt' -> the t-shirt): a name before any alias ('egg' is the egg, though it is an
    alias of cooking), else the first concept. Generic aliases ('new', 'smile'), colour
    words and keys under 3 characters name no concept on their own."""
    owner: dict[str, int] = {}
    for i, c in enumerate(concepts):
        key = _normalise(c.name)
        if len(key) >= 3:
            owner.setdefault(key, i)
    for i, c in enumerate(concepts):
        for alias in c.aliases:
            key = _normalise(alias)
            if len(key) < 3 or key in _GENERIC_ALIASES or key in _COLOUR_WORDS \
                    or not re.search(r"[a-z]", key):
                continue
            owner.setdefault(key, i)
    return owner


def named_concept(text: str, names: dict[str, int]) -> int | None:
    """The index of the concept `text` names word for word (literal_names), less case,
    hyphens and one leading article: 'A T-shirt' -> the t-shirt; None for anything else."""
    return names.get(re.sub(r"^(?:a|an|the) ", "", _normalise(text)))


def _normalise(text: str) -> str:
    """Lower case, hyphens/apostrophes as spaces, single spaces: 't-shirt' ~ 't shirt'."""
    text = text.lower().replace("’", "'")
    text = re.sub(r"[-_'/]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def _words(text: str) -> str:
    """_normalise, and every other mark a space too: 'caution: wet floor!' ~ 'caution wet
    floor' (how a brief's words are matched against GUARDED's)."""
    return re.sub(r"\s+", " ", re.sub(r"[^a-z0-9 ]", " ", _normalise(text))).strip()


def _embed(encoder, phrases: list[str], progress: bool) -> np.ndarray:
    chunks, step = [], 256
    bar = None
    if progress:
        bar = tqdm(total=len(phrases), desc="embedding concepts", unit="phrase")
    for start in range(0, len(phrases), step):
        chunks.append(np.asarray(encoder.encode(phrases[start:start + step]), dtype=np.float32))
        if bar:
            bar.update(len(chunks[-1]))
    if bar:
        bar.close()
    return np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)


def _read_cache(cache: Path, phrases: list[str]) -> np.ndarray | None:
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            if json.loads(str(z["phrases"])) != phrases:
                return None
            return z["embeddings"].astype(np.float32)
    except (OSError, ValueError, KeyError):
        return None  # a damaged cache is recomputed, never trusted


def _write_cache(cache: Path, phrases: list[str], embeddings: np.ndarray) -> None:
    with atomic_file(cache, "wb") as f:
        np.savez(f, embeddings=embeddings, phrases=np.array(json.dumps(phrases)))
