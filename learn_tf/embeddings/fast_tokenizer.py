"""Hugging Face `tokenizers` fast path with the token ids of a keras-hub tokenizer.

keras-hub's byte-pair tokenizer runs its merge loop as TensorFlow ops: slow
eagerly and about 10 s to trace once per process. `FastTokenizer` keeps
keras-hub's own pre-split (its regular expressions, run eagerly: a few
milliseconds) and its vocabulary, merges and settings, and hands only the
per-word work (byte mapping + BPE merges, or WordPiece) to `tokenizers`
(Rust). The ids are therefore keras-hub's by construction for the supported
families; `fast_tokenizer_test.py` checks them on a varied text sample for the
shipped presets (SmolLM2 BPE, MiniLM WordPiece).

Supported: `keras_hub.tokenizers.BytePairTokenizer` (GPT-2, Llama 3, SmolLM2
...) and `WordPieceTokenizer` (BERT, MiniLM ...) subclasses. Anything else
(SentencePiece: Gemma) gets `None` from `fast_tokenizer_for`, and the caller
keeps the keras-hub tokenizer.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import learn_tf  # noqa: F401  (environment before TensorFlow / Keras load)
import tensorflow as tf

# tf_text.FastWordpieceTokenizer's default (keras-hub does not change it): longer words are [UNK].
WORDPIECE_MAX_BYTES = 100


class FastTokenizer:
    """Texts -> token ids (no special tokens added), identical to the keras-hub tokenizer it mirrors.

    Args:
      presplit: texts [N] string tensor -> per text, keras-hub's pre-split words (UTF-8 bytes).
      tokenizer: a `tokenizers.Tokenizer` that encodes pre-split words.
      unk_word: if set, words longer than `WORDPIECE_MAX_BYTES` UTF-8 bytes become
        this token (WordPiece's byte limit, which `tokenizers` counts in characters).
    """

    def __init__(self, presplit: Callable[[Any], Any], tokenizer: Any, unk_word: Optional[str] = None,
                 whole_words: Optional[dict[str, int]] = None) -> None:
        self._presplit = presplit
        self._tokenizer = tokenizer
        self._unk_word = unk_word
        self._whole = whole_words or {}

    def __call__(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, as keras-hub's `tokenizer(texts)` would return them."""
        if not texts:
            return []
        words = self._presplit(tf.constant([t.encode("utf-8") for t in texts], dtype=tf.string))
        batch = []
        for row in words:
            if self._unk_word is not None:
                row = [self._unk_word if len(w) > WORDPIECE_MAX_BYTES else w.decode("utf-8") for w in row]
            else:
                row = [w.decode("utf-8") for w in row]
            batch.append(row)
        out: list[list[int]] = [[] for _ in batch]
        special = {k for k, row in enumerate(batch) if self._whole and any(w in self._whole for w in row)}
        for k in special:  # a word that is exactly an unsplittable token maps to its id; other words as usual
            for w in batch[k]:
                out[k].extend([self._whole[w]] if w in self._whole else self._tokenizer.encode(
                    [w], is_pretokenized=True, add_special_tokens=False).ids)
        nonempty = [k for k, row in enumerate(batch) if row and k not in special]
        if nonempty:
            encs = self._tokenizer.encode_batch([batch[k] for k in nonempty], is_pretokenized=True,
                                                add_special_tokens=False)
            for k, e in zip(nonempty, encs):
                out[k] = list(e.ids)
        return out


def _byte_pair(kt: Any) -> FastTokenizer:
    # keras-hub internals: the pre-split of its byte-pair tokenizer (public class, private helper).
    from keras_hub.src.tokenizers.byte_pair_tokenizer import split_strings_for_bpe
    import tokenizers

    merges = [tuple(m.split(" ")) for m in kt.merges]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=dict(kt.vocabulary), merges=merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    # keras-hub maps a pre-split word that is exactly one of these to its id and byte-pair-merges any
    # other word as text. (Its pre-split of texts holding them depends on the order of a set, so on
    # PYTHONHASHSEED, once there are 10 or more: SmolLM2 has 17. The same call is made here.)
    unsplittable = list(kt.unsplittable_tokens or [])
    prefix = b" " if getattr(kt, "add_prefix_space", False) else b""

    def presplit(x: Any) -> Any:
        texts = [prefix + t for t in x.numpy().tolist()] if prefix else x.numpy().tolist()
        # keras-hub isolates each unsplittable token with two eager regex ops per token (~0.7 s a
        # call for SmolLM2's 17); texts without any split identically without them.
        special = [k for k, t in enumerate(texts) if any(u.encode("utf-8") in t for u in unsplittable)]
        plain = split_strings_for_bpe(tf.constant(texts, dtype=tf.string), None).to_list()
        if special:
            fixed = split_strings_for_bpe(tf.constant([texts[k] for k in special], dtype=tf.string),
                                          unsplittable).to_list()
            for k, row in zip(special, fixed):
                plain[k] = row
        return plain

    return FastTokenizer(presplit, hf, whole_words={u: int(kt.token_to_id(u)) for u in unsplittable})


def _word_piece(kt: Any) -> FastTokenizer:
    # keras-hub internals: the pre-tokenizer of its WordPiece tokenizer (public class, private helpers).
    from keras_hub.src.tokenizers.word_piece_tokenizer import get_special_tokens_pattern, pretokenize
    import tokenizers

    vocab = {tok: i for i, tok in enumerate(kt.get_vocabulary())}
    hf = tokenizers.Tokenizer(tokenizers.models.WordPiece(
        vocab=vocab, unk_token=kt.oov_token, continuing_subword_prefix=kt.suffix_indicator,
        max_input_chars_per_word=10**9))  # the byte limit is applied before, as tf_text does
    pattern = None
    if kt.split and kt.special_tokens_in_strings:
        specials = list(kt.special_tokens) + list(kt._init_special_tokens or [])
        pattern = get_special_tokens_pattern(specials)

    def presplit(x: Any) -> Any:
        words = pretokenize(x, kt.lowercase, kt.strip_accents, kt.split, kt.split_on_cjk, pattern)
        return (words if isinstance(words, tf.RaggedTensor) else tf.RaggedTensor.from_tensor(words[:, None])).to_list()

    return FastTokenizer(presplit, hf, unk_word=kt.oov_token)


def fast_tokenizer_for(keras_tokenizer: Any) -> Optional[FastTokenizer]:
    """A `FastTokenizer` mirroring `keras_tokenizer`, or None for an unsupported family or no `tokenizers`."""
    try:
        import keras_hub  # the families below are keras-hub classes
        import tokenizers  # noqa: F401  (optional: without it, the keras-hub path)
    except ImportError:
        return None
    if isinstance(keras_tokenizer, keras_hub.tokenizers.BytePairTokenizer):
        return _byte_pair(keras_tokenizer)
    if isinstance(keras_tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
        return _word_piece(keras_tokenizer)
    return None
