"""Tests for the Beam embedding job on a tiny random keras-hub backbone."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from beam.embed_pipeline import run_embedding_job
from learn_tf.config import DataConfig, SyntheticConfig
from learn_tf.data.ingest import ingest
from learn_tf.embeddings import store
from learn_tf.embeddings.batching import length_bucket
from learn_tf.embeddings.text_embedder import EmbedderLoadError, TextEmbedder

N_ITEMS = 60


@pytest.fixture()
def items_path(tmp_path):
    cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(num_items=N_ITEMS, num_users=10, seed=3))
    ingest(cfg, str(tmp_path / "data"), write_tfrecords=False, echo=False)
    return str(tmp_path / "data" / "items.parquet")


def _run(items_path, out, preset, **kw):
    return run_embedding_job(items_path, out, model=preset, template="movielens", max_tokens=48, batch_size=8, **kw)


def _raw_cache(out):
    return store.load_cache(out, store.read_manifest(out))


def test_incremental_runs_count_forward_passes(items_path, tmp_path, tiny_decoder_preset):
    out = str(tmp_path / "emb")
    first = _run(items_path, out, tiny_decoder_preset)
    assert first.ran_pipeline and first.counters["texts_embedded"] == N_ITEMS
    # Bucket-only batching: n texts take ceil(n / batch) passes, whatever their lengths.
    assert first.counters["forward_passes"] == first.counters["backbone_calls"] == -(-N_ITEMS // 8)
    assert first.counters["tokens"] <= first.counters["padded_tokens"] < 1.5 * first.counters["tokens"]
    ids, mat, manifest = store.load_embeddings(out)
    assert len(ids) == N_ITEMS and len(set(ids)) == N_ITEMS and mat.shape == (N_ITEMS, 16)
    assert np.isfinite(mat).all() and np.allclose(np.linalg.norm(mat, axis=1), 1, atol=1e-5)
    assert manifest["isotropy"]["mean_pairwise_cosine"] < manifest["isotropy"]["raw_mean_pairwise_cosine"]
    assert manifest["template"].startswith("Title: {title}")
    assert len(manifest["files"]["parquet"]) == 2 and len(manifest["files"]["tfrecord"]) == 2

    # Unchanged catalogue: no pipeline, no forward pass.
    again = _run(items_path, out, tiny_decoder_preset)
    assert not again.ran_pipeline and again.counters["forward_passes"] == 0

    # One changed text: exactly that item is re-embedded, the rest reused bit for bit.
    raw_before = _raw_cache(out)
    items = pd.read_parquet(items_path)
    items.loc[5, "title"] = "a brand new title"
    items.to_parquet(items_path)
    third = _run(items_path, out, tiny_decoder_preset)
    assert third.counters["texts_embedded"] == 1 and third.counters["forward_passes"] == 1
    assert third.counters["backbone_calls"] == 1
    assert third.counters["items_reused"] == N_ITEMS - 1
    ids3, mat3, manifest3 = store.load_embeddings(out)
    assert list(ids3) == list(ids)
    changed = list(ids).index(items.loc[5, "item_id"])
    others = np.arange(N_ITEMS) != changed
    assert np.array_equal(mat3[others], mat[others])  # same published transform
    assert not np.allclose(mat3[changed], mat[changed])
    raw_after = _raw_cache(out)
    assert len(set(raw_after) - set(raw_before)) == 1
    # Old run's files are gone; only what the manifest lists remains.
    listed = {f for g in manifest3["files"].values() for f in g} | {manifest3["transform_file"], "manifest.json"}
    assert set(os.listdir(out)) == listed


def test_three_new_items_of_different_lengths_take_one_forward_pass(items_path, tmp_path, tiny_decoder_preset):
    """An incremental run of 3 new items (three length buckets) is exactly 1 backbone execution."""
    out = str(tmp_path / "emb")
    titles = ["x", "space war night day", "a love night in the day of space war comedy"]
    enc = TextEmbedder(tiny_decoder_preset, max_tokens=48)
    ids, _ = enc.tokenize(titles)
    assert len({length_bucket(len(r), 48) for r in ids}) == 3  # three buckets

    def run():
        return run_embedding_job(items_path, out, model=tiny_decoder_preset, template="{title}", max_tokens=48,
                                 batch_size=8)

    run()
    items = pd.read_parquet(items_path)
    new = pd.DataFrame({"item_id": ["new-short", "new-mid", "new-long"], "title": titles})
    for col in items.columns.difference(new.columns):
        new[col] = items[col].iloc[0]
    pd.concat([items, new[items.columns]], ignore_index=True).to_parquet(items_path)
    res = run()
    assert res.counters["texts_embedded"] == 3 and res.counters["items_reused"] == N_ITEMS
    assert res.counters["backbone_calls"] == 1 and res.counters["forward_passes"] == 1
    assert res.counters["tokens"] == sum(len(r) for r in ids)
    ids_out, mat, _ = store.load_embeddings(out)
    assert len(ids_out) == N_ITEMS + 3 and np.isfinite(mat).all()


def test_bad_input_fallbacks_and_truncation(tmp_path, tiny_decoder_preset):
    items = pd.DataFrame({
        "item_id": ["a", "b", "c", "d"],
        "title": ["", "word " * 200, "caf\ufffd latt\ufffd", "ok"],  # empty, over-long, repaired non-UTF-8
        "year": ["", "1999", "2001", ""],
        "genres": ["", "Drama", "", "Comedy"],
    })
    path = str(tmp_path / "items.parquet")
    items.to_parquet(path)
    res = _run(path, str(tmp_path / "emb"), tiny_decoder_preset)
    assert res.counters["empty_text_fallback"] == 1
    assert res.counters["texts_truncated"] == 1
    assert res.counters["template_missing_year"] == 2 and res.counters["template_missing_genres"] == 2
    ids, mat, _ = store.load_embeddings(str(tmp_path / "emb"))
    assert list(ids) == ["a", "b", "c", "d"] and np.isfinite(mat).all()


def test_unreadable_model_fails_before_any_work(items_path, tmp_path):
    with pytest.raises(EmbedderLoadError, match="not a keras-hub preset folder"):
        _run(items_path, str(tmp_path / "emb"), str(tmp_path))
    assert store.read_manifest(str(tmp_path / "emb")) is None


def test_two_worker_multiprocessing_gives_identical_output(items_path, tmp_path, tiny_decoder_preset):
    _run(items_path, str(tmp_path / "one"), tiny_decoder_preset)
    _run(items_path, str(tmp_path / "two"), tiny_decoder_preset,
         beam_args=["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    ids1, m1, man1 = store.load_embeddings(str(tmp_path / "one"))
    ids2, m2, man2 = store.load_embeddings(str(tmp_path / "two"))
    assert list(ids1) == list(ids2)
    assert np.allclose(m1, m2, atol=1e-5)
    assert man1["count"] == man2["count"] == N_ITEMS


def test_killed_midway_then_rerun_gives_exactly_one_embedding_per_item(items_path, tmp_path, tiny_decoder_preset):
    out = str(tmp_path / "emb")
    script = textwrap.dedent(f"""
        import time
        import learn_tf.embeddings.text_embedder as enc
        orig = enc.TextEmbedder.embed_ids
        def slow(self, *a, **k):
            time.sleep(0.5)
            return orig(self, *a, **k)
        enc.TextEmbedder.embed_ids = slow
        from beam.embed_pipeline import run_embedding_job
        run_embedding_job({items_path!r}, {out!r}, model={tiny_decoder_preset!r}, template="movielens",
                          max_tokens=48, batch_size=4)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for line in proc.stdout:
        if "embedded" in line:  # the first batch went through the model
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert store.read_manifest(out) is None  # nothing was published
    assert os.listdir(out)  # but debris was left behind

    res = _run(items_path, out, tiny_decoder_preset)
    assert res.ran_pipeline
    ids, mat, manifest = store.load_embeddings(out)
    assert len(ids) == N_ITEMS == len(set(ids))
    listed = {f for g in manifest["files"].values() for f in g} | {manifest["transform_file"], "manifest.json"}
    assert set(os.listdir(out)) == listed  # debris of the killed run removed
