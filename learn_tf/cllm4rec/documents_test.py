"""Documents: soft+hard prompt layout, label / regularisation masks, masked histories, bucketed batches."""

import numpy as np

from learn_tf.cllm4rec.documents import Document, DocumentBuilder, Prompts, bucket_batches, collate, prompt_batch
from learn_tf.cllm4rec.vocab import IdVocabulary

VOCAB = IdVocabulary(base_size=50, num_users=3, num_items=10)


def _tokenize(texts):
    return [[ord(c) % 50 for c in t] for t in texts]


def _builder() -> DocumentBuilder:
    return DocumentBuilder(VOCAB, _tokenize, Prompts(collaborative=" ab", content=" c:", recommend_sep=",",
                                                     recommend=" d"), max_content_tokens=4)


def test_collaborative_document_is_user_prompt_then_item_tokens() -> None:
    d = _builder().collaborative(2, [4, 0])
    np.testing.assert_array_equal(d.prompt, [52] + _tokenize([" ab"])[0])
    np.testing.assert_array_equal(d.main, [57, 53])


def test_content_documents_cut_the_text() -> None:
    (d,) = _builder().content([1], ["Toy Story"])
    np.testing.assert_array_equal(d.prompt, [54] + _tokenize([" c:"])[0])
    assert len(d.main) == 4


def test_collate_masks_main_text_and_id_tokens_by_scope() -> None:
    docs = [Document(np.array([51, 5], np.int32), np.array([60, 61], np.int32)),
            Document(np.array([55, 5], np.int32), np.array([7], np.int32))]
    b = collate(docs, VOCAB, "all")
    np.testing.assert_array_equal(b.tokens, [[51, 5, 60, 61], [55, 5, 7, 0]])
    np.testing.assert_array_equal(b.padding_mask, [[1, 1, 1, 1], [1, 1, 1, 0]])
    np.testing.assert_array_equal(b.label_mask, [[0, 0, 1, 1], [0, 0, 1, 0]])
    np.testing.assert_array_equal(b.reg_mask, [[1, 0, 1, 1], [1, 0, 0, 0]])
    np.testing.assert_array_equal(collate(docs, VOCAB, "prompt").reg_mask, [[1, 0, 0, 0], [1, 0, 0, 0]])


def test_masked_history_hides_a_fifth_and_targets_it() -> None:
    b, rng = _builder(), np.random.default_rng(0)
    items = np.arange(10)
    prompt, target = b.masked_history(1, items, 0.2, rng)
    shown = sorted(t - VOCAB.item_offset for t in prompt if t >= VOCAB.item_offset)
    assert len(target) == 2 and len(shown) == 8 and not set(target) & set(shown)
    assert list(prompt).count(VOCAB.user_token(1)) == 2  # "user_u has interacted with ..., user_u will interact with"
    _, everything = b.masked_history(1, items, 0.2, rng, target="all")
    np.testing.assert_array_equal(everything, items)
    prompt1, target1 = b.masked_history(0, [7], 0.2, rng)
    assert list(target1) == [7] and VOCAB.item_offset + 7 not in prompt1


def test_prompt_batch_regularises_every_id_token_and_scores_nothing() -> None:
    b = prompt_batch([_builder().recommendation_prompt(0, [1, 2])], VOCAB)
    assert not b.label_mask.any()
    assert b.reg_mask.sum() == 4  # two user tokens, two item tokens


def test_bucket_batches_cover_everything_within_the_caps() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 100, size=200)
    batches = bucket_batches(lengths, batch_size=8, max_tokens=300, rng=rng)
    flat = np.sort(np.concatenate(batches))
    np.testing.assert_array_equal(flat, np.arange(200))
    for idx in batches:
        assert len(idx) <= 8 and (len(idx) == 1 or len(idx) * lengths[idx].max() <= 300)
    padded = sum(len(i) * lengths[i].max() for i in batches)
    assert padded < 1.2 * lengths.sum()  # sorting by length keeps padding small
