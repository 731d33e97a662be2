"""Vocabulary extension: text-only logits unchanged, ID tokens routed to the tables, only the tables train."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.cllm4rec.vocab import FrozenLM, IdTables, IdVocabulary


@pytest.fixture(scope="module")
def lm(tiny_decoder_preset: str) -> FrozenLM:
    return FrozenLM.from_preset(tiny_decoder_preset)


def test_vocabulary_places_users_then_items() -> None:
    v = IdVocabulary(base_size=100, num_users=3, num_items=5)
    assert (v.size, v.user_token(0), v.user_token(2), v.item_offset) == (108, 100, 102, 103)
    np.testing.assert_array_equal(v.item_tokens([0, 4]), [103, 107])
    with pytest.raises(IndexError):
        v.item_tokens([5])
    with pytest.raises(IndexError):
        v.user_token(3)


def test_text_only_input_keeps_every_original_logit(lm: FrozenLM) -> None:
    tables = IdTables(4, 7, lm.dim, seed=1)
    ids = np.array([[5, 60, 7, 9, 11], [3, 200, 17, 0, 0]], np.int32)
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], np.int32)
    hidden = lm.backbone({"token_ids": ids, "padding_mask": mask})
    original = np.asarray(lm.backbone.token_embedding(hidden, reverse=True))
    extended = lm.extended_logits(ids, mask, tables).numpy()
    assert extended.shape == (2, 5, lm.base_size + 4 + 7)
    np.testing.assert_array_equal(extended[..., : lm.base_size], original)


def test_id_tokens_read_their_own_tables(lm: FrozenLM) -> None:
    tables = IdTables(4, 7, lm.dim, seed=1)
    v = IdVocabulary(lm.base_size, 4, 7)
    ids = tf.constant([[5, v.user_token(3), int(v.item_tokens([6])[0]), int(v.item_tokens([0])[0])]])
    emb = lm.lookup(ids, tables).numpy()[0]
    np.testing.assert_array_equal(emb[0], np.asarray(lm.embedding(tf.constant([5])))[0])
    np.testing.assert_array_equal(emb[1], tables.users.numpy()[3])
    np.testing.assert_array_equal(emb[2], tables.items.numpy()[6])
    np.testing.assert_array_equal(emb[3], tables.items.numpy()[0])
    assert abs(float(tables.items.numpy().std()) - 0.02) < 0.01  # N(0, 0.02^2) initialisation


def test_only_the_tables_are_trainable(lm: FrozenLM) -> None:
    tables = IdTables(4, 7, lm.dim)
    assert lm.backbone.trainable_weights == []
    assert not any(w.trainable for w in lm.frozen_weights())
    assert [w.shape for w in tables.trainable_weights] == [(4, lm.dim), (7, lm.dim)]
