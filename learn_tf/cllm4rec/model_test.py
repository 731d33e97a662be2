"""Losses by hand: the collaborative LM scores only main-text item tokens over items; mutual regularisation."""

import numpy as np
import pytest
import tensorflow as tf

from learn_tf.cllm4rec.documents import Document, collate, prompt_batch
from learn_tf.cllm4rec.model import CLLM4Rec, mutual_regularisation
from learn_tf.cllm4rec.vocab import FrozenLM


@pytest.fixture(scope="module")
def model(tiny_decoder_preset: str) -> CLLM4Rec:
    return CLLM4Rec(FrozenLM.from_preset(tiny_decoder_preset), num_users=3, num_items=6, seed=3)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _docs(model: CLLM4Rec) -> list[Document]:
    v = model.vocab
    return [Document(np.array([v.user_token(0), 40, 41], np.int32), v.item_tokens([2, 5, 1])),
            Document(np.array([v.user_token(2), 40, 41], np.int32), v.item_tokens([4]))]


def test_collaborative_loss_covers_only_main_text_item_tokens_over_items(model: CLLM4Rec) -> None:
    b = collate(_docs(model), model.vocab, "all")
    nll, _ = model.collaborative_loss(b.tokens, b.padding_mask, b.label_mask, b.reg_mask)
    hidden = model.lm.hidden(model.lm.lookup(b.tokens, model.collab), b.padding_mask).numpy()
    items = model.collab.items.numpy()
    # Main-text tokens: doc 0 positions 3, 4, 5 (items 2, 5, 1), doc 1 position 3 (item 4); each is
    # predicted from the position before it, over the I item logits only (no vocabulary, no users).
    expected = [(0, 2, 2), (0, 3, 5), (0, 4, 1), (1, 2, 4)]
    terms = [-_log_softmax(hidden[r, t] @ items.T)[j] for r, t, j in expected]
    np.testing.assert_allclose(float(nll), np.mean(terms), rtol=1e-5)


def test_content_loss_scores_main_text_over_the_vocabulary(model: CLLM4Rec) -> None:
    v = model.vocab
    doc = Document(np.concatenate([v.item_tokens([3]), [40]]).astype(np.int32), np.array([70, 71, 72], np.int32))
    b = collate([doc], v, "prompt")
    nll, _ = model.content_loss(b.tokens, b.padding_mask, b.label_mask, b.reg_mask)
    hidden = model.lm.hidden(model.lm.lookup(b.tokens, model.content), b.padding_mask)
    logits = model.lm.vocab_logits(hidden).numpy()[0]
    assert logits.shape[-1] == v.base_size
    terms = [-_log_softmax(logits[t])[tok] for t, tok in ((1, 70), (2, 71), (3, 72))]
    np.testing.assert_allclose(float(nll), np.mean(terms), rtol=1e-5)


def test_mutual_regularisation_equals_a_hand_computation(model: CLLM4Rec) -> None:
    b = collate(_docs(model), model.vocab, "all")
    _, reg = model.collaborative_loss(b.tokens, b.padding_mask, b.label_mask, b.reg_mask)
    cu, ci = model.collab.users.numpy(), model.collab.items.numpy()
    tu, ti = model.content.users.numpy(), model.content.items.numpy()
    users, items = [0, 2], [2, 5, 1, 4]  # every ID token of the L-step documents (prompt + main)
    hand = sum(((cu[u] - tu[u]) ** 2).sum() for u in users) + sum(((ci[i] - ti[i]) ** 2).sum() for i in items)
    np.testing.assert_allclose(float(reg), hand, rtol=1e-5)
    # The C-step covers the prompt's ID tokens only (vocabulary and pad positions add 0).
    v = model.vocab
    docs = [Document(np.array([v.item_tokens([2])[0], 40], np.int32), np.array([70, 71], np.int32)),
            Document(np.array([v.user_token(1), v.item_tokens([4])[0], 40], np.int32), np.array([72], np.int32))]
    p = collate(docs, v, "prompt")
    _, reg_c = model.content_loss(p.tokens, p.padding_mask, p.label_mask, p.reg_mask)
    hand_c = ((ci[2] - ti[2]) ** 2).sum() + ((cu[1] - tu[1]) ** 2).sum() + ((ci[4] - ti[4]) ** 2).sum()
    np.testing.assert_allclose(float(reg_c), hand_c, rtol=1e-5)


def test_partner_embeddings_carry_no_gradient() -> None:
    own, partner = tf.Variable(tf.ones([1, 2, 3])), tf.Variable(tf.zeros([1, 2, 3]))
    with tf.GradientTape(persistent=True) as tape:
        reg = mutual_regularisation(own, partner, tf.constant([[True, False]]))
    assert float(reg) == 3.0
    assert tape.gradient(reg, partner) is None
    np.testing.assert_array_equal(tape.gradient(reg, own).numpy(), [[[2, 2, 2], [0, 0, 0]]])


def test_recommendation_loss_is_multinomial_over_the_catalogue(model: CLLM4Rec) -> None:
    v = model.vocab
    b = prompt_batch([np.concatenate([[v.user_token(1), 40], v.item_tokens([0, 3]), [41]]).astype(np.int32),
                      np.concatenate([[v.user_token(0), 40], v.item_tokens([5]), [41]]).astype(np.int32)], v)
    targets = np.zeros((2, 6), np.float32)
    targets[0, [1, 2]] = 1
    targets[1, 4] = 1
    nll, _ = model.recommendation_loss(b.tokens, b.padding_mask, targets, b.reg_mask)
    scores = model.scores(b.tokens, b.padding_mask).numpy()
    hand = -np.mean((targets * _log_softmax(scores)).sum(axis=1))
    np.testing.assert_allclose(float(nll), hand, rtol=1e-5)
    hidden = model.lm.hidden(model.lm.lookup(b.tokens, model.collab), b.padding_mask).numpy()
    np.testing.assert_allclose(scores[1], hidden[1, 3] @ model.collab.items.numpy().T, rtol=1e-5)  # last real token
