"""Tests for the per-user SequenceExample records: round trip, roles, bad records named clearly."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.data import sequence_examples as sx
from learn_tf.models.catalogue import Catalogue
from learn_tf.training.inputs import PackedSequences, pack_sequences, sequences_from_records

CATALOGUE = Catalogue(["a", "b", "c", "d", "e"])  # a -> 1 ... e -> 5


def _write(path, records):
    with tf.io.TFRecordWriter(path) as w:
        for r in records:
            w.write(r)


def _record(user, items, roles):
    n = len(items)
    return sx.user_sequence_example(user, items, list(range(100, 100 + n)), list(range(n)), roles)


def _mismatched():
    """u9 with one item but no timestamps."""
    def ints(values):
        return tf.train.FeatureList(feature=[tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
                                             for v in values])
    return tf.train.SequenceExample(
        context=tf.train.Features(feature={"user_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u9"]))}),
        feature_lists=tf.train.FeatureLists(feature_list={
            "item_id": tf.train.FeatureList(feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a"]))]),
            "timestamp": ints([]), "row": ints([1]), "role": ints([0])})).SerializeToString()


def _bad_role():
    """u9 whose only position has role code 5."""
    ex = tf.train.SequenceExample.FromString(_record("u9", ["a"], [0]))
    ex.feature_lists.feature_list["role"].feature[0].int64_list.value[0] = 5
    return ex.SerializeToString()


def test_position_roles_follow_make_splits_rules():
    assert sx.position_roles(["a", "b", "c", "d"], {"b"}, 3).tolist() == [sx.TRAIN, sx.COLD, sx.VALIDATION, sx.TEST]
    assert sx.position_roles(["a", "b"], {"b"}, 3).tolist() == [sx.TRAIN, sx.COLD]  # too short: no eval cases
    assert sx.position_roles(["a", "b", "c"], {"c"}, 3).tolist() == [sx.TRAIN, sx.VALIDATION, sx.TEST]


def test_round_trip_keeps_every_field_and_reads_training_positions(tmp_path):
    items, roles = ["c", "a", "e", "b"], [sx.TRAIN, sx.COLD, sx.VALIDATION, sx.TEST]
    raw = sx.user_sequence_example("u1", items, [5, 6, 6, 9], [3, 0, 7, 8], roles)
    assert raw == sx.user_sequence_example("u1", items, [5, 6, 6, 9], [3, 0, 7, 8], roles)  # deterministic
    ex = sx.check_sequence_example(raw, "here")
    fl = ex.feature_lists.feature_list
    assert ex.context.feature["user_id"].bytes_list.value == [b"u1"]
    assert [f.bytes_list.value[0].decode() for f in fl["item_id"].feature] == items
    assert [f.int64_list.value[0] for f in fl["timestamp"].feature] == [5, 6, 6, 9]
    assert [f.int64_list.value[0] for f in fl["row"].feature] == [3, 0, 7, 8]
    assert [f.int64_list.value[0] for f in fl["role"].feature] == roles

    d = tmp_path / "seq"
    d.mkdir()
    _write(str(d / "sequences-00000-of-00002.tfrecord"),
           [raw, _record("u2", ["b", "d", "d", "a", "c"], [sx.TRAIN, sx.TRAIN, sx.TRAIN, sx.VALIDATION, sx.TEST])])
    _write(str(d / "sequences-00001-of-00002.tfrecord"),
           [_record("u3", ["e", "a", "b"], [sx.COLD, sx.VALIDATION, sx.TEST]),  # no training position
            _record("u4", ["a", "b"], [sx.TRAIN, sx.TRAIN])])
    counts = sx.ReadCounts()
    packed = sequences_from_records(str(d), CATALOGUE, batch_size=2, counts=counts)
    assert [s.tolist() for s in packed] == [[3], [2, 4, 4], [1, 2]]
    assert (counts.records, counts.sequences, counts.users_without_training, counts.training_items) == (4, 3, 1, 6)
    assert packed.equals(PackedSequences.from_arrays([[3], [2, 4, 4], [1, 2]]))


@pytest.mark.parametrize("corrupt, message", [
    (lambda: b"\x08\x96\x01not a proto", r"record 1: not a tf.train.SequenceExample"),
    (lambda: tf.train.SequenceExample().SerializeToString(), r"record 1: context feature 'user_id'"),
    (lambda: _mismatched(), r"record 1 \(user 'u9'\): sequence features have different lengths"),
    (lambda: _bad_role(),
     r"record 1 \(user 'u9'\): sequence feature 'role' position 0 holds 5"),
    (lambda: _record("u9", ["a", "b"], [0, 0]).replace(b"role", b"rolf"),
     r"record 1 \(user 'u9'\): sequence feature 'role' is missing"),
])
def test_bad_records_are_named_by_file_record_user_and_field(tmp_path, corrupt, message):
    path = str(tmp_path / "sequences-00000-of-00001.tfrecord")
    _write(path, [_record("u1", ["a", "b"], [0, 0]), corrupt()])
    with pytest.raises(sx.SequenceRecordError, match=f"sequences-00000-of-00001.tfrecord {message}"):
        sequences_from_records(str(tmp_path), CATALOGUE)


def test_unknown_role_and_unknown_item_are_named(tmp_path):
    with pytest.raises(ValueError, match="user 'u1': role code 7"):
        sx.user_sequence_example("u1", ["a"], [1], [1], [7])
    path = str(tmp_path / "sequences-00000-of-00001.tfrecord")
    _write(path, [_record("u1", ["a", "b"], [0, 0]), _record("u2", ["a", "zz", "c"], [0, 0, 0])])
    with pytest.raises(sx.SequenceRecordError, match=r"record 1 \(user 'u2'\): training item 'zz' is not in the "
                                                     r"catalogue \(5 items\)"):
        sequences_from_records(str(tmp_path), CATALOGUE)
    # Only training positions are looked up: an evaluation position outside the catalogue is not an error here.
    _write(path, [_record("u1", ["a", "zz"], [0, sx.TEST])])
    assert [s.tolist() for s in sequences_from_records(str(tmp_path), CATALOGUE)] == [[1]]


def test_files_that_are_not_tfrecords_and_missing_shards_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no sequences-\\*.tfrecord shards under {tmp_path}"):
        sequences_from_records(str(tmp_path), CATALOGUE)
    path = str(tmp_path / "sequences-00000-of-00001.tfrecord")
    with gzip.open(path, "wb") as f:  # a gzipped file where plain TFRecords are expected
        f.write(b"x" * 100)
    with pytest.raises(sx.SequenceRecordError, match="sequences-00000-of-00001.tfrecord: not a readable TFRecord"):
        sequences_from_records(str(tmp_path), CATALOGUE)
    os.remove(path)
    _write(path, [_record("u1", ["a", "b"], [0, 0])])
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[:-6])  # truncated
    with pytest.raises(sx.SequenceRecordError, match="not a readable TFRecord file after record 0"):
        sequences_from_records(str(tmp_path), CATALOGUE)


def test_users_out_of_order_are_refused():
    batches = [(np.array([b"u2"], object), np.array([1], np.int32), np.array([1])),
               (np.array([b"u1"], object), np.array([2], np.int32), np.array([1]))]
    with pytest.raises(ValueError, match="not in user order: user 'u1' follows 'u2'"):
        pack_sequences(iter(batches))
    with pytest.raises(ValueError, match="not in user order"):
        pack_sequences(iter([(np.array([b"u2", b"u1"], object), np.array([1, 2], np.int32), np.array([1, 1]))]))
