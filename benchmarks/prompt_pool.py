"""Fresh prompts for the benchmarks: caption templates over ad-style objects or a whole
concept list, optionally in an LLM's own words, never repeated within a run (the server
caches prompt embeddings, so a repeated prompt would cost it less)."""
from __future__ import annotations

# Ad-style objects; x 14 palette colours x 4 caption templates = 2,688 distinct captions.
OBJECTS = (
    "red apple", "wrapped gift", "running shoe", "chocolate bar", "hot beverage", "sunflower",
    "shopping bags", "birthday cake", "rocket", "sunglasses", "backpack", "pizza", "watch",
    "mobile phone", "laptop", "headphone", "camera", "bicycle", "umbrella", "t-shirt",
    "dress", "high-heeled shoe", "lipstick", "ring", "crown", "trophy", "balloon",
    "christmas tree", "jack-o-lantern", "ice cream", "doughnut", "cookie", "strawberry",
    "watermelon", "pineapple", "avocado", "hamburger", "taco", "sushi", "cup with straw",
    "teacup without handle", "bottle with popping cork", "potted plant", "house", "automobile",
    "airplane", "gem stone", "money bag",
)


# Ad-copy words before the object: 'a glossy red apple' names no concept word for word, so
# its grounding goes through the text encoder (as an LLM's own wording does). 16 of them:
# 500 consecutive prompts (10.4 rounds of OBJECTS) never repeat a subject.
OWN_WORDS = ("glossy", "vintage", "tiny", "festive", "minimalist", "bold", "cheerful", "retro",
             "shiny", "cozy", "elegant", "playful", "sleek", "rustic", "premium", "classic")


class PromptPool:
    """Fresh caption-style prompts: take(k, n) -> k new prompts, each repeated n times. Their
    subjects are concept names ('a red apple': what the offline expander writes), or with
    `own_words` an ad-copy word before each ('a glossy red apple'). `objects` (default
    OBJECTS: 48 products, 2,688 prompts before a campaign tag has to keep them new) can be a
    whole concept list (the release's 1,584 x 56 prompts without a tag)."""

    def __init__(self, start: int = 0, own_words: bool = False,
                 objects: tuple[str, ...] = OBJECTS):
        from adgen.captions import COLOR_NAMES, TEMPLATES
        self._colors, self._templates = COLOR_NAMES, TEMPLATES
        self._next = start
        self._words = OWN_WORDS if own_words else ()
        self._objects = objects

    def _caption(self, i: int) -> str:
        from adgen.captions import caption
        objects = self._objects
        size = len(objects) * len(self._colors) * len(self._templates)
        cycle, j = divmod(i, size)
        obj = objects[j % len(objects)]
        if self._words:
            obj = f"{self._words[(i // len(objects)) % len(self._words)]} {obj}"
        color = self._colors[(j // len(objects)) % len(self._colors)]
        template = self._templates[j // (len(objects) * len(self._colors))]
        text = caption(obj, color, template)
        # past the pool: a campaign tag keeps the prompt new (a cache would otherwise hit)
        return text if cycle == 0 else f"{text}, campaign {cycle}"

    def take(self, k: int, n: int = 1) -> list[str]:
        out = []
        for _ in range(k):
            out += [self._caption(self._next)] * n
            self._next += 1
        return out

    def images(self, count: int, n: int = 4) -> tuple[list[str], list[int]]:
        """`count` (prompt, seed) pairs: count/n fresh prompts x n, distinct seeds."""
        prompts = self.take(-(-count // n), n)[:count]
        base = self._next * 1000
        return prompts, [base + i for i in range(count)]


def concept_objects() -> tuple[str, ...]:
    """The release concept list's names (1,584: 88,704 prompts before one repeats), or the
    48 products of OBJECTS without a concept list."""
    from adgen.prompting.vocab import VocabError, load_concepts
    try:
        return tuple(c.name for c in load_concepts())
    except VocabError:
        return OBJECTS
