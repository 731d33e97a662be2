"""Content kNN baseline on tiny made-up embeddings."""

import numpy as np
import pandas as pd
import pytest

from learn_tf.baselines.content_knn import ContentKNNBaseline
from learn_tf.evaluation.evaluator import evaluate

CATALOGUE = np.array(["a", "b", "c", "d"])
EMB = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-1.0, 0.0]])  # a and d opposite; c between a and b


def test_item_equal_to_history_ranks_first():
    knn = ContentKNNBaseline(CATALOGUE, EMB)
    s = knn.score([["a"], ["b"], ["a", "b"]])
    np.testing.assert_allclose(s[0], [1.0, 0.0, np.sqrt(0.5), -1.0], atol=1e-6)
    assert np.argmax(s[1]) == 1
    assert np.argmax(s[2]) == 2  # the mean of a and b points at c
    cases = pd.DataFrame({"split": "test", "user_id": ["u"], "target_item_id": ["a"], "history": [["a"]]})
    res = evaluate(knn.score, cases, CATALOGUE, ks=(1,), protocols=("unmasked",))
    assert res["protocols"]["unmasked"]["overall"]["metrics"]["recall@1"] == 1.0


def test_unknown_ids_skipped_and_empty_history():
    knn = ContentKNNBaseline(CATALOGUE, EMB)
    s = knn.score([["zzz", "b"], [], ["zzz"]])
    np.testing.assert_allclose(s[0], knn.score([["b"]])[0])
    assert (s[1] == 0).all() and (s[2] == 0).all()
    fb = ContentKNNBaseline(CATALOGUE, EMB, fallback_scores=np.array([4.0, 3.0, 2.0, 1.0]))
    s = fb.score([[], ["a"], ["zzz"]])
    assert s[0].tolist() == [4, 3, 2, 1] and s[2].tolist() == [4, 3, 2, 1]
    assert np.argmax(s[1]) == 0


def test_embedding_ids_reorder_rows():
    shuffled = [2, 0, 3, 1]
    knn = ContentKNNBaseline(CATALOGUE, EMB[shuffled], embedding_ids=CATALOGUE[shuffled])
    np.testing.assert_allclose(knn.score([["a"]]), ContentKNNBaseline(CATALOGUE, EMB).score([["a"]]), atol=1e-6)
    with pytest.raises(ValueError, match="no embedding for catalogue item 'd'"):
        ContentKNNBaseline(CATALOGUE, EMB[:3], embedding_ids=CATALOGUE[:3])
