"""Tests for the frozen keras-hub text encoder on tiny random presets."""

import numpy as np
import pytest

from learn_tf.embeddings.text_embedder import EmbedderLoadError, TextEmbedder, bucket_length

# Lengths from 1 token to past max_tokens, so batches span several buckets plus pooled remainders.
TEXTS = (["", "a", "the toy story", "space war", "a love night", "the toy story"]
         + [" ".join(["the"] * k) for k in range(2, 60, 3)]
         + ["comedy drama night day " * k for k in range(1, 4)])


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


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_bucketed_batches_equal_unbucketed(kind, pooling, tiny_decoder_preset, tiny_encoder_preset):
    """Length-bucketed batching (the Beam job's and the loop's) changes no vector beyond float tolerance."""
    preset = tiny_decoder_preset if kind == "decoder" else tiny_encoder_preset
    enc = TextEmbedder(preset, pooling=pooling, max_tokens=48)
    bucketed = enc.embed_texts(TEXTS, batch_size=4)
    ids, _ = enc.tokenize(TEXTS)
    alone = np.stack([enc.embed_ids([r])[0] for r in ids])  # one text per pass, no padding at all
    one_batch = enc.embed_ids(ids, pad_to=48)  # input order, everything padded to max_tokens
    assert np.allclose(bucketed, alone, atol=1e-5)
    assert np.allclose(bucketed, one_batch, atol=1e-5)
    assert len({len(r) for r in ids}) > 8  # the sample spans many lengths


def test_padding_cut_and_ceil_n_over_b_backbone_calls(tiny_decoder_preset):
    enc = TextEmbedder(tiny_decoder_preset, max_tokens=48)
    calls = int(enc.backbone_calls.numpy())
    enc.embed_texts(["a", "the love of space and war " * 3, "space war night day comedy drama"], batch_size=32)
    assert int(enc.backbone_calls.numpy()) - calls == 1  # three lengths, three buckets: one pass
    calls, real, padded = int(enc.backbone_calls.numpy()), enc.real_tokens, enc.padded_tokens
    enc.embed_texts(TEXTS, batch_size=4)
    assert int(enc.backbone_calls.numpy()) - calls == -(-len(TEXTS) // 4)
    assert (enc.padded_tokens - padded) / (enc.real_tokens - real) < 1.5


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_fast_and_keras_tokenizers_agree(kind, tiny_decoder_preset, tiny_encoder_preset):
    preset = tiny_decoder_preset if kind == "decoder" else tiny_encoder_preset
    fast = TextEmbedder(preset, max_tokens=16)
    slow = TextEmbedder(preset, max_tokens=16, fast_tokenizer=False)
    assert fast.fast_tokenizer and not slow.fast_tokenizer
    assert fast.tokenizer_setup_seconds > 0 and slow.tokenizer_setup_seconds > 0
    a, ta = fast.tokenize(TEXTS)
    b, tb = slow.tokenize(TEXTS)
    assert ta == tb and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_jit_compile_setting_gives_the_same_vectors(tiny_encoder_preset):
    plain = TextEmbedder(tiny_encoder_preset, max_tokens=32)
    jit = TextEmbedder(tiny_encoder_preset, max_tokens=32, jit_compile=True)
    assert jit.pad_multiple == 16 and plain.pad_multiple == 1
    assert np.allclose(plain.embed_texts(TEXTS[:10]), jit.embed_texts(TEXTS[:10]), atol=1e-5)
    assert int(jit.backbone_calls.numpy()) == 1


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


def test_embed_texts_reports_progress(tiny_encoder_preset):
    enc = TextEmbedder(tiny_encoder_preset, max_tokens=32)
    seen = []
    enc.embed_texts(TEXTS, batch_size=8, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (len(TEXTS), len(TEXTS)) and len(seen) == -(-len(TEXTS) // 8)
