"""adgen.serving.runtime.backend without a server: validation, and a pipeline whose bytes do not depend on
how requests are batched (the property that makes Triton and --engine local agree)."""
import numpy as np
import pytest

from adgen.serving.runtime.backend import InvalidInput, Pipeline, check_seeds, decode_prompt, latents
from adgen.contract import MAX_PROMPT_BYTES
from adgen.latents import seed_to_z


@pytest.mark.parametrize("value,match", [
    (b"x" * (MAX_PROMPT_BYTES + 1), "over the 2000-byte limit"),
    (b"caf\xe9", "not valid UTF-8"),
    (123, "must be bytes"),
])
def test_bad_prompts_are_invalid_input(value, match):
    with pytest.raises(InvalidInput, match=match):
        decode_prompt(value)


def test_prompt_at_the_limit_and_unicode_pass():
    assert decode_prompt("é".encode() * (MAX_PROMPT_BYTES // 2)) == "é" * (MAX_PROMPT_BYTES // 2)
    assert decode_prompt(np.array(b"ok", dtype=object)) == "ok"


def test_seeds():
    assert check_seeds(np.array([[0], [5]], dtype=np.int32)).tolist() == [0, 5]
    with pytest.raises(InvalidInput, match="got -1"):
        check_seeds(np.array([3, -1]))
    with pytest.raises(InvalidInput, match="integers"):
        check_seeds(np.array([1.5]))
    with pytest.raises(InvalidInput, match="2\\*\\*63-1"):
        check_seeds(np.array([2**63], dtype=np.uint64))
    z = latents(np.array([7, 8]), 16)
    assert z.dtype == np.float32 and np.array_equal(z[1], seed_to_z(8, 16))


@pytest.fixture(scope="module")
def pipeline(small_onnx, text_encoder_dir):
    return Pipeline(text_encoder_dir, small_onnx, threads=2)


PROMPTS = ["a red apple, flat sticker style, on a teal background",
           "summer sale sneakers", "a tiny cat",
           "a very long prompt about a chocolate gift box " * 10]


def test_batch_composition_does_not_change_bytes(pipeline):
    seeds = [11, 22, 33, 44]
    together = pipeline.run(PROMPTS, seeds)
    assert together.shape == (4, 64, 64, 3) and together.dtype == np.uint8
    pipeline.embed._data.clear()  # also recompute the embeddings
    alone = np.concatenate([pipeline.run([p], [s]) for p, s in zip(PROMPTS, seeds)])
    mixed = pipeline.run(PROMPTS[2:] + PROMPTS[:2], seeds[2:] + seeds[:2])
    assert np.array_equal(together, alone)
    assert np.array_equal(together, np.concatenate([mixed[2:], mixed[:2]]))
    # and the inputs matter: another seed or prompt gives another image
    assert not np.array_equal(pipeline.run(PROMPTS[:1], [12])[0], together[0])
    assert not np.array_equal(pipeline.run(PROMPTS[1:2], [11])[0], together[0])


def test_pipeline_reports_the_exported_model(pipeline, small_onnx):
    import json
    manifest = json.loads((small_onnx / "manifest.json").read_text())
    assert pipeline.info.sha256 == manifest["files"]["generator.onnx"]["sha256"]
    assert pipeline.z_dim == manifest["z_dim"]
    assert pipeline.info.name == "small"
