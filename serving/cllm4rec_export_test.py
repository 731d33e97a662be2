"""The CLLM4Rec export: TF Serving layout, in-graph prompt equal to the evaluator's, history exclusion, top-k."""

import os

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.documents import Prompts
from learn_tf.cllm4rec.scoring import CLLM4RecScorer
from learn_tf.cllm4rec.vocab import FrozenLM
from serving.cllm4rec_export import MODEL, export_cllm4rec

ITEMS = [f"i{k:02d}" for k in range(15)]
USERS = ["u1", "u2", "u3"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_decoder_preset: str):
    d = tmp_path_factory.mktemp("cllm4rec_export")
    lm = FrozenLM.from_preset(tiny_decoder_preset)
    model, builder = store.build(lm, ITEMS, USERS, Prompts(), 8, seed=5)
    store.save(model, str(d / "model"), tiny_decoder_preset, ITEMS, USERS, Prompts(), 8)
    out = export_cllm4rec(str(d / "model"), str(d / "base"), max_k=10, max_history=4)
    scorer = CLLM4RecScorer(model, builder, ITEMS, USERS)
    return out, str(d / "base"), scorer


def _call(fn, history, users, k, exclude):
    width = max(len(h) for h in history)
    padded = np.array([h + [""] * (width - len(h)) for h in history], dtype=object).astype(bytes)
    return fn(history=tf.constant(padded), user_id=tf.constant(np.array(users, dtype=object).astype(bytes)),
              k=tf.constant(k, tf.int32), exclude_history=tf.constant(exclude))


def test_layout_and_models_config(exported) -> None:
    out, base, _ = exported
    assert out["path"] == os.path.join(base, MODEL, "1")
    assert os.path.exists(os.path.join(out["path"], "saved_model.pb"))
    assert os.path.exists(os.path.join(out["path"], "assets.extra", "tf_serving_warmup_requests"))
    assert MODEL in open(os.path.join(base, "models.config")).read()


def test_serving_scores_equal_the_evaluator_scorer(exported) -> None:
    out, _, scorer = exported
    fn = tf.saved_model.load(out["path"]).signatures["serving_default"]
    history = [["i03", "nope", "i07", "i01", "i02", "i09"], ["i04"]]
    res = _call(fn, history, ["u2", ""], [5, 3], [False, True])
    # The export keeps the last max_history = 4 known items; the scorer gets the same items.
    expected = scorer.score_users([["i07", "i01", "i02", "i09"], ["i04"]], ["u2", None])
    top0 = np.argsort(-expected[0], kind="stable")[:5]
    assert [x.decode() for x in res["item_ids"].numpy()[0]] == [ITEMS[j] for j in top0]
    np.testing.assert_allclose(res["scores"].numpy()[0], expected[0][top0], rtol=1e-4, atol=1e-5)
    assert list(res["known_items"].numpy()) == [5, 1]
    row1 = [x.decode() for x in res["item_ids"].numpy()[1]]
    assert "i04" not in row1 and row1[3:] == ["", ""]  # history excluded; k = 3 then padding


def test_bad_k_is_rejected(exported) -> None:
    out, _, _ = exported
    fn = tf.saved_model.load(out["path"]).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_k"):
        _call(fn, [["i01"]], ["u1"], [11], [True])
