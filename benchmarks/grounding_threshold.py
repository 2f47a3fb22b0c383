"""Where the grounding threshold of `adgen generate` comes from (docs/design.md §5).

Scores the subjects of two prompt sets against the release model's concept list, as a job
does (adgen.serving.jobs.grounding.Grounder):
- known: the offline expander's prompts (k=3) for examples/briefs.txt and the labelled
  brief sets of tests/data, plus examples/prompts.txt: the captions' own wording, each
  naming a concept the model knows;
- unknown: UNKNOWN below, prompts naming things the emoji set lacks (products, scenes,
  combinations).
It prints both distributions' quantiles and, for each threshold, the share of known prompts
it flags and of unknown prompts it passes (and of FREE, known things in a user's own words),
the threshold with the fewest errors, and how the one in the code does.

Usage:
  python -m benchmarks.grounding_threshold      # ~10 s once the concept embeddings are cached
Writes benchmarks/results/grounding_threshold.json.
"""
from __future__ import annotations

import json

import numpy as np

from adgen.prompting.expand import OfflineExpander
from adgen.prompting.briefs import read_briefs
from adgen.serving.jobs.grounding import THRESHOLD, Grounder, load_grounder
from benchmarks.common import ROOT, command_line

BRIEFS = [ROOT / "examples" / "briefs.txt", ROOT / "tests" / "data" / "briefs_labelled.jsonl",
          ROOT / "tests" / "data" / "briefs_negation.jsonl"]
PROMPTS = ROOT / "examples" / "prompts.txt"
RESULTS = ROOT / "benchmarks" / "results"
UNKNOWN = [
    "wireless earbuds on a teal background", "a cat wearing sunglasses", "a smartwatch",
    "two dogs playing with a ball", "eco-friendly: a green leaf and a water drop",
    "a vacuum cleaner robot, flat sticker style, on a white background",
    "a drone flying over a city", "a electric scooter, flat sticker style, on a yellow background",
    "a yoga mat on a pink background", "a sofa with cushions",
    "a hair dryer, flat sticker style, on a beige background",
    "a gaming controller with RGB lights", "a solar panel on a roof",
    "a credit card with a chip and contactless symbol", "a stand mixer for baking",
    "a kayak on a lake", "a pair of ripped jeans",
    "a dishwasher, flat sticker style, on a navy background",
    "a smart speaker on a kitchen counter", "a wind turbine on a green hill",
    "a protein shake in a shaker bottle", "an espresso machine with a milk frother",
    "a running track with hurdles", "a laptop stand made of aluminium",
    "a bamboo toothbrush, flat sticker style, on a green background",
    "a woman doing pilates on a reformer", "a baby stroller in the park",
    "a pet food bowl with kibble", "a cybersecurity shield with a padlock and circuit lines",
    "a cloud storage icon with an upload arrow", "a mortgage calculator",
    "a fridge magnet shaped like a pineapple slice", "a VR headset on a purple background",
    "a skateboard deck with graffiti art", "a blender making a smoothie",
    "a lawn mower on fresh grass", "a dental implant diagram",
    "a coworking space with standing desks", "a tax return form with a pen",
    "a chatbot speech bubble with a robot face",
    "a cat wearing a tiny crown, flat sticker style, on a pink background",
    "a noise-cancelling headset for call centres", "an air fryer with golden fries",
    "a phone case with glitter",
]
# Known things in a user's own words: reported, not used to pick.
FREE = [
    "a cup of hot coffee", "a slice of pizza", "a red apple", "a birthday cake with candles",
    "a cat", "a dog", "headphones", "a laptop", "a pair of sneakers", "a gift box",
    "an ice cream cone", "a pumpkin", "a ghost", "sunglasses", "a rocket", "a smartphone",
    "a backpack", "a tent", "hiking boots", "balloons", "a teddy bear on a pink background",
    "a shopping cart", "a red heart", "a christmas tree, in noto emoji style",
    "a trophy on a gold background",
]
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def known_prompts(grounder: Grounder) -> list[str]:
    briefs, _ = read_briefs(BRIEFS)
    expander = OfflineExpander(grounder.vocab)
    prompts = [p.prompt for b in briefs for p in expander.expand(b, 3).prompts]
    prompts += [line.strip() for line in PROMPTS.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    return sorted(set(prompts))


def main() -> None:
    grounder, why = load_grounder()
    if grounder is None:
        raise SystemExit(f"no concept list or text encoder: {why}")
    known = known_prompts(grounder)
    scores = {name: np.array([r["score"] for r in grounder.ground(prompts)])
              for name, prompts in (("known", known), ("unknown", UNKNOWN), ("free", FREE))}
    sweep = []
    for t in np.round(np.arange(0.50, 0.951, 0.005), 3):
        flagged = float((scores["known"] < t).mean())
        passed = float((scores["unknown"] >= t).mean())
        sweep.append({"threshold": float(t), "known_flagged": round(flagged, 4),
                      "unknown_passed": round(passed, 4),
                      "free_flagged": round(float((scores["free"] < t).mean()), 4)})
    best = min(sweep, key=lambda r: (r["known_flagged"] + r["unknown_passed"], r["threshold"]))
    at_current = next(r for r in sweep if abs(r["threshold"] - THRESHOLD) < 1e-9)
    result = {
        "command": command_line("grounding_threshold"),
        "counts": {k: int(len(v)) for k, v in scores.items()},
        "quantiles": {k: dict(zip(map(str, QUANTILES),
                                  np.round(np.quantile(v, QUANTILES), 3).tolist()))
                      for k, v in scores.items()},
        "best": best, "threshold_in_code": THRESHOLD, "at_threshold_in_code": at_current,
        "unknown_passed_at_threshold": sorted(
            p for p, s in zip(UNKNOWN, scores["unknown"]) if s >= THRESHOLD),
        "free_flagged_at_threshold": sorted(
            p for p, s in zip(FREE, scores["free"]) if s < THRESHOLD),
        "sweep": sweep,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "grounding_threshold.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "sweep"}, indent=2))


if __name__ == "__main__":
    main()
