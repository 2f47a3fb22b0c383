"""The composing generator: family choice (named or by seed), hard choices (no blends),
recolouring that keeps the drawing, captions and their labels, the translator, a short
resumable run and its ONNX export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adgen.captions import COLOR_NAMES, FAMILIES, OBJECT_COLORS, colors_in
from adgen.training.composer import ComposerGenerator, recolour
from adgen.training.held_out import analogy_fill, fill_cells, train_translator
from adgen.training.train_composer import (ComposerConfig, composer_captions, refill_composer,
                                           retrain_words, train_composer)
from tests.training.family_factory import family_dataset


def tiny(n_concepts: int = 4) -> ComposerGenerator:
    torch.manual_seed(0)
    G = ComposerGenerator(n_concepts=n_concepts, hidden=32, dec_width=4).eval()
    with torch.no_grad():
        G.codebook.normal_()
    return G


def set_heads(G: ComposerGenerator, concept: int, family: int, color: int, obj: int) -> None:
    """Every prompt now picks these (a bias far above anything the trunk adds)."""
    with torch.no_grad():
        for head, pick in ((G.concept_head, concept), (G.family_head, family),
                           (G.color_head, color), (G.object_head, obj)):
            head.weight.zero_()
            head.bias.zero_()
            head.bias[pick] = 10.0


def test_a_named_family_is_drawn_and_unnamed_families_follow_the_seed():
    G = tiny()
    e = torch.randn(64, 384)
    z = torch.randn(64, G.z_dim)
    set_heads(G, concept=2, family=1, color=0, obj=0)
    rows = G.cells(*G.heads(e)[:2], z)
    assert (rows == 2 * G.n_families + 1).all()
    set_heads(G, concept=2, family=G.n_families, color=0, obj=0)        # none named
    rows = G.cells(*G.heads(e)[:2], z)
    fams = (rows - 2 * G.n_families).numpy()
    assert set(fams) == set(range(G.n_families))                       # seeds spread
    assert (fams == z[:, :G.n_families].argmax(1).numpy()).all()       # ... as z says


def test_the_image_is_one_cell_drawn_never_a_mix():
    G = tiny()
    set_heads(G, concept=3, family=0, color=COLOR_NAMES.index("teal"), obj=0)
    z = torch.zeros(2, G.z_dim)
    z[:, 0] = 1.0                                                      # family 0 by seed too
    img = G(torch.randn(2, 384), z)
    fg, alpha = G.draw(torch.tensor([3 * G.n_families] * 2), z)
    bg = G.palette[COLOR_NAMES.index("teal")]
    fg_pm, alpha = G.layout(fg, alpha, z)
    expected = (fg_pm + bg[None, :, None, None] * (1 - alpha)) * 2 - 1
    torch.testing.assert_close(img, expected)
    # A much less confident concept choice draws the same single cell.
    with torch.no_grad():
        G.concept_head.bias[3] = 0.05
    torch.testing.assert_close(G(torch.randn(2, 384), z), expected)


def test_recolour_takes_the_target_hue_and_keeps_the_light_and_dark_structure():
    torch.manual_seed(1)
    ys = torch.linspace(0, 1, 64)[None, None, :, None].expand(1, 3, 64, 64)
    fg = torch.stack([ys[0, 0] * 0.9, ys[0, 0] * 0.6, ys[0, 0] * 0.1])[None]  # orange ramp
    alpha = torch.ones(1, 1, 64, 64)
    target = torch.tensor([[0.1, 0.2, 0.9]])                            # blue
    out = recolour(fg, alpha, target)
    mean = (out * alpha).mean((2, 3))[0]
    assert mean[2] > mean[0] + 0.3                                      # blue now dominates
    lum_in = (fg * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)
    lum_out = (out * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1)
    corr = np.corrcoef(lum_in.flatten().numpy(), lum_out.flatten().numpy())[0, 1]
    assert corr > 0.95                                                  # shading kept


def test_an_object_colour_recolours_only_the_object():
    G = tiny()
    navy = COLOR_NAMES.index("white")
    set_heads(G, concept=1, family=0, color=navy, obj=0)
    z = torch.zeros(1, G.z_dim)
    z[:, 0] = 1.0
    e = torch.randn(1, 384)
    plain = G(e, z)
    with torch.no_grad():
        G.object_head.bias.zero_()
        G.object_head.bias[1 + OBJECT_COLORS.index("purple")] = 10.0
    tinted = G(e, z)
    _, alpha = G.layout(*G.draw(torch.tensor([G.n_families]), z), z)
    empty = alpha[0, 0] < 0.01
    if empty.any():                                                     # background untouched
        torch.testing.assert_close(tinted[0][:, empty], plain[0][:, empty])
    assert not torch.allclose(tinted, plain)


def test_captions_carry_the_words_their_labels_say():
    records = [{"name": "cat face", "aliases": ["kitty"]}, {"name": "red apple", "aliases": []},
               {"name": "green apple", "aliases": []}]
    texts, labels = composer_captions(records, FAMILIES, per_concept=200, seed=3)
    assert len(texts) >= 600 and labels.shape == (len(texts), 4)
    for text, (concept, fam, bg, obj) in zip(texts, labels):
        if fam < len(FAMILIES):
            assert FAMILIES[fam] in text
        else:
            assert not any(f in text for f in FAMILIES)
        if obj:
            word = OBJECT_COLORS[obj - 1]
            assert word in text or (word == "sky blue" and "blue" in text)
            assert "green apple" not in text                    # never another concept's name
            if concept == 1:
                assert "red apple" not in text                  # 'a blue apple': red replaced
        if "background" in text or "backdrop" in text:
            assert COLOR_NAMES[bg] in colors_in(text) or COLOR_NAMES[bg] in text
    assert {0, 1, 2, 3} == set(labels[:, 1])                   # all families + none
    assert (labels[labels[:, 0] == 1, 3] > 0).any()            # red apple can be recoloured
    # Every object-coloured 'cat face' caption with a palette background has its swapped
    # twin (for the apples a twin may be skipped: 'green apple' is a concept of its own).
    pairs = {(c, f, b, o) for c, f, b, o in labels.tolist()}
    swapped = [(c, f, COLOR_NAMES.index(OBJECT_COLORS[o - 1]),
                1 + OBJECT_COLORS.index(COLOR_NAMES[b])) in pairs
               for c, f, b, o in labels.tolist()
               if c == 0 and o and COLOR_NAMES[b] in OBJECT_COLORS]
    assert swapped and all(swapped)


def test_translator_fills_only_the_untrained_cells():
    gen = torch.Generator().manual_seed(0)
    book = torch.randn(6, 3, 16 * 64)
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[1, 2] = mask[4, 1] = False
    book[~mask] = 0
    from adgen.training.layered import ShapeDecoder, palette_tensor
    from adgen.training.held_out import ImageTarget
    images = np.zeros((6, 3, 64, 64, 4), np.uint8)
    image = ImageTarget(ShapeDecoder(16, 4), images, palette_tensor(), steps=2, batch=4)
    rows = []
    T = train_translator(book, mask, 16, steps=3, gen=gen, batch=8, log=rows.append,
                         image=image)
    assert "loss_image" in rows[-1] and rows[-1]["image_step"] == 2
    filled = fill_cells(T, book, mask, 16)
    torch.testing.assert_close(filled[mask], book[mask])
    assert filled[1, 2].abs().sum() > 0 and filled[4, 1].abs().sum() > 0


@pytest.mark.usefixtures("text_encoder_dir")
def test_a_short_run_resumes_exports_and_evaluates(tmp_path):
    data = family_dataset(tmp_path, n=11)  # concept 9 is held out of fluent
    cfg = ComposerConfig(data=str(data), shape_minutes=None, shape_steps=3, translate_steps=2,
                         translate_image_steps=2, held_out_fill="translator",
                         map_steps=2, map_captions=2, refine_steps=2,
                         refine_captions=1, word_rounds=((2, 1, 2, 1e-3, 0.2, (1, 2)),),
                         batch_size=4,
                         runs_dir=str(tmp_path / "runs"),
                         progress=False, log_every=1, ckpt_every=2)
    final = train_composer(cfg)
    run = final.parent.parent
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"stage": "shapes"' in line for line in lines) == 3
    assert [line.split('"stage": "')[1].split('"')[0] for line in lines
            if '"stage": "words' in line] == ["words", "words-refine", "words-round-1"]
    from dataclasses import replace

    from adgen.training.checkpoint import load_generator
    # Resumed with analogies filling the held-out cells (the first run used the translator).
    again = train_composer(replace(cfg, resume=str(run), shape_steps=5,
                                   held_out_fill="analogy"))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    fills = [line.split('"fill": "')[1].split('"')[0] for line in lines if '"fill"' in line]
    assert fills == ["translator", "analogy"]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in lines
             if '"stage": "shapes"' in line]
    assert steps == [1, 2, 3, 4, 5]                                    # continued, not restarted
    loaded = load_generator(again)
    assert loaded.arch == "composer" and loaded.config["families"] == list(FAMILIES)
    out = loaded.module(torch.randn(2, 384), torch.randn(2, loaded.z_dim))
    assert out.shape == (2, 3, 64, 64) and out.abs().max() <= 1.0

    from adgen.export.onnx_export import export_onnx
    onnx_dir = export_onnx(again, tmp_path / "onnx", parity_batches=(1, 4), progress=False)
    import onnxruntime as ort
    sess = ort.InferenceSession(str(onnx_dir / "generator.onnx"), providers=["CPUExecutionProvider"])
    e = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    z = np.random.default_rng(1).standard_normal((3, loaded.z_dim)).astype(np.float32)
    ref = loaded.module(torch.from_numpy(e), torch.from_numpy(z)).detach().numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: e, sess.get_inputs()[1].name: z})[0]
    assert np.abs(got - ref).max() < 1e-4

    # --refill: only the held-out cells change; the heads and decoder are the checkpoint's.
    from adgen.training.families import load_families
    mask = torch.from_numpy(load_families(data).train_mask())
    assert (~mask).any()                               # the factory's data has held-out cells
    refilled = load_generator(refill_composer(replace(cfg, held_out_fill="analogy", analogy_k=1,
                                                      desc="refill"), again))
    before = loaded.module.codebook.detach().view(*mask.shape, -1)
    after = refilled.module.codebook.detach().view(*mask.shape, -1)
    torch.testing.assert_close(after[mask], before[mask])
    assert not torch.allclose(after[~mask], before[~mask])
    torch.testing.assert_close(refilled.module.concept_head.weight, loaded.module.concept_head.weight)
    assert refilled.config["training"]["refill"]["from_sha256"] == loaded.sha256
    warped = load_generator(refill_composer(replace(cfg, held_out_fill="warp", warp_fit_steps=2,
                                                    desc="refill-warp"), again))
    after = warped.module.codebook.detach().view(*mask.shape, -1)
    torch.testing.assert_close(after[mask], before[mask])
    assert not torch.allclose(after[~mask], before[~mask])
    assert warped.config["training"]["refill"]["held_out_fill"] == "warp"
    low, high = before[mask].amin(0), before[mask].amax(0)      # fit within the trained range
    assert ((after[~mask] >= low - 1e-6) & (after[~mask] <= high + 1e-6)).all()

    # --retrain-words: only the text side moves; cells, decoder and standardisation stay.
    worded = load_generator(retrain_words(replace(cfg, seed=1, map_steps=3, map_lr=1e-2,
                                                  map_grammar=(1, 2), desc="words"), again))
    m0, m1 = loaded.module, worded.module
    torch.testing.assert_close(m1.codebook, m0.codebook)
    torch.testing.assert_close(m1.embed_std.mean, m0.embed_std.mean)
    for a, b in zip(m1.decoder.parameters(), m0.decoder.parameters()):
        torch.testing.assert_close(a, b)
    assert not torch.allclose(m1.color_head.weight, m0.color_head.weight)
    record = worded.config["training"]["retrain_words"]
    assert record["from_sha256"] == loaded.sha256 and record["map_steps"] == 3
    from adgen.training.families import load_families
    ds = load_families(data)   # both versions' captions, the same labels worded twice
    one, two = (composer_captions(ds.records, ds.families, cfg.map_captions, 1, g)
                for g in (1, 2))
    assert record["captions"] == len(one[0]) + len(two[0]) and record["map_grammar"] == [1, 2]
    words_run = tmp_path / "runs" / record["run"]
    assert '"stage": "words"' in (words_run / "metrics.jsonl").read_text()
    from adgen.training.loop import TrainError
    with pytest.raises(TrainError, match="not composer"):
        film = tmp_path / "film"
        from adgen.training.checkpoint import save_generator
        from adgen.training.networks import build_generator
        refill_composer(cfg, save_generator(build_generator("film", ngf=4, cond_dim=16), {},
                                            film))


def test_analogy_fill_adds_the_neighbours_family_direction():
    """Each family is the twemoji latent plus its own style vector: the analogy recovers a
    held-out cell from its nearest concepts' differences, and leaves trained cells alone."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(20, 1, 8, generator=g)
    style = torch.randn(1, 3, 8, generator=g) * torch.tensor([0.0, 1.0, 1.0])[None, :, None]
    book = base + style + 0.01 * torch.randn(20, 3, 8, generator=g)
    mask = torch.ones(20, 3, dtype=torch.bool)
    mask[3, 1] = mask[7, 2] = mask[9, 1] = mask[9, 2] = False
    truth = book.clone()
    book[~mask] = 0
    out = analogy_fill(book, mask, k=3, alpha=1.0)
    torch.testing.assert_close(out[mask], book[mask])
    assert (out[~mask] - truth[~mask]).abs().max() < 0.1
    assert (analogy_fill(book, mask, k=3, alpha=2.0)[~mask] - truth[~mask]).abs().max() > 0.5
    none = mask.clone()
    none[:, 1] = False                                   # no concept trained in family 1
    from adgen.training.held_out import HeldOutError
    with pytest.raises(HeldOutError, match="nothing to draw an analogy from"):
        analogy_fill(book, none)


@pytest.mark.parametrize("bad, message", [
    ({"shape_steps": 0}, "--max-steps"), ({"map_steps": 0}, "--map-steps"),
    ({"shift_px": 40.0}, "--shift-px"), ({"precision": "fp8"}, "--precision"),
    ({"map_grammar": (3,)}, "--map-grammar"), ({"map_grammar": ()}, "--map-grammar"),
    ({"word_rounds": ((2, 1, 2, 1e-3, 0.2, (0,)),)}, "word_rounds")])
def test_options_no_run_can_use_are_one_line_errors(bad, message, tmp_path):
    from adgen.training.loop import TrainError
    with pytest.raises(TrainError, match=message):
        train_composer(ComposerConfig(data=str(tmp_path), runs_dir=str(tmp_path), **bad))
