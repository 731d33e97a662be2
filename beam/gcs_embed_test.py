"""The Beam embedding job with its input and output on gs://, against a GCS emulator on 127.0.0.1.

Beam's gs:// (and `learn_tf.utils.io`, which routes gs:// through Beam's
FileSystems) reach `gcp-storage-emulator` through `STORAGE_EMULATOR_HOST`; the
same code reads and writes real buckets on GCP.
"""

import numpy as np
import pytest

from beam.embed_pipeline import run_embedding_job
from learn_tf.config import DataConfig, SyntheticConfig
from learn_tf.data.ingest import ingest
from learn_tf.embeddings import store
from learn_tf.utils import emulators, io

N_ITEMS = 40
BUCKET = "learn-embed-test"


@pytest.fixture(scope="module")
def gcs():
    """A GCS emulator with one bucket; the process environment points google-cloud-storage at it."""
    with emulators.gcs_bucket(BUCKET) as root:
        yield root


def _run(items, out, preset):
    return run_embedding_job(items, out, model=preset, template="movielens", max_tokens=32, batch_size=8,
                             num_shards=2)


@pytest.mark.e2e
def test_embedding_job_reads_and_publishes_on_gcs(gcs, tmp_path, tiny_decoder_preset):
    ingest(DataConfig(source="synthetic", synthetic=SyntheticConfig(num_items=N_ITEMS, num_users=8, seed=5)),
           str(tmp_path / "data"), write_tfrecords=False, echo=False)
    items = f"{gcs}/data/items.parquet"
    io.copy(str(tmp_path / "data" / "items.parquet"), items)
    out = f"{gcs}/embeddings"

    first = _run(items, out, tiny_decoder_preset)
    assert first.ran_pipeline and first.counters["texts_embedded"] == N_ITEMS
    ids, mat, manifest = store.load_embeddings(out)
    assert len(ids) == N_ITEMS and mat.shape[0] == N_ITEMS and np.isfinite(mat).all()
    # Published = the manifest and exactly the files it lists: no staging folder, no Beam temp files.
    assert io.listdir(out) == sorted([store.MANIFEST, *store.listed_files(manifest)])

    # Unchanged catalogue on gs://: nothing to do; a changed title re-embeds that one item only.
    again = _run(items, out, tiny_decoder_preset)
    assert not again.ran_pipeline
    df = io.read_parquet(items)
    df.loc[3, "title"] = "a title that changed"
    io.write_parquet(df, items)
    third = _run(items, out, tiny_decoder_preset)
    assert third.counters["texts_embedded"] == 1
    ids3, mat3, manifest3 = store.load_embeddings(out)
    assert manifest3["run_id"] != manifest["run_id"] and len(ids3) == N_ITEMS
    keep = ids3 != df.loc[3, "item_id"]
    assert np.array_equal(mat3[keep], mat[keep])  # the reused vectors are bit-identical (same transform)
    assert io.listdir(out) == sorted([store.MANIFEST, *store.listed_files(manifest3)])
