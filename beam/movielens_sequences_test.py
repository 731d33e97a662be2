"""MovieLens-100K through the Beam sequence step: the Trainer's streamed input equals `learn train`'s in-memory
input (large: pass --run_large; about a minute on 2 CPU cores).

Same split (the configs' split section, seed), same training sequences, same
early-stopping cases, and the same batches epoch after epoch for make demo's
dense sampling (configs/movielens.yaml) and the peer protocol's next-item
sampling (configs/movielens-loo.yaml): with the same seed, training and so the
metrics are the same on either path.
"""

import importlib.util
import os

import numpy as np
import pytest

from beam.sequences import write_sequences
from learn_tf.config import load_config
from learn_tf.data import schema
from learn_tf.data import sequence_examples as sx
from learn_tf.data.ingest import ingest, read_ingested
from learn_tf.data.splits import make_splits
from learn_tf.evaluation.cases import add_earlier_items
from learn_tf.models.catalogue import Catalogue
from learn_tf.training.inputs import sequences_from_records, sequences_from_split
from learn_tf.training.sampler import SequenceSampler

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.large
@pytest.mark.e2e
def test_movielens_streamed_input_equals_in_memory(tmp_path):
    if importlib.util.find_spec("recbole") is None:
        pytest.skip("needs the pip package recbole (install with --no-deps)")
    cfg = load_config(os.path.join(REPO, "configs", "movielens.yaml"))
    data = str(tmp_path / "data")
    ingest(cfg.data, data, echo=False)
    items, interactions = read_ingested(data)
    out = str(tmp_path / "sequences")
    manifest = write_sequences([os.path.join(data, schema.INTERACTIONS_TFRECORD)],
                               items["item_id"].tolist(), cfg.split, out, num_shards=4, compression="UNCOMPRESSED")
    splits = make_splits(items, interactions, cfg.split)
    catalogue = Catalogue(np.sort(items["item_id"].astype(str).to_numpy()))
    assert manifest["interactions_in"] == len(interactions) == 100_000 and manifest["users"] == 943
    assert manifest["roles"]["train"] == splits.summary["train_interactions"]

    in_memory = sequences_from_split(splits.train, catalogue)
    streamed = sequences_from_records(out, catalogue)
    assert len(streamed) == 943 and streamed.equals(in_memory)
    validation = splits.cases("validation")
    assert sx.earlier_items(sx.shard_files(out), validation) == \
        add_earlier_items(validation, interactions)["earlier_items"].tolist()

    for name in ("movielens.yaml", "movielens-loo.yaml"):
        train = load_config(os.path.join(REPO, "configs", name)).train
        a = SequenceSampler(in_memory, train, seed=train.seed)
        b = SequenceSampler(streamed, train, seed=train.seed)
        for _ in range(2):
            ea, eb = a.epoch(), b.epoch()
            assert all(np.array_equal(ea[k], eb[k]) for k in ea), name
