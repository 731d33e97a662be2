"""Tests for the Beam sequence step: the streamed SequenceExample path trains on what the in-memory path does."""

import os

import numpy as np
import pytest
import tensorflow as tf

from beam.sequences import write_sequences
from learn_tf.config import SplitConfig, SyntheticConfig, TrainConfig
from learn_tf.data import sequence_examples as sx
from learn_tf.data.splits import make_splits
from learn_tf.data.synthetic import generate_synthetic
from learn_tf.data.tfrecords import write_interactions_tfrecord
from learn_tf.models.catalogue import Catalogue
from learn_tf.training.inputs import sequences_from_records, sequences_from_split
from learn_tf.training.jobs import training_inputs
from learn_tf.training.sampler import SequenceSampler
from learn_tf.training.trainer import epoch_dataset

SPLIT = SplitConfig(cold_item_fraction=0.1, seed=5, min_user_interactions=3)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Synthetic data with timestamp ties and unknown items, through both paths."""
    items, inter = generate_synthetic(SyntheticConfig(num_items=120, num_users=60, mean_sequence_length=12,
                                                      min_sequence_length=1, seed=3))
    inter["timestamp"] = inter["timestamp"] // 400_000  # coarse clock: many ties, broken by row
    inter = inter.sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows arrive out of order
    unknown = set(items["item_id"].iloc[:4])
    items = items[~items["item_id"].isin(unknown)].reset_index(drop=True)
    d = tmp_path_factory.mktemp("seq")
    path = str(d / "interactions.tfrecord")
    write_interactions_tfrecord(inter, path)
    out = str(d / "sequences")
    manifest = write_sequences([path], items["item_id"].tolist(), SPLIT, out, num_shards=3,
                               compression="UNCOMPRESSED")
    known = inter[~inter["item_id"].isin(unknown)].reset_index(drop=True)
    splits = make_splits(items, known, SPLIT)
    catalogue = Catalogue(np.sort(items["item_id"].to_numpy()))
    return {"items": items, "inter": inter, "unknown": unknown, "known": known, "splits": splits, "out": out,
            "manifest": manifest, "catalogue": catalogue}


def test_streamed_sequences_equal_the_in_memory_ones(built):
    in_memory = sequences_from_split(built["splits"].train, built["catalogue"])
    counts = sx.ReadCounts()
    streamed = sequences_from_records(built["out"], built["catalogue"], batch_size=7, counts=counts)
    assert len(in_memory) > 40 and streamed.equals(in_memory)
    assert counts.training_items == len(built["splits"].train) and counts.sequences == len(streamed)
    # The one input builder, fed both ways, as the Trainer and `learn train` call it.
    ids = built["catalogue"].item_ids
    matrix = np.eye(len(ids), 4, dtype=np.float32)
    _, _, a = training_inputs(built["items"], built["splits"].train, ids, matrix)
    _, _, b = training_inputs(built["items"], built["out"], ids, matrix)
    assert a.equals(b)


def test_manifest_counts_and_sorted_shards(built):
    m, splits = built["manifest"], built["splits"]
    dropped = int(built["inter"]["item_id"].isin(built["unknown"]).sum())
    assert dropped > 0 and m["unknown_item_dropped"] == dropped and m["interactions_in"] == len(built["inter"])
    assert m["positions"] == len(built["known"]) and m["users"] == built["known"]["user_id"].nunique()
    assert m["roles"]["train"] == len(splits.train)
    assert m["roles"]["validation"] == len(splits.cases("validation"))
    assert m["roles"]["test"] == len(splits.cases("test"))
    assert m["roles"]["cold"] == splits.summary["cold_interactions_removed_from_train"]
    files = sx.shard_files(built["out"])
    assert [os.path.basename(f) for f in files] == sorted(m["shards"]) and len(files) >= 2
    users = [tf.train.SequenceExample.FromString(r).context.feature["user_id"].bytes_list.value[0].decode()
             for f in files for r in tf.data.TFRecordDataset(f).as_numpy_iterator()]
    assert users == sorted(users) and len(users) == m["users"] == sum(m["shards"].values())
    assert not [f for f in os.listdir(built["out"]) if f.endswith(".tmp")]  # nothing half-written left


def test_evaluation_targets_marked_per_position(built):
    """The validation / test positions hold the split's targets, their earlier items its histories."""
    cases = built["splits"].eval_cases.set_index(["split", "user_id"])
    for f in sx.shard_files(built["out"]):
        for raw in tf.data.TFRecordDataset(f).as_numpy_iterator():
            ex = sx.check_sequence_example(raw, f)
            user = ex.context.feature["user_id"].bytes_list.value[0].decode()
            fl = ex.feature_lists.feature_list
            items = [x.bytes_list.value[0].decode() for x in fl["item_id"].feature]
            roles = [x.int64_list.value[0] for x in fl["role"].feature]
            for code, split in ((sx.VALIDATION, "validation"), (sx.TEST, "test")):
                if code in roles:
                    j = roles.index(code)
                    case = cases.loc[(split, user)]
                    assert case["target_item_id"] == items[j]
                    assert list(case["history"]) == items[max(0, j - SPLIT.history_max_len):j]


@pytest.mark.parametrize("train", [
    TrainConfig(sampling="dense", max_len=6, num_targets=1, num_query_positions=1, samples_per_user=4, seed=2024,
                batch_size=16),
    TrainConfig(sampling="next_item", max_len=5, seed=7, batch_size=8),
    TrainConfig(sampling="window", max_len=6, num_targets=3, num_query_positions=2, samples_per_user=2, seed=1,
                batch_size=8),
])
def test_training_batches_are_identical(built, train):
    in_memory = sequences_from_split(built["splits"].train, built["catalogue"])
    streamed = sequences_from_records(built["out"], built["catalogue"])

    def epochs(seqs):
        ds = epoch_dataset(SequenceSampler(seqs, train, seed=train.seed), train.batch_size)
        return [[{k: v.numpy() for k, v in b.items()} for b in ds] for _ in range(2)]

    a, b = epochs(in_memory), epochs(streamed)
    assert len(a[0]) > 2 and a[0][0]["history"].shape[0] == train.batch_size
    for ea, eb in zip(a, b):
        assert len(ea) == len(eb)
        for ba, bb in zip(ea, eb):
            assert ba.keys() == bb.keys() and all(np.array_equal(ba[k], bb[k]) for k in ba)
    assert not np.array_equal(a[0][0]["history"], a[1][0]["history"])  # a fresh shuffle each epoch


def test_missing_input_and_bad_shard_count(tmp_path):
    with pytest.raises(FileNotFoundError, match="no interaction files"):
        write_sequences([], ["a"], SPLIT, str(tmp_path))
    with pytest.raises(ValueError, match="num_shards must be >= 1"):
        write_sequences([str(tmp_path / "x")], ["a"], SPLIT, str(tmp_path), num_shards=0)


def test_validation_cases_earlier_items_from_the_records(built):
    """The Trainer's early-stopping cases: earlier items from the shards equal add_earlier_items on the table."""
    from learn_tf.evaluation.cases import add_earlier_items

    for split in ("validation", "test"):
        cases = built["splits"].cases(split)
        expected = add_earlier_items(cases, built["known"])["earlier_items"].tolist()
        assert len(cases) > 10 and sx.earlier_items(sx.shard_files(built["out"]), cases, batch_size=5) == expected
    wrong = built["splits"].cases("test").head(3).copy()
    wrong.loc[1, "target_item_id"] = "nope"
    with pytest.raises(ValueError, match=f"case of user {wrong.loc[1, 'user_id']!r} \\(test\\): target 'nope'"):
        sx.earlier_items(sx.shard_files(built["out"]), wrong)
    wrong = built["splits"].cases("test").head(2).copy()
    wrong.loc[0, "user_id"] = "nobody"
    with pytest.raises(ValueError, match="1 case users have no record \\(e.g. user 'nobody'\\)"):
        sx.earlier_items(sx.shard_files(built["out"]), wrong)


def test_on_gcs_emulator(built, tmp_path):
    """Input and shards on gs:// (Beam FileSystems through learn_tf.utils.io): the same shards as locally."""
    from learn_tf.utils import emulators, io

    local_in = str(tmp_path / "interactions.tfrecord")
    write_interactions_tfrecord(built["inter"], local_in)
    with emulators.gcs_bucket("learn-sequences-test") as root:
        io.copy(local_in, f"{root}/in/interactions.tfrecord")
        m = write_sequences([f"{root}/in/interactions.tfrecord"], built["items"]["item_id"].tolist(), SPLIT,
                            f"{root}/sequences", num_shards=3, compression="UNCOMPRESSED")
        assert m["roles"] == built["manifest"]["roles"]
        names = sorted(os.path.basename(f) for f in io.glob(f"{root}/sequences/sequences-*.tfrecord"))
        assert names == sorted(m["shards"])
        copy = tmp_path / "copy"
        for name in names:
            io.copy(f"{root}/sequences/{name}", str(copy / name))
    assert sequences_from_records(str(copy), built["catalogue"]).equals(
        sequences_from_records(built["out"], built["catalogue"]))
