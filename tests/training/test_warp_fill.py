"""The geometric-analogy fill of held-out cells (adgen.training.warp_fill)."""
import numpy as np
import torch

from adgen.training.warp_fill import fit_warp, premultiplied, warp, warp_targets


def _square(shift: int = 0) -> np.ndarray:
    img = np.zeros((64, 64, 4), np.uint8)
    img[20 + shift:40 + shift, 18:38] = (200, 40, 40, 255)
    return img


def test_fit_warp_bends_a_drawing_onto_its_moved_copy():
    src, dst = premultiplied(np.stack([_square()])), premultiplied(np.stack([_square(6)]))
    before = (src - dst).abs().mean()
    after = (warp(src, fit_warp(src, dst)) - dst).abs().mean()
    assert after < 0.3 * before


def test_warp_targets_read_only_trained_cells():
    """Cells (concept, family); concept 0 is held out of family 1. Whatever its real
    drawing there is, the filler's picture is the same; it moves with the concept's twemoji
    drawing and takes the neighbour's colour change."""
    rng = np.random.default_rng(0)
    images = np.stack([np.stack([_square(s), _square(s + 4), _square(s - 4)])
                       for s in (0, 2, -2, 5)])                           # [C, F, 64, 64, 4]
    images[:, 1, ..., :3] = (30, 30, 200)                     # family 1 draws blue
    mask = np.ones((4, 3), bool)
    mask[0, 1] = False
    c, f = np.array([0]), np.array([1])
    first = warp_targets(premultiplied(images), mask, c, f)["recoloured"]
    images[0, 1] = rng.integers(0, 256, images[0, 1].shape, dtype=np.uint8)
    again = warp_targets(premultiplied(images), mask, c, f)["recoloured"]
    torch.testing.assert_close(first, again)
    alpha = first[0, 3] > 0.5
    rgb = first[0, :3, alpha] / first[0, 3, alpha]
    assert rgb[2].mean() > 0.6 and rgb[0].mean() < 0.3       # blue, as family 1 draws
    rows = alpha.any(1).nonzero().squeeze(1)
    assert rows.min() >= 22                         # moved down like the neighbours' drawings
