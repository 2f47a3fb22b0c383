"""Training of the composing generator (``adgen train --arch composer``), in three stages.

1. **shapes** (the budget: `shape_minutes` / `shape_steps`): an RGBA autoencoder (the layered
   arch's ShapeStage: encoder + the generator's decoder, latent noise, L1) over every
   trainable (concept, family) cell of a `--families` dataset; held-out cells never enter.
2. **held-out cells**: the codebook gets the encoder's latent of every trained cell; each
   held-out cell is filled from its concept's other cells, by `held_out_fill`:
   `warp` (the release since 12-03; adgen.training.warp_fill: the concept's twemoji drawing
   bent and recoloured the way its nearest concept's drawings change to the family, then
   fit in the decoder's latent space for `warp_fit_steps`; ~5 min; sharp), `translator`
   (FamilyTranslator trained for `translate_steps` to predict a cell from the concept's
   other cells; minutes; soft, it regresses to a mean) or
   `analogy` (the concept's twemoji latent plus `analogy_alpha` x the mean family-minus-
   twemoji difference of its `analogy_k` nearest concepts; seconds; keeps the concept,
   less of the family).
   `refill_composer` reruns this stage alone on a finished checkpoint (warp or analogy).
3. **words** (`map_steps`): the text trunk and its four heads (concept, family, background,
   object colour) learn from captions that name or omit a family and an object colour,
   worded by adgen.training.wording's grammar.

Resumable: checkpoints/latest/state.safetensors holds encoder, decoder, optimiser, RNG, step
and elapsed time; stages 2 and 3 take minutes and rerun whole. The run folder is
runs/<nnnnn>-<desc>/ with config.json, metrics.jsonl and checkpoints/{latest,final}.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from adgen.atomic import atomic_write_json
from adgen.captions import COLOR_NAMES, FAMILIES, OBJECT_COLORS, article, caption_names
from adgen.paths import release_model_dir
from adgen.training.checkpoint import load_generator, load_tensors, save_generator, save_tensors
from adgen.training.composer import ComposerGenerator
from adgen.training.families import FamilyDataset, load_families
from adgen.training.held_out import (ImageTarget, analogy_fill, fill_cells,
                                     train_translator)
from adgen.training.networks import build_generator
from adgen.training.sampler import text_encoder_hash
from adgen.training.stages import ShapeStage, encode_cached, use_bf16
from adgen.training.warp_fill import warp_fill
from adgen.training.wording import GRAMMARS, draw_form
from adgen.training.loop import StepMeter, TrainError, environment, next_run_dir

WARMUP_STEPS = 100
RESUME_OVERRIDES = ("translate_steps", "translate_image_steps", "map_steps", "map_captions",
                    "map_noise", "held_out_fill", "analogy_k", "analogy_alpha", "warp_fit_steps")
HELD_OUT_FILLS = ("analogy", "translator", "warp")
# Family wordings the heads are trained on; eval adds one never trained on.
FAMILY_TEMPLATES = ("in {f} emoji style", "{f} style", "as a {f} emoji", "{f} emoji design",
                    "drawn in the {f} style",
                    # grammar version 2 (adgen.training.wording)
                    "{f} look", "from the {f} emoji set", "{f} art style", "using {f} emoji",
                    "{f}'s style", "the {f} way", "{f} version", "{f}-style",
                    "styled after {f} emoji", "in a {f} look", "{f} emoji")
FAMILY_V1 = 5   # grammar version 1 drew from the first five
FAMILY_PARAPHRASE = "in the style of {f} emoji"
WHITE = COLOR_NAMES.index("white")


@dataclass(frozen=True)
class ComposerConfig:
    """The release recipe of the composing generator, as defaults."""
    data: str = "data/families64"
    shape_minutes: float | None = 70.0
    shape_steps: int | None = None
    held_out_fill: str = "warp"  # or "analogy", "translator" (measured: docs/design.md §7)
    # alpha 1 keeps the drawing whole (held-out identity 0.76, family 0.23); alpha 1.5-2
    # raises the family score and breaks drawings into other concepts' parts.
    analogy_k: int = 4
    analogy_alpha: float = 1.0
    translate_steps: int = 3000
    translate_image_steps: int = 1500  # then decoded-image L1 through the frozen decoder
    warp_fit_steps: int = 150  # "warp": Adam steps fitting each held-out latent to its picture
    map_steps: int = 4000
    map_captions: int = 20          # captions per concept for the heads (+ colour twins)
    map_noise: float = 0.5          # noise std on the standardised embedding
    map_lr: float = 1e-3            # text heads' peak learning rate (cosine to 0)
    # `--retrain-words`: the wording grammar versions its captions are drawn from; (1, 2)
    # draws the same labels twice with --seed, once worded by each
    map_grammar: tuple[int, ...] = (2,)
    # Stage 3b: the heads again, from their weights, on fresh captions drawn with seed + 1
    # (what `--retrain-words` does to a finished checkpoint): the background head took the
    # object's colour in 5.7% of two-colour prompts after stage 3, 4.2% after this.
    refine_steps: int = 4000        # 0: no stage 3b
    refine_captions: int = 40
    refine_lr: float = 3e-4
    refine_noise: float = 0.5
    # Stage 3c: rounds on the wording grammar (adgen.training.wording), each from the heads'
    # weights: (seed offset, captions per concept, steps, peak lr, noise, grammar versions).
    # Each is one `--retrain-words` run of the release (its card). Lower noise bound colours
    # better and read names worse (0.1: concept 0.934 on unseen wordings vs 0.942 at 0.2);
    # fresh captions helped most, then the wider grammar (benchmarks.wording, docs/design.md
    # §7): a round of it alone loses paraphrases, the same labels in both versions keep them.
    word_rounds: tuple[tuple[int, int, int, float, float, tuple[int, ...]], ...] = (
        (2, 40, 5000, 5e-4, 0.5, (1,)), (2, 40, 6000, 3e-4, 0.4, (1,)),
        (2, 40, 6000, 3e-4, 0.2, (1,)), (3, 60, 6000, 3e-4, 0.2, (1,)),
        (4, 60, 6000, 3e-4, 0.2, (1,)),
        # grammar version 2 (12-03): two fresh rounds on it, then labels worded both ways
        (5, 60, 6000, 3e-4, 0.2, (2,)), (6, 60, 6000, 3e-4, 0.2, (2,)),
        (4, 60, 6000, 3e-4, 0.2, (1, 2)), (7, 60, 6000, 3e-4, 0.2, (1, 2)),
        # 12-03 evening: two more once no alias names another concept (caption_names)
        (8, 30, 6000, 3e-4, 0.2, (1, 2)), (9, 30, 6000, 3e-4, 0.2, (1, 2)))
    batch_size: int = 64
    lr_g: float = 2e-3              # autoencoder (ShapeStage reads lr_g / lr_d / gan_weight)
    lr_d: float = 4e-4
    gan_weight: float = 0.0
    noise: float = 0.15
    dec_width: int = 16
    shift_px: float = 2.0
    precision: str = "auto"
    warm_start: bool = True         # decoder starts from the shipped layered model's decoder
    seed: int = 0
    threads: int = 0
    ckpt_every: int = 500
    log_every: int = 100
    runs_dir: str = "runs"
    desc: str = "composer"
    resume: str | None = None
    progress: bool = True


class _Cells:
    """The trainable cells as ShapeStage's data: .n and .rgba float[N, 4, 64, 64]."""

    def __init__(self, ds: FamilyDataset):
        mask = ds.train_mask()                                   # bool[C, F]
        self.index = np.argwhere(mask)                           # [N, 2] (concept, family)
        imgs = ds.images[mask]                                   # uint8[N, 64, 64, 4]
        self.rgba = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div_(255.0)
        self.n = len(self.index)


# --------------------------------------------------------------------------- captions

def _own_colours(name: str) -> list[str]:
    return [c for c in (*OBJECT_COLORS, "blue", "white", "black", "gray", "grey")
            if f" {c} " in f" {name} "]


def colour_word(name: str) -> bool:
    """Whether a concept name carries a colour word of its own ('red apple', 'blue heart')."""
    return bool(_own_colours(name))


def _recoloured(name: str, colour: str) -> str | None:
    """'cat face' -> 'blue cat face'; 'red apple' -> 'blue apple' (the name's own colour word
    replaced); None when the name has two colour words."""
    own = _own_colours(name)
    if len(own) > 1:
        return None
    return f" {name} ".replace(f" {own[0]} ", f" {colour} ").strip() if own else f"{colour} {name}"


def composer_captions(records: list[dict], families: tuple[str, ...], per_concept: int,
                      seed: int = 0, grammar: int = 1) -> tuple[list[str], np.ndarray]:
    """Random training captions and their labels [M, 4]: concept, family (len(families) =
    none named), background colour, object colour (0 = the concept's own colours).

    Half the captions name an object colour; each of those comes with its twin, the same
    words with the object and background colours swapped, so the heads must read which
    colour word is bound to the object (a mean-pooled embedding barely tells them apart).
    `grammar`: the version of adgen.training.wording's grammar (and family phrases) drawn."""
    if grammar not in GRAMMARS:
        raise ValueError(f"grammar must be one of {GRAMMARS}, not {grammar}")
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    n_fam = len(families)
    n_phrases = FAMILY_V1 if grammar == 1 else len(FAMILY_TEMPLATES)
    # 'red apple' recoloured green would be the concept 'green apple': never a label clash.
    taken = {n.replace("_", " ") for r in records for n in (r["name"], *r.get("aliases", []))}
    for i, names in enumerate(caption_names(records)):
        for _ in range(per_concept):
            base = names[int(rng.integers(len(names)))]
            bg = int(rng.integers(len(COLOR_NAMES)))
            obj = 0
            if rng.random() < 0.5:
                obj = 1 + int(rng.integers(len(OBJECT_COLORS)))
                recoloured = _recoloured(base, OBJECT_COLORS[obj - 1])
                if OBJECT_COLORS[obj - 1] == COLOR_NAMES[bg] or recoloured is None \
                        or recoloured in taken:   # incl. its own name: own colours
                    obj = 0
            fam = n_fam if rng.random() < 0.4 else int(rng.integers(n_fam))
            phrase = ("" if fam == n_fam else
                      FAMILY_TEMPLATES[int(rng.integers(n_phrases))].format(f=families[fam]))
            where, form = rng.random(), draw_form(rng, grammar=grammar)
            no_bg = rng.random() < 0.1
            pairs = [(bg, obj)]
            if obj and not no_bg and COLOR_NAMES[bg] in OBJECT_COLORS \
                    and _recoloured(base, COLOR_NAMES[bg]) not in taken:   # the swapped twin
                pairs.append((COLOR_NAMES.index(OBJECT_COLORS[obj - 1]),
                              1 + OBJECT_COLORS.index(COLOR_NAMES[bg])))
            for b, o in pairs:
                word = OBJECT_COLORS[o - 1] if o else ""
                if word == "sky blue" and where > 0.7:   # what people write for it
                    word = "blue"
                # 'red apple' -> 'blue apple'; 'cat face' -> the form's 'cat face in blue'.
                name = (_recoloured(base, word) if colour_word(base) else form.name(base, word)
                        ) if o else base
                text_phrase = phrase
                if text_phrase and where < 0.35:  # right after the object: "a cat in noto ..."
                    name, text_phrase = f"{name} {text_phrase}", ""
                if no_bg:                         # no background named: white
                    b, text = WHITE, article(name)
                else:
                    text = form.render(name, "", COLOR_NAMES[b])
                if text_phrase:
                    text = (f"{text}, {text_phrase}" if where < 0.75
                            else f"{families[fam]} emoji: {text}")
                texts.append(text)
                labels.append((i, fam, b, o))
    return texts, np.array(labels, dtype=np.int64)


# --------------------------------------------------------------------------- stages

def train_heads(G: ComposerGenerator, emb: torch.Tensor, labels: torch.Tensor, steps: int,
                gen: torch.Generator, batch: int = 512, lr: float = 1e-3,
                input_noise: float = 0.5, log=None) -> dict[str, float]:
    """Cross-entropy on the four heads; emb [M, 384], labels [M, 4]."""
    params = [p for m in (G.trunk, G.concept_head, G.family_head, G.color_head, G.object_head)
              for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    G.train()
    stats: dict[str, float] = {}
    names = ("concept", "family", "color", "object")
    for step in range(1, steps + 1):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / steps))
        idx = torch.randint(0, emb.shape[0], (batch,), generator=gen)
        x = G.embed_std(emb[idx])
        h = G.trunk(x + input_noise * torch.randn(x.shape, generator=gen))
        logits = (G.concept_head(h), G.family_head(h), G.color_head(h), G.object_head(h))
        y = labels[idx]
        losses = [F.cross_entropy(lg, y[:, k]) for k, lg in enumerate(logits)]
        loss = sum(losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps:
            stats = {"map_step": step, **{f"loss_{n}": round(v.item(), 4)
                                          for n, v in zip(names, losses)},
                     **{f"acc_{n}": round(float((lg.argmax(1) == y[:, k]).float().mean()), 4)
                        for k, (n, lg) in enumerate(zip(names, logits))}}
            if log is not None:
                log(stats)
    G.eval()
    return stats


# --------------------------------------------------------------------------- the run

class ComposerTrainer:
    def __init__(self, cfg: ComposerConfig):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.device = torch.device("cpu")
        self.ds = load_families(cfg.data)
        self.cells = _Cells(self.ds)
        self.G = build_generator("composer", **self.model_kwargs())
        self.bf16 = use_bf16(cfg.precision, self.device)
        if cfg.warm_start and not cfg.resume:
            self.warm_start()
        self.shape = ShapeStage(self.G, cfg, self.device, self.bf16)
        self.step, self.elapsed = 0, 0.0

    def warm_start(self) -> None:
        """The decoder starts from the shipped layered model's (same shape), which already
        draws 1,604 Twemoji shapes from 16x8x8 latents; the encoder learns to speak to it."""
        state = load_file(str(release_model_dir() / "generator.safetensors"))
        dec = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
        own = self.G.decoder.state_dict()
        if {k: tuple(v.shape) for k, v in dec.items()} != \
                {k: tuple(v.shape) for k, v in own.items()}:
            raise TrainError("--warm-start needs the release decoder's shape "
                             "(latent_ch 16, dec_width 16)")
        self.G.decoder.load_state_dict(dec)

    def model_kwargs(self) -> dict:
        return {"n_concepts": len(self.ds.records), "n_families": len(self.ds.families),
                "dec_width": self.cfg.dec_width, "noise": self.cfg.noise,
                "shift_px": self.cfg.shift_px}

    def config_json(self) -> dict:
        return {"arch": "composer", "model": self.G.model_kwargs,
                "dataset_hash": self.ds.dataset_hash, "text_encoder_hash": text_encoder_hash(),
                "families": list(self.ds.families),
                "training": {"config": asdict(self.cfg), "bf16": self.bf16, "step": self.step,
                             "elapsed_s": round(self.elapsed, 1),
                             "environment": environment()}}

    def save_state(self, run_dir: Path) -> None:
        out = run_dir / "checkpoints" / "latest"
        out.mkdir(parents=True, exist_ok=True)
        save_tensors(self.shape.state_tensors(self.gen), {"step": self.step,
                                                          "elapsed": self.elapsed},
                     out / "state.safetensors")

    def load_state(self, run_dir: Path) -> None:
        tensors, meta = load_tensors(run_dir / "checkpoints" / "latest" / "state.safetensors")
        self.shape.load_state_tensors(tensors, self.gen)
        self.step, self.elapsed = int(meta["step"]), float(meta["elapsed"])

    def budget_left(self) -> bool:
        cfg = self.cfg
        if cfg.shape_steps is not None and self.step >= cfg.shape_steps:
            return False
        return cfg.shape_minutes is None or self.elapsed < cfg.shape_minutes * 60

    def lr_scale(self) -> float:
        """Warm-up over WARMUP_STEPS, then cosine from 1 to 0.02 over the budget."""
        cfg = self.cfg
        fracs = [self.step / cfg.shape_steps if cfg.shape_steps else 0.0,
                 self.elapsed / (cfg.shape_minutes * 60) if cfg.shape_minutes else 0.0]
        p = min(1.0, max(fracs))
        warm = min(1.0, (self.step + 1) / WARMUP_STEPS)
        return warm * (0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * p)))

    def run(self, run_dir: Path) -> Path:
        cfg = self.cfg
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            def log(row: dict) -> None:
                fh.write(json.dumps({"t": round(time.time(), 1), **row}) + "\n")
                fh.flush()
            bar = tqdm(desc="shapes", unit="step", disable=not cfg.progress,
                       initial=self.step, total=cfg.shape_steps)
            meter = StepMeter(cfg.batch_size)
            while self.budget_left():
                t0 = time.perf_counter()
                scale = self.lr_scale()
                stats = self.shape.step(self.cells, self.gen, scale)
                dt = time.perf_counter() - t0
                self.elapsed += dt
                self.step += 1
                meter.add(stats, dt, self.step)
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    row = meter.row(stage="shapes", step=self.step,
                                    elapsed_s=round(self.elapsed, 1), lr_scale=round(scale, 4))
                    log(row)
                    bar.set_postfix(l1=f"{row['l1']:.4f}", ips=f"{row['images_per_s']:.0f}")
                if self.step % cfg.ckpt_every == 0:
                    self.save_state(run_dir)
            bar.close()
            self.save_state(run_dir)
            self.finish_stages(log)
        out = save_generator(self.G, self.config_json(), run_dir / "checkpoints" / "final")
        return out

    def finish_stages(self, log) -> None:
        cfg = self.cfg
        t0 = time.perf_counter()
        c, f = len(self.ds.records), len(self.ds.families)
        trained = self.shape.codebook(self.cells)                          # [N, D]
        book = torch.zeros(c, f, trained.shape[1])
        idx = torch.from_numpy(self.cells.index)
        book[idx[:, 0], idx[:, 1]] = trained
        mask = torch.from_numpy(self.ds.train_mask())
        self.G.codebook.data.copy_(self.held_out(book, mask, log).flatten(0, 1))
        log({"stage": "translate", "fill": cfg.held_out_fill,
             "seconds": round(time.perf_counter() - t0, 1)})
        t0 = time.perf_counter()
        texts, labels = composer_captions(self.ds.records, self.ds.families, cfg.map_captions,
                                          cfg.seed)
        emb = torch.from_numpy(encode_cached(texts, "composer-map", progress=cfg.progress))
        self.G.embed_std.set_stats(emb)
        stats = train_heads(self.G, emb, torch.from_numpy(labels), cfg.map_steps, self.gen,
                            lr=cfg.map_lr, input_noise=cfg.map_noise, log=log)
        log({"stage": "words", "seconds": round(time.perf_counter() - t0, 1), **stats})
        if cfg.refine_steps:
            t0 = time.perf_counter()
            count, stats = refine_heads(self.G, self.ds, cfg.seed + 1, cfg.refine_captions,
                                        cfg.refine_steps, cfg.refine_lr, cfg.refine_noise,
                                        cfg.progress, log)
            log({"stage": "words-refine", "captions": count,
                 "seconds": round(time.perf_counter() - t0, 1), **stats})
        for k, (offset, per_concept, steps, lr, noise, grammars) in enumerate(cfg.word_rounds,
                                                                             1):
            t0 = time.perf_counter()
            count, stats = refine_heads(self.G, self.ds, cfg.seed + offset, per_concept, steps,
                                        lr, noise, cfg.progress, log, tuple(grammars))
            log({"stage": f"words-round-{k}", "captions": count,
                 "seconds": round(time.perf_counter() - t0, 1), **stats})


    def held_out(self, book: torch.Tensor, mask: torch.Tensor, log) -> torch.Tensor:
        """book [C, F, D] with the held-out cells filled per cfg.held_out_fill."""
        cfg = self.cfg
        if cfg.held_out_fill == "analogy":
            return analogy_fill(book, mask, cfg.analogy_k, cfg.analogy_alpha)
        if cfg.held_out_fill == "warp":
            return warp_fill(self.G.decoder, book, mask, self.ds.images, self.G.palette,
                             self.G.latent_ch, cfg.warp_fit_steps, self.gen)
        image = ImageTarget(self.G.decoder, self.ds.images, self.G.palette,
                            cfg.translate_image_steps)
        T = train_translator(book, mask, self.G.latent_ch, cfg.translate_steps, self.gen,
                             log=log, image=image)
        return fill_cells(T, book, mask, self.G.latent_ch)


def _grammars_ok(grammars) -> bool:
    return (isinstance(grammars, (tuple, list)) and len(grammars) >= 1
            and len(set(grammars)) == len(grammars) and all(g in GRAMMARS for g in grammars))


def validate(cfg: ComposerConfig) -> None:
    """One-line errors for options no run can use."""
    checks = [
        (cfg.shape_steps is None or cfg.shape_steps >= 1, "--max-steps must be at least 1"),
        (cfg.shape_minutes is None or cfg.shape_minutes > 0, "--max-minutes must be positive"),
        (cfg.translate_steps >= 1 and cfg.map_steps >= 1 and cfg.map_captions >= 1,
         "--translate-steps, --map-steps and --map-captions must be at least 1"),
        (cfg.batch_size >= 2, "--batch-size must be at least 2"),
        (cfg.lr_g > 0 and cfg.lr_d > 0, "--lr-g and --lr-d must be positive"),
        (cfg.noise >= 0 and cfg.map_noise >= 0 and cfg.gan_weight >= 0,
         "--noise, --map-noise and --gan-weight must be >= 0"),
        (0 <= cfg.shift_px <= 16, "--shift-px must be in [0, 16]"),
        (cfg.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
        (cfg.threads >= 0 and cfg.ckpt_every >= 1 and cfg.log_every >= 1,
         "--threads must be >= 0, --ckpt-every and --log-every >= 1"),
        (cfg.held_out_fill in HELD_OUT_FILLS,
         f"--held-out-fill must be {' or '.join(HELD_OUT_FILLS)}"),
        (cfg.analogy_k >= 1 and cfg.analogy_alpha > 0,
         "--analogy-k must be at least 1 and --analogy-alpha positive"),
        (all(len(r) == 6 and r[1] >= 1 and r[2] >= 1 and r[3] > 0 and r[4] >= 0
             and _grammars_ok(r[5]) for r in cfg.word_rounds),
         "word_rounds: (seed offset, captions per concept >= 1, steps >= 1, lr > 0, "
         f"noise >= 0, grammar versions from {GRAMMARS}) each"),
        (_grammars_ok(cfg.map_grammar),
         f"--map-grammar must list versions from {GRAMMARS}, e.g. 2 or 1,2"),
    ]
    for ok, msg in checks:
        if not ok:
            raise TrainError(msg)


def train_composer(cfg: ComposerConfig, explicit: set[str] | None = None) -> Path:
    """Trains per cfg (or resumes cfg.resume); returns the final checkpoint folder.

    On resume the run's own config holds, but for the budget and, among RESUME_OVERRIDES,
    the fields named in `explicit` (the options the user gave; None: those that differ
    from the defaults)."""
    validate(cfg)
    if cfg.resume:
        run_dir = Path(cfg.resume)
        try:
            saved = json.loads((run_dir / "config.json").read_text())["config"]
        except (OSError, ValueError, KeyError):
            raise TrainError(f"--resume {run_dir}: not a composer run folder") from None
        budget = {k: getattr(cfg, k) for k in ("shape_minutes", "shape_steps", "progress")}
        # Stages 2 and 3 rerun whole on resume, so their options may change.
        budget |= {k: getattr(cfg, k) for k in RESUME_OVERRIDES
                   if (k in explicit if explicit is not None
                       else getattr(cfg, k) != getattr(ComposerConfig, k))}
        trainer = ComposerTrainer(replace(ComposerConfig(**saved), resume=str(run_dir), **budget))
        trainer.load_state(run_dir)
        return trainer.run(run_dir)
    if cfg.shape_minutes is None and cfg.shape_steps is None:
        raise TrainError("give a budget: --max-minutes and/or --max-steps")
    trainer = ComposerTrainer(cfg)
    run_dir = next_run_dir(Path(cfg.runs_dir), cfg.desc)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", {"config": asdict(cfg), "arch": "composer",
                                                "environment": environment()}, sort_keys=True)
    return trainer.run(run_dir)


def _finished(cfg: ComposerConfig, checkpoint: str | Path, flag: str):
    """(loaded composer checkpoint, dataset, train mask) for a stage rerun, checked."""
    validate(cfg)
    loaded = load_generator(checkpoint)
    if loaded.arch != "composer":
        raise TrainError(f"{flag} {checkpoint}: a {loaded.arch} checkpoint, not composer")
    ds = load_families(cfg.data)
    G = loaded.module
    mask = torch.from_numpy(ds.train_mask())
    if tuple(mask.shape) != (G.n_concepts, G.n_families) or \
            loaded.config.get("dataset_hash") not in (None, ds.dataset_hash):
        raise TrainError(f"{flag} {checkpoint}: trained on another dataset than {cfg.data} "
                         f"({G.n_concepts} x {G.n_families} cells, this one "
                         f"{mask.shape[0]} x {mask.shape[1]})")
    return loaded, ds, mask


def _save_rerun(cfg: ComposerConfig, loaded, run_dir: Path, kind: str, rows: list[dict],
                record: dict) -> Path:
    """config.json, metrics.jsonl and checkpoints/final of a stage rerun; its training
    record gains {kind: record}."""
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {k: v for k, v in loaded.config.items()
              if k not in ("arch", "model", "format_version", "kind")}
    training = dict(config.get("training") or {})
    training[kind] = {"from_sha256": loaded.sha256, "run": run_dir.name, **record}
    return save_generator(loaded.module, {**config, "training": training},
                          run_dir / "checkpoints" / "final")


def refine_heads(G: ComposerGenerator, ds: FamilyDataset, seed: int, per_concept: int,
                 steps: int, lr: float, noise: float, progress: bool,
                 log, grammars: tuple[int, ...] = (1,)) -> tuple[int, dict[str, float]]:
    """The text heads trained on from their weights, on captions drawn with `seed` (and a
    torch generator of that seed) from each wording grammar version in `grammars` (the
    same labels, worded by each); the embedding standardisation stays. (captions, stats)."""
    sets = [composer_captions(ds.records, ds.families, per_concept, seed, g) for g in grammars]
    # encoded per version: each set's cache is found again by a round that draws it alone
    emb = torch.from_numpy(np.concatenate([encode_cached(t, "composer-map", progress=progress)
                                           for t, _ in sets]))
    labels = np.concatenate([lab for _, lab in sets])
    texts = [t for ts, _ in sets for t in ts]
    stats = train_heads(G, emb, torch.from_numpy(labels), steps,
                        torch.Generator().manual_seed(seed), lr=lr, input_noise=noise, log=log)
    return len(texts), stats


def retrain_words(cfg: ComposerConfig, checkpoint: str | Path) -> Path:
    """Stage 3 again on a finished composer checkpoint: its text heads go on training from
    their weights on freshly drawn captions (cfg.seed, cfg.map_captions per concept, with
    their colour-swapped twins) for cfg.map_steps at cfg.map_lr; cells, decoder and the
    embedding standardisation stay. Measured to bind colour words better (the background
    head took the object's colour in 5.7% of 'a brown x-ray ... on a pink background'
    prompts). Writes runs/<nnnnn>-<desc>/; returns its checkpoints/final."""
    loaded, ds, _ = _finished(cfg, checkpoint, "--retrain-words")
    run_dir = next_run_dir(Path(cfg.runs_dir), cfg.desc)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", {
        "config": asdict(cfg), "arch": "composer", "retrain_words": str(checkpoint),
        "retrain_words_sha256": loaded.sha256, "environment": environment()}, sort_keys=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    rows: list[dict] = []
    t0 = time.perf_counter()
    count, stats = refine_heads(loaded.module, ds, cfg.seed, cfg.map_captions, cfg.map_steps,
                                cfg.map_lr, cfg.map_noise, cfg.progress, rows.append,
                                cfg.map_grammar)
    rows.append({"stage": "words", "captions": count,
                 "seconds": round(time.perf_counter() - t0, 1), **stats})
    return _save_rerun(cfg, loaded, run_dir, "retrain_words", rows, {
        "seed": cfg.seed, "map_captions": cfg.map_captions, "map_steps": cfg.map_steps,
        "map_lr": cfg.map_lr, "map_noise": cfg.map_noise, "map_grammar": cfg.map_grammar,
        "captions": count,
        "seconds": rows[-1]["seconds"]})


def refill_composer(cfg: ComposerConfig, checkpoint: str | Path) -> Path:
    """Stage 2 alone on a finished composer checkpoint: its trained cells, decoder and text
    heads stay (stage 3 never reads the codebook), its held-out cells are filled again per
    cfg.held_out_fill from its trained cells. Writes runs/<nnnnn>-<desc>/ with config.json,
    metrics.jsonl and checkpoints/final; returns that final folder."""
    loaded, ds, mask = _finished(cfg, checkpoint, "--refill")
    if cfg.held_out_fill == "translator":
        raise TrainError("--refill fills held-out cells by analogy or warp only (the "
                         "translator needs the run's encoder: resume the run instead)")
    G = loaded.module
    t0 = time.perf_counter()
    book = G.codebook.detach().view(G.n_concepts, G.n_families, -1)
    if cfg.held_out_fill == "warp":
        filled = warp_fill(G.decoder, book, mask, ds.images, G.palette, G.latent_ch,
                           cfg.warp_fit_steps, torch.Generator().manual_seed(cfg.seed))
    else:
        filled = analogy_fill(book, mask, cfg.analogy_k, cfg.analogy_alpha)
    G.codebook.data.copy_(filled.flatten(0, 1))
    run_dir = next_run_dir(Path(cfg.runs_dir), cfg.desc)
    run_dir.mkdir(parents=True)
    atomic_write_json(run_dir / "config.json", {
        "config": asdict(cfg), "arch": "composer", "refill": str(checkpoint),
        "refill_sha256": loaded.sha256, "environment": environment()}, sort_keys=True)
    row = {"stage": "translate", "fill": cfg.held_out_fill, "cells": int((~mask).sum()),
           "seconds": round(time.perf_counter() - t0, 2)}
    return _save_rerun(cfg, loaded, run_dir, "refill", [row], {
        "held_out_fill": cfg.held_out_fill, "analogy_k": cfg.analogy_k,
        "analogy_alpha": cfg.analogy_alpha, "warp_fit_steps": cfg.warp_fit_steps})


__all__ = ["ComposerConfig", "FAMILIES", "refill_composer", "retrain_words", "train_composer"]
