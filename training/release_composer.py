"""Assemble a composer release folder from a checkpoint, its family evaluation and sheets.

  generator.safetensors, config.json   copied from the checkpoint
  concepts.jsonl                       the concepts it knows (the offline expander's vocabulary)
  metrics.json                         `adgen eval --families` output (with comparison rows)
  LICENSES.md                          the artwork notices of every family it was trained on
  samples.png                          12 prompts x 4 seeds: families and colours visible
  oov_sheet.png                        24 prompts outside the vocabulary x 4 seeds
  wording_sheet.png                    12 prompts worded unlike any training caption x 4 seeds
The model card (MODEL_CARD.md) is written by hand from these numbers and kept on rebuild.

  python -m adgen.training.release_composer CKPT EVAL_JSON DATA_DIR OUT_DIR
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from adgen.atomic import atomic_dir
from adgen.latents import derive_seed
from adgen.serving.jobs import fonts
from adgen.training.release import write_concepts

SHEET_PROMPTS = (
    "a cat face, flat sticker style, on a teal background",
    "a pizza, flat sticker style, on a yellow background",
    "a rocket, flat sticker style, on a navy background",
    "a sunflower in noto emoji style, on a sky blue background",
    "a robot in fluent emoji style, on a white background",
    "a red apple in twemoji emoji style, on a black background",
    "a blue apple, flat sticker style, on a white background",
    "a purple pizza, flat sticker style, on a gray background",
    "a green tent, flat sticker style, on a black background",
    "a pink running shoe on a black background",
    "a teal guitar in noto emoji style, on a beige background",
    "an orange automobile, flat sticker style, on a purple background",
)
OOV_PROMPTS = (
    "wireless earbuds on a teal background", "eco-friendly: a green leaf and a water drop",
    "a red sports car on a yellow background", "a cat wearing sunglasses",
    "two dogs playing with a ball", "a smartwatch on a white background",
    "a coffee subscription box", "a laptop with a discount tag",
    "a beach umbrella and a cocktail", "fresh organic vegetables", "a gaming headset",
    "a yoga mat", "a pair of running shoes", "a scented candle",
    "a skincare serum bottle", "a pumpkin spice latte", "a winter jacket",
    "a travel suitcase", "a birthday cake with candles", "a bouquet of roses",
    "a pet food bowl", "a solar panel", "an electric scooter", "a vinyl record",
)

# Worded unlike the training captions (benchmarks.wording's unseen phrasing and others): a
# bare colour word for the background, object colours said other ways.
WORDING_PROMPTS = (
    "a yellow square shown against pink", "a cat face; the background is teal",
    "an ad visual of a purple pizza over a gray field",
    "navy canvas, an orange automobile centered",
    "product shot: a blue apple, solid white behind it", "a green-toned tent on black",
    "a rocket drawn in fluent emoji style against sky blue",
    "beige backdrop with a teal guitar, in the style of noto emoji",
    "a heart with a purple finish, white surroundings",
    "a pink sneaker on a black background", "a red sports car on a yellow background",
    "sunflower sticker for a summer sale, navy behind it",
)


def prompt_sheet(module, z_dim: int, prompts: tuple[str, ...], out: Path, seeds: int = 4,
                 base_seed: int = 1, scale: int = 2) -> None:
    """A row per prompt: the prompt in text, then `seeds` images (each `scale`x, nearest)."""
    from adgen.training.eval_composer import render
    all_seeds = [derive_seed(base_seed, f"sheet{i}", k) for i in range(len(prompts))
                 for k in range(seeds)]
    imgs = render(module, [p for p in prompts for _ in range(seeds)], all_seeds, z_dim,
                  tag="release-sheet")
    cell = 64 * scale
    label_w = 430
    sheet = Image.new("RGB", (label_w + seeds * cell, len(prompts) * cell), "white")
    draw = ImageDraw.Draw(sheet)
    font = fonts.load(fonts.available()[0], 15)
    for i, prompt in enumerate(prompts):
        draw.multiline_text((8, i * cell + 8), _wrap(prompt, 46), fill=(30, 30, 30), font=font)
        for k in range(seeds):
            tile = Image.fromarray(imgs[i * seeds + k]).resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_w + k * cell, i * cell))
    sheet.save(out, optimize=True)


def _wrap(text: str, width: int) -> str:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join(lines + [line])


def make_release(ckpt: Path, eval_json: Path, data_dir: Path, out_dir: Path) -> Path:
    from adgen.training.checkpoint import load_generator
    loaded = load_generator(ckpt)
    with atomic_dir(out_dir) as tmp:
        for name in ("generator.safetensors", "config.json"):
            shutil.copy2(Path(ckpt) / name, tmp / name)
        write_concepts(data_dir, tmp / "concepts.jsonl")
        shutil.copy2(eval_json, tmp / "metrics.json")
        shutil.copy2(data_dir / "LICENSES.md", tmp / "LICENSES.md")
        prompt_sheet(loaded.module, loaded.z_dim, SHEET_PROMPTS, tmp / "samples.png")
        prompt_sheet(loaded.module, loaded.z_dim, OOV_PROMPTS, tmp / "oov_sheet.png")
        prompt_sheet(loaded.module, loaded.z_dim, WORDING_PROMPTS, tmp / "wording_sheet.png")
        card = out_dir / "MODEL_CARD.md"
        if card.is_file():  # keep the hand-written card
            shutil.copy2(card, tmp / "MODEL_CARD.md")
    return out_dir


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__.strip().splitlines()[-1].strip())
    ckpt_arg, eval_arg, data_arg, out_arg = (Path(a) for a in sys.argv[1:])
    print(make_release(ckpt_arg, eval_arg, data_arg, out_arg))
