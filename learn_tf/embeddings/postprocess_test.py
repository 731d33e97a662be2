"""Tests for catalogue-fitted post-processing."""

import numpy as np
import pytest

from learn_tf.embeddings import store
from learn_tf.embeddings.postprocess import fit, fit_from_moments, l2_normalize, mean_pairwise_cosine


def _anisotropic(n=400, d=12, seed=0):
    rng = np.random.default_rng(seed)
    common = rng.normal(size=d) * 5
    return l2_normalize(common + rng.normal(size=(n, d)))


def test_mean_pairwise_cosine_matches_brute_force():
    x = _anisotropic(50)
    c = x @ x.T
    brute = (c.sum() - np.trace(c)) / (50 * 49)
    assert mean_pairwise_cosine(x) == pytest.approx(brute, abs=1e-9)


def test_centring_removes_the_common_direction():
    x = _anisotropic()
    assert mean_pairwise_cosine(x) > 0.8
    t = fit("center", x)
    y = t.apply(x)
    assert abs(mean_pairwise_cosine(y)) < 0.01
    assert np.allclose(np.linalg.norm(y, axis=1), 1, atol=1e-6)


def test_whitening_decorrelates_and_reduces_dim():
    x = _anisotropic(d=12)
    t = fit("whiten", x, dim=6)
    y = t.apply(x)
    assert y.shape == (400, 6) and t.output_dim == 6
    # Before the final normalisation, whitened components have identity covariance.
    z = (x - t.mean) @ t.matrix
    assert np.allclose(np.cov(z.T, bias=True), np.eye(6), atol=1e-3)


def test_streaming_moments_equal_in_memory_fit():
    x = _anisotropic()
    a = fit("whiten", x)
    b = fit_from_moments("whiten", len(x), x.sum(0), x.T @ x)
    assert np.allclose(a.apply(x), b.apply(x), atol=1e-6)


def test_save_load_roundtrip_and_new_items_get_same_transform(tmp_path):
    x = _anisotropic()
    t = fit("center", x[:300])
    store.write_transform(str(tmp_path / "t.npz"), t)
    back = store.read_transform(str(tmp_path / "t.npz"))
    assert back.method == "center"
    assert np.array_equal(back.apply(x[300:]), t.apply(x[300:]))


def test_errors():
    with pytest.raises(ValueError, match="unknown post-processing"):
        fit("pca9", np.ones((3, 2)))
    with pytest.raises(ValueError, match="whiten dim"):
        fit("whiten", _anisotropic(d=4), dim=9)
    with pytest.raises(ValueError, match="fitted on dim 12"):
        fit("center", _anisotropic()).apply(np.ones((2, 5)))
