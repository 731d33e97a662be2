"""Tests for the frozen keras-hub text encoder on tiny random presets."""

import numpy as np
import pytest

from learn_tf.embeddings.text_embedder import EmbedderLoadError, TextEmbedder, bucket_length


def test_bucket_length():
    assert [bucket_length(n, 64) for n in (1, 16, 17, 33, 70)] == [16, 16, 32, 48, 64]


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_unit_norm_padding_invariant_and_order_stable(kind, pooling, tiny_decoder_preset, tiny_encoder_preset):
    preset = tiny_decoder_preset if kind == "decoder" else tiny_encoder_preset
    enc = TextEmbedder(preset, pooling=pooling, max_tokens=32)
    texts = ["the toy story", "space war", "a love night", "the toy story"]
    x = enc.embed_texts(texts, batch_size=3)
    assert x.shape == (4, 16) and np.isfinite(x).all()
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.allclose(x[0], x[3], atol=1e-6)
    assert not np.allclose(x[0], x[1], atol=1e-3)
    ids, _ = enc.tokenize(texts[:1])
    # Right padding under the mask does not change the vector.
    assert np.allclose(enc.embed_ids(ids), enc.embed_ids(ids, pad_to=32), atol=1e-5)
    single = enc.embed_texts(texts[1:2])
    assert np.allclose(single[0], x[1], atol=1e-5)


def test_truncation_and_empty_text(tiny_decoder_preset):
    enc = TextEmbedder(tiny_decoder_preset, max_tokens=8)
    ids, truncated = enc.tokenize(["word " * 50, "", "ok"])
    assert truncated == [True, False, False]
    assert len(ids[0]) == 8 and len(ids[1]) == 1
    assert np.isfinite(enc.embed_ids(ids)).all()


def test_unreadable_model_path_is_named(tmp_path):
    with pytest.raises(EmbedderLoadError, match="nope"):
        TextEmbedder(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EmbedderLoadError, match="empty"):
        TextEmbedder(str(tmp_path / "empty"))
