"""Tests for the published-embeddings store, on TensorFlow's in-memory file system (a non-local URL)."""

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from learn_tf.embeddings import postprocess
from learn_tf.embeddings import store


def _write_shard(path: str, ids: list[str], vectors: list[list[float]]) -> None:
    table = pa.table({"item_id": ids, "embedding": vectors, "text_hash": ids, "model_id": ["m"] * len(ids)},
                     schema=store.EMBEDDINGS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buf.getvalue())


def test_publish_read_and_clean_up_through_gfile():
    d = "ram://store_test/emb"
    assert store.read_manifest(d) is None
    tr = postprocess.fit("center", np.random.default_rng(0).normal(size=(8, 2)))
    store.write_transform(f"{d}/{store.transform_name('r1')}", tr)
    _write_shard(f"{store.shard_prefix(d, 'embeddings', 'r1')}-00000-of-00001.parquet", ["b", "a"],
                 [[0.0, 1.0], [1.0, 0.0]])
    _write_shard(f"{store.shard_prefix(d, 'embeddings', 'r0')}-00000-of-00001.parquet", ["a"], [[1.0, 0.0]])
    store.write_json(f"{store.staging_dir(d, 'r0')}/{store.STATS}", {"count": 1})

    files = {"parquet": store.list_run_shards(d, "embeddings", "r1", ".parquet"), "tfrecord": [], "cache": []}
    manifest = {"files": files, "transform_file": store.transform_name("r1"), "count": 2, "dim": 2}
    assert store.files_present(d, manifest)
    store.write_manifest(d, manifest)
    store.remove_unlisted(d, manifest)

    assert sorted(tf.io.gfile.listdir(d)) == sorted([store.MANIFEST, *store.listed_files(manifest)])
    ids, mat, back = store.load_embeddings(d)
    assert list(ids) == ["a", "b"] and np.array_equal(mat, [[1, 0], [0, 1]]) and back == manifest
    assert np.array_equal(store.load_transform(d).mean, tr.mean)
    assert store.cached_hashes(d, back) == set() and store.load_cache(d, back) == {}
