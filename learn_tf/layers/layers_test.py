"""Tests for the tower layers: masks, padding, serialisation."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.layers import CausalTransformerEncoder, ContentAdaptor, ContentTable, ProjectionHead, attention_mask


def test_attention_mask_modes():
    pad = tf.constant([[True, True, True, False]])
    causal = attention_mask(pad, "causal").numpy()[0]
    assert causal.tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]
    own = attention_mask(pad, "self").numpy()[0]
    assert own.tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError, match="attention mode"):
        attention_mask(pad, "bidirectional")


def _encoder(**kw):
    tf.keras.utils.set_random_seed(0)
    return CausalTransformerEncoder(num_layers=2, num_heads=2, d_model=8, ff_dim=16, dropout=0.0, max_len=6, **kw)


@pytest.mark.parametrize("positions", [False, True])
def test_causal_encoder_ignores_future_and_padding(positions):
    enc = _encoder(use_positions=positions)
    x = tf.random.normal([2, 5, 8], seed=1)
    pad = tf.constant([[True] * 5, [True, True, True, False, False]])
    out = enc(x, pad).numpy()
    # Changing position 3 leaves positions 0..2 unchanged (causal), and changing
    # padded positions of row 1 changes nothing real.
    x2 = tf.tensor_scatter_nd_update(x, [[0, 3], [1, 4]], tf.random.normal([2, 8], seed=2))
    out2 = enc(x2, pad).numpy()
    assert np.allclose(out[0, :3], out2[0, :3], atol=1e-5)
    assert not np.allclose(out[0, 3], out2[0, 3], atol=1e-3)
    assert np.allclose(out[1, :3], out2[1, :3], atol=1e-5)


def test_self_mode_encodes_each_position_alone():
    enc = _encoder()
    x = tf.random.normal([1, 4, 8], seed=3)
    pad = tf.ones([1, 4], tf.bool)
    full = enc(x, pad, mode="self").numpy()[0]
    alone = np.concatenate([enc(x[:, i:i + 1], pad[:, :1], mode="self").numpy()[0] for i in range(4)])
    assert np.allclose(full, alone, atol=1e-5)


def test_content_table_adaptor_projection():
    table = np.arange(12, dtype=np.float32).reshape(3, 4)
    ct = ContentTable(3, 4, table)
    out = ct(tf.constant([[0, 1, 3]])).numpy()[0]
    assert np.array_equal(out[0], np.zeros(4)) and np.array_equal(out[1], table[0]) and np.array_equal(out[2], table[2])
    ct.set_table(table * 2)
    assert np.array_equal(ct(tf.constant([2])).numpy()[0], table[1] * 2)
    with pytest.raises(ValueError, match="expected \\(3, 4\\)"):
        ct.set_table(np.zeros((2, 4)))
    y = ProjectionHead(5)(ContentAdaptor(6)(tf.constant(table)))
    assert y.shape == (3, 5) and np.allclose(np.linalg.norm(y.numpy(), axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("layer", [
    ContentAdaptor(6, input_norm=False, dropout=0.1),
    ProjectionHead(5),
    ContentTable(3, 4),
    CausalTransformerEncoder(1, 2, 8, 16, 0.1, 7, True),
])
def test_get_config_roundtrip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(restored) is type(layer)


def test_content_table_errors_name_both_shapes_and_the_fix():
    with pytest.raises(ValueError, match=r"width 5 but the layer was built for dim 4\. Re-run `learn embed`"):
        ContentTable(3, 4, np.zeros((3, 5)))
    ct = ContentTable(3, 4)
    ct(tf.constant([0]))
    with pytest.raises(ValueError, match="2 rows for a catalogue of 3 items"):
        ct.set_table(np.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"shape \(12,\), expected \(3, 4\)"):
        ct.set_table(np.zeros(12))


def test_content_table_writes_large_tables_block_by_block(monkeypatch):
    from learn_tf.layers import content_table

    monkeypatch.setattr(content_table, "_BLOCK_BYTES", 3 * 4 * 5)  # 3 rows of width 5 per scatter
    table = np.arange(7 * 5, dtype=np.float32).reshape(7, 5) + 1
    layer = ContentTable(7, 5, table)
    out = layer(tf.constant([0, 1, 3, 4, 7])).numpy()
    assert np.array_equal(out, np.concatenate([np.zeros((1, 5), np.float32), table[[0, 2, 3, 6]]]))
    layer.set_table(table[::-1].copy())  # replacing keeps row 0 zero and every row in place
    assert np.array_equal(layer.table.numpy(), np.concatenate([np.zeros((1, 5), np.float32), table[::-1]]))
