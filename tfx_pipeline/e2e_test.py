"""The whole pipeline under LocalDagRunner on tiny data: runs, caches, and stops on bad input."""

import glob
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from tfx.types import standard_artifacts

from learn_app.pipeline_commands import ensure_ingested, lineage_command, run_pipeline_command
from learn_tf.config import load_config
from learn_tf.data import schema
from learn_tf.data.tfrecords import write_interactions_tfrecord
from learn_tf.training.jobs import TOWERS_FILE
from tfx_pipeline.components import ItemEmbeddingGen, ItemEmbeddingGenExecutor, ItemEmbeddings
from tfx_pipeline.lineage import latest_pushed_towers, open_store, run_executions, run_ids
from tfx_pipeline.pipeline import COMPONENT_IDS, create_pipeline


def _states(cfg):
    store = open_store(cfg.resolved_metadata_path())
    runs = run_ids(store, "learn-tiny")
    return runs, {e.node: e for e in run_executions(store, runs[-1])}


@pytest.mark.e2e
def test_pipeline_runs_end_to_end_then_hits_the_cache(tiny_config_factory, tiny_decoder_preset, capsys, tmp_path):
    cfg = load_config(tiny_config_factory(tiny_decoder_preset))
    assert run_pipeline_command(cfg) == 0
    runs, first = _states(cfg)
    assert len(runs) == 1
    assert set(first) == set(COMPONENT_IDS)
    assert {e.state for e in first.values()} == {"COMPLETE"}, {n: e.state for n, e in first.items()}
    emb = first["ItemEmbeddingGen"].outputs["embeddings"][0]
    assert emb.type == "learn.ItemEmbeddings" and emb.properties["count"] == 120 and emb.properties["dim"] > 0
    assert emb.properties["forward_passes"] > 0
    blessing = first["Evaluator"].outputs["blessing"][0]
    assert blessing.properties["blessed"] == 1
    pushed = first["Pusher"].outputs["pushed_model"][0]
    assert pushed.properties["pushed"] == 1
    base = cfg.resolved_model_base()
    version = str(pushed.properties["pushed_version"])
    for name in ("learn_user", "learn_item", "learn_retrieval_bf"):
        assert os.path.exists(os.path.join(base, name, version, "saved_model.pb")), name
    # The Transform graph ships inside the serving models: raw interaction tf.Examples -> vocabulary indices.
    raw_files = glob.glob(os.path.join(first["ExampleGen"].outputs["examples"][0].uri, "Split-interactions", "*"))
    raw = list(tf.data.TFRecordDataset(raw_files, compression_type="GZIP").take(8).as_numpy_iterator())
    served = tf.saved_model.load(os.path.join(base, "learn_user", version)).signatures["transform_features"]
    out = served(examples=tf.constant(raw))
    vocab = [v.decode() for v in tft.TFTransformOutput(
        first["Transform"].outputs["transform_graph"][0].uri).vocabulary_by_name("item_id")]
    items = [tf.train.Example.FromString(r).features.feature["item_id"].bytes_list.value[0].decode() for r in raw]
    assert out["item_index"].numpy().tolist() == [vocab.index(i) for i in items]
    assert os.path.exists(os.path.join(base, "models.config"))
    # The Trainer consumed the embeddings the ItemEmbeddingGen produced (lineage).
    assert first["Trainer"].inputs["item_embeddings"][0].id == emb.id
    # One split per run: SplitGen's artifact is what the Trainer, the Evaluator and the Pusher read.
    split = first["SplitGen"].outputs["split"][0]
    assert split.type == "learn.Split" and split.properties["test_cases"] > 0
    for node in ("Trainer", "Evaluator", "Pusher"):
        assert first[node].inputs["split"][0].id == split.id, node
    # The Trainer streamed SequenceGen's per-user SequenceExamples, whose roles match the split.
    sequences = first["SequenceGen"].outputs["sequences"][0]
    assert sequences.type == "learn.UserSequences" and first["Trainer"].inputs["sequences"][0].id == sequences.id
    assert sequences.properties["train_positions"] == split.properties["train_interactions"] > 0
    assert glob.glob(os.path.join(sequences.uri, "sequences-*-of-*.tfrecord"))
    out = capsys.readouterr().out
    assert "pushed version" in out
    # The run ends with the evaluation table (the model and the content-kNN baseline, both protocols).
    assert "| learn_a |" in out and "| content_knn |" in out and "### unmasked" in out

    assert run_pipeline_command(cfg) == 0
    runs, second = _states(cfg)
    assert len(runs) == 2
    assert set(second) == set(COMPONENT_IDS)
    assert {e.state for e in second.values()} == {"CACHED"}, {n: e.state for n, e in second.items()}
    assert sorted(os.listdir(os.path.join(base, "learn_user"))) == [version]  # nothing pushed twice

    assert lineage_command(cfg) == 0
    out = capsys.readouterr().out
    assert "Trainer" in out and "CACHED" in out and "item_embeddings" in out and "learn.ItemEmbeddings" in out
    # The pushed towers carry the one saved-towers schema (`learn train`'s metadata).
    with open(os.path.join(latest_pushed_towers(cfg.resolved_metadata_path(), "learn-tiny"), TOWERS_FILE)) as f:
        meta = json.load(f)
    assert meta["embedding"]["run_id"] == emb.properties["embedding_run_id"] and "embedding_run_id" not in meta

    # Even when TFX's cache is bypassed, ItemEmbeddingGen reuses the embedding job's incremental cache.
    examples = standard_artifacts.Examples()
    examples.uri = first["ExampleGen"].outputs["examples"][0].uri
    again = ItemEmbeddings()
    again.uri = str(tmp_path / "embeddings_again")
    props = dict(next(c for c in _pipeline(cfg).components if isinstance(c, ItemEmbeddingGen)).exec_properties)
    ItemEmbeddingGenExecutor().Do({"examples": [examples]}, {"embeddings": [again]}, props)
    assert again.get_int_custom_property("forward_passes") == 0
    assert again.get_string_custom_property("checksum") == emb.properties["checksum"]


def _pipeline(cfg):
    return create_pipeline(cfg, data_dir=cfg.layout().data,
                           pipeline_root=os.path.abspath(cfg.resolved_pipeline_root()))


def _corrupt_interactions(cfg, data_dir, fraction=0.0, negative_timestamp=False):
    """Rewrites the ingested interactions TFRecord with unknown item ids and/or a negative timestamp."""
    ensure_ingested(cfg)
    inter = pd.read_parquet(os.path.join(data_dir, schema.INTERACTIONS_FILE))
    rng = np.random.default_rng(0)
    rows = rng.choice(len(inter), size=int(round(fraction * len(inter))), replace=False)
    inter.loc[rows, "item_id"] = [f"ghost{k % 7}" for k in range(len(rows))]
    if negative_timestamp:
        inter.loc[0, "timestamp"] = -5
    write_interactions_tfrecord(inter, os.path.join(data_dir, schema.INTERACTIONS_TFRECORD))


def test_unknown_items_stop_the_run_before_training(tiny_config_factory, capsys):
    cfg = load_config(tiny_config_factory(pipeline={"max_unknown_item_fraction": 0.02}))
    data_dir = cfg.layout().data
    _corrupt_interactions(cfg, data_dir, fraction=0.1)
    assert run_pipeline_command(cfg) == 1
    err = capsys.readouterr().err
    assert "Data validation FAILED" in err
    assert "reference items that are not in the catalogue" in err and "'ghost" in err
    assert "limit pipeline.max_unknown_item_fraction 2.00%" in err
    _, states = _states(cfg)
    assert states["DataGate"].state == "FAILED"
    for node in ("ItemEmbeddingGen", "Transform", "Trainer", "Evaluator", "Pusher"):
        assert node not in states, node
    assert not os.path.exists(cfg.resolved_model_base())


def test_schema_anomaly_stops_the_run_with_a_readable_report(tiny_config_factory, capsys):
    cfg = load_config(tiny_config_factory(pipeline={"schema_path": "configs/interactions_schema.pbtxt"}))
    data_dir = cfg.layout().data
    _corrupt_interactions(cfg, data_dir, negative_timestamp=True)
    assert run_pipeline_command(cfg) == 1
    err = capsys.readouterr().err
    assert "schema anomalies (1)" in err and "feature 'timestamp'" in err and "Out-of-range" in err
    _, states = _states(cfg)
    assert type(states["SchemaGen"]).__name__ == "NodeExecution" and states["DataGate"].state == "FAILED"
    assert "Trainer" not in states
