"""Evaluation metrics: sanity on real and noise images with a tiny matcher, FD, end to end."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from adgen.training.eval import (compare, draw_items, frechet_distance,
                           real_images)
from adgen.training.matcher import Matcher, MatcherConfig, train_matcher


@pytest.fixture(scope="module")
def tiny_artifacts(tmp_path_factory, text_encoder_dir):
    """An ADGEN_ARTIFACTS folder in tmp that reuses the exported text encoder.

    Module scope: the variable is restored when this file's tests end, so other packages'
    tests never see it."""
    root = tmp_path_factory.mktemp("artifacts")
    (root / "text_encoder").symlink_to(text_encoder_dir, target_is_directory=True)
    old = os.environ.get("ADGEN_ARTIFACTS")
    os.environ["ADGEN_ARTIFACTS"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ADGEN_ARTIFACTS", None)
    else:
        os.environ["ADGEN_ARTIFACTS"] = old


@pytest.fixture(scope="module")
def tiny_data(tiny_artifacts, tiny_dataset):
    from adgen.training.sampler import load_training_data
    return load_training_data(tiny_dataset, progress=False)


@pytest.fixture(scope="module")
def tiny_matcher(tiny_data):
    cfg = MatcherConfig(width=8, steps=200, batch_size=64, lr=3e-3, threads=1)
    return Matcher(train_matcher(tiny_data, cfg, progress=False), None, {})


def test_frechet_distance_basics():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shifted = a + np.array([3.0, 0, 0, 0])
    assert frechet_distance(a, shifted) == pytest.approx(9.0, rel=1e-6)
    assert frechet_distance(a, a * 2) > 1.0


def test_draw_items_excludes_own_caption(tiny_data):
    items = draw_items(tiny_data.embeddings, 0, 20, seed=1)
    n_colors = tiny_data.embeddings.shape[1]
    own = items.concept * n_colors + items.color
    assert len(items.concept) == tiny_data.n
    assert items.negatives.shape == (tiny_data.n, 19)
    assert not (items.negatives == own[:, None]).any()
    assert all(len(set(row)) == 19 for row in items.negatives)


def test_real_vs_real_reaches_the_ceiling_and_noise_sits_near_chance(tiny_data, tiny_matcher):
    table = tiny_data.embeddings
    items = draw_items(table, 0, 20, seed=3)
    rgba = (tiny_data.rgba.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    real = real_images(rgba, items)
    same = compare(real, real, items, table, tiny_matcher)
    for name in ("r_precision", "color_accuracy", "fd"):
        assert same[name]["generated"] == pytest.approx(same[name]["real"], abs=1e-9), name
    assert same["mae"]["generated"] == 0.0 and same["mse"]["generated"] == 0.0
    # The matcher and the border reader actually work on real images...
    # (the first 50 emoji are mostly keycaps and boxes that fill the frame, so the border
    # often is not background: the real ceiling is low here, ~0.3; on the full set ~0.9)
    assert same["color_accuracy"]["real"] >= 0.25
    assert same["r_precision"]["real"] >= 0.3  # chance is 0.05
    # ...and noise images sit near chance.
    noise = np.random.default_rng(0).integers(0, 256, real.shape, dtype=np.uint8)
    rnd = compare(noise, real, items, table, tiny_matcher)
    assert rnd["r_precision"]["generated"] <= 0.15
    assert rnd["color_accuracy"]["generated"] < same["color_accuracy"]["real"]
    assert rnd["fd"]["generated"] > 2 * same["fd"]["real"]
    assert rnd["mae"]["generated"] > 0.2


def test_eval_end_to_end_writes_json(tmp_path, tiny_data, tiny_dataset):
    from click.testing import CliRunner

    from adgen.training.checkpoint import save_generator
    from adgen.cli.eval import eval_cmd
    from adgen.training.networks import build_generator
    torch.manual_seed(0)
    g = build_generator("film", ngf=4, cond_dim=16)
    ckpt = save_generator(g, {"dataset_hash": tiny_data.dataset_hash}, tmp_path / "ckpt")
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(eval_cmd, [str(ckpt), "--data", str(tiny_dataset), "--items", "0",
                                        "--candidates", "20", "--matcher-steps", "20",
                                        "--matcher-width", "8", "--diversity-items", "8",
                                        "--threads", "1", "--no-progress", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "r_precision" in res.output and "color_accuracy" in res.output
    data = json.loads(out.read_text())
    for key in ("r_precision", "color_accuracy", "fd", "mae", "mse", "diversity"):
        assert set(data[key]) == {"generated", "real"}
    assert data["eval"]["n_items"] == tiny_data.n
    assert data["checkpoint"]["arch"] == "film"
    assert data["diversity"]["generated"] > 0.0  # z changes the image


def test_eval_rejects_a_bad_checkpoint(tmp_path):
    from adgen.cli import main
    assert main(["eval", str(tmp_path / "missing")]) == 2


def test_release_concepts_file_lists_every_concept(tmp_path, tiny_dataset):
    from adgen.training.release import CONCEPT_FIELDS, write_concepts
    n = write_concepts(tiny_dataset, tmp_path / "concepts.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "concepts.jsonl").read_text().splitlines()]
    source = (tiny_dataset / "captions.jsonl").read_text().splitlines()
    assert n == len(rows) == len(source) == 50
    assert all(set(r) == set(CONCEPT_FIELDS) for r in rows)
    assert rows[0]["name"] == json.loads(source[0])["name"]


def test_shipped_release_model_draws_the_asked_concept_on_the_asked_colour(repo_root,
                                                                          text_encoder):
    """The shipped generator, prompted as the offline expander writes, picks the named
    concept and paints the exact palette background (where the emoji leaves it empty).
    A concept whose name carries a colour word ("red apple") is the hard case beside a
    background colour: single prompts flip ("a red apple ... on a teal background" read
    "green apple" after one of the 12-03 rounds, not shipped), so beside the four exact asks
    that class is held to a rate over every background colour (benchmarks.wording's
    colour-named set: 0.965 for the 12-03 release, 0.961 the release before; rounds that
    fell to 0.944-0.949 were not shipped)."""
    from adgen.captions import COLOR_NAMES, PALETTE, caption, colors_in
    from adgen.latents import seeds_to_z
    from adgen.training.checkpoint import load_generator
    release = repo_root / "models" / "adgen-emoji64"
    if not (release / "generator.safetensors").is_file():
        pytest.skip("no release model in this checkout")
    loaded = load_generator(release)
    names = [json.loads(line)["name"] for line in
             (release / "concepts.jsonl").read_text(encoding="utf-8").splitlines()]
    asks = [("red apple", "teal"), ("pizza", "navy"), ("rocket", "yellow"), ("dog face", "pink")]
    emb = torch.from_numpy(text_encoder.encode([caption(n, c) for n, c in asks]))
    with torch.no_grad():
        concept_logits = loaded.module.heads(emb)[0]     # every arch: concepts come first
        images = loaded.module(emb, torch.from_numpy(seeds_to_z([1, 2, 3, 4], loaded.z_dim)))
    assert [names[i] for i in concept_logits.argmax(1).tolist()] == [n for n, _ in asks]
    coloured = [n for n in names if colors_in(n)]
    prompts = [(k, caption(n, c)) for k, n in enumerate(coloured) for c in COLOR_NAMES]
    with torch.no_grad():
        got = loaded.module.heads(torch.from_numpy(
            text_encoder.encode([t for _, t in prompts])))[0].argmax(1).tolist()
    right = sum(names[i] == coloured[k] for (k, _), i in zip(prompts, got))
    assert len(coloured) > 20 and right / len(prompts) >= 0.95, (right, len(prompts))
    corners = ((images[:, :, :2, :2] + 1) * 127.5).mean((2, 3))           # [4, 3]
    want = torch.tensor([PALETTE[c] for _, c in asks], dtype=torch.float32)
    assert (corners - want).abs().max() <= 4.0


def _eval_args(ckpt, data, out, *extra):
    return ["eval", str(ckpt), "--data", str(data), "--items", "0", "--candidates", "20",
            "--matcher-steps", "20", "--matcher-width", "8", "--diversity-items", "8",
            "--threads", "1", "--no-progress", "-o", str(out), *extra]


def test_eval_scores_a_composer_on_the_twemoji_set_naming_its_family(tmp_path, tiny_data,
                                                                      tiny_dataset):
    """A composer is trained on a design-family dataset: the twemoji-set eval accepts it, says
    so, and with --style the prompts name the family."""
    from adgen.captions import COLOR_NAMES, caption
    from adgen.cli import main
    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    torch.manual_seed(0)
    g = build_generator("composer", n_concepts=8, latent_ch=4, dec_width=4, hidden=32)
    with torch.no_grad():
        for name, p in g.named_parameters():
            if name.endswith("_head.weight"):  # heads that respond to the prompt's words
                p.normal_(0.0, 5.0 / p.shape[1] ** 0.5)
    ckpt = save_generator(g, {"dataset_hash": "families-not-this-set"}, tmp_path / "ckpt")
    plain, styled = tmp_path / "plain.json", tmp_path / "styled.json"
    assert main(_eval_args(ckpt, tiny_dataset, plain)) == 0
    assert main(_eval_args(ckpt, tiny_dataset, styled, "--style", "noto")) == 0
    a, b = json.loads(plain.read_text()), json.loads(styled.read_text())
    assert "no family named" in a["eval"]["cross_dataset"]
    assert "naming noto" in b["eval"]["cross_dataset"] and b["eval"]["style"] == "noto"
    assert a["r_precision"]["real"] == b["r_precision"]["real"]  # same items, same captions
    # The styled prompts are the canonical captions with the family named at the end.
    from adgen.training.eval import draw_items, styled_items
    from adgen.training.stages import encode_cached
    items = draw_items(tiny_data.embeddings, 4, 20, seed=1)
    styled_emb = styled_items(tiny_data.names, items, "noto", progress=False).text
    texts = [f"{caption(tiny_data.names[c], COLOR_NAMES[k])}, in noto emoji style"
             for c, k in zip(items.concept, items.color)]
    assert torch.allclose(styled_emb, torch.from_numpy(encode_cached(texts, "t", progress=False)))
    assert not torch.allclose(styled_emb, items.text)


def test_eval_style_and_dataset_refusals(tmp_path, tiny_data, tiny_dataset, capsys):
    from adgen.cli import main
    from adgen.training.checkpoint import save_generator
    from adgen.training.networks import build_generator
    film = save_generator(build_generator("film", ngf=4, cond_dim=16),
                          {"dataset_hash": "another-set"}, tmp_path / "film")
    out = tmp_path / "x.json"
    assert main(_eval_args(film, tiny_dataset, out)) == 2           # another dataset
    assert "trained on dataset another-set" in capsys.readouterr().err
    assert main(_eval_args(film, tiny_dataset, out, "--style", "noto")) == 2  # not a composer
    assert "needs a checkpoint that knows design families" in capsys.readouterr().err
    assert main(_eval_args(film, tiny_dataset, out, "--style", "comic")) == 2
    assert "unknown design family 'comic'" in capsys.readouterr().err
    assert not out.exists()
