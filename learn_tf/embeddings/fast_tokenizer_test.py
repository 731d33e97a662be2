"""The `tokenizers` fast path gives keras-hub's token ids, on tiny presets and on the shipped ones."""

import random

import keras_hub
import pytest
import tensorflow as tf

from learn_tf.embeddings.fast_tokenizer import fast_tokenizer_for

HANDWRITTEN = [
    "", " ", "   ", "\n", "\t\r\n", "\u200b", "x",
    "Toy Story (1995)", "Title: GoldenEye (1995). Year: 1995. Genres: Action, Adventure, Thriller.",
    "café latté naïve Ünïcödé ÀÉÎ ß ﬁ ﬀ", "e\u0301 combining marks", "日本語のテキスト 東京タワー", "한국어 텍스트",
    "Ελληνικά ς русский עברית العربية हिन्दी", "emoji 🎬🍿👩‍👩‍👧 fun", "a1b2 2024 x 12345678 3.14159 -7",
    "  leading and   multiple   spaces\n\ttab", "trailing   ", "\n\n\nnewlines\r\n\r\n", "a\u00a0nbsp\u3000ideographic\u2009thin",
    "don't won't it's 'S 'LL I'M we've", "$100.00 & 50% off!!! <html> {json: [1, 2]} a|b\\c", "ａｂｃ１２３ fullwidth",
    "x²½⒈ ™ ©", "<|endoftext|> <|im_start|> [CLS] [SEP] [UNK] specials in text", "६ devanagari sign",
    "x" * 300, "word " * 200, "é" * 60, "supercalifragilisticexpialidocious " * 20, "MiXeD CaSe WORDS",
    "\u0000\u0001 control \u007f chars", "zero\u200dwidth\u200cjoiners\ufeff", "Straße İstanbul ǅ",
]

# Code point ranges for random text: ASCII, Latin-1/Extended, Greek, Cyrillic, Hebrew, Arabic,
# Devanagari, CJK, Hangul, punctuation, symbols, emoji; never surrogates.
_RANGES = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x5FF), (0x600, 0x6FF),
           (0x900, 0x97F), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x3000, 0x303F), (0x3040, 0x30FF),
           (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFF00, 0xFFEF), (0x1F300, 0x1F64F)]


def varied_texts(n_random: int = 300, seed: int = 0) -> list[str]:
    """Hand-written edge cases plus seeded random texts mixing scripts, spaces and digits."""
    rng = random.Random(seed)
    out = list(HANDWRITTEN)
    for _ in range(n_random):
        words = []
        for _ in range(rng.randint(0, 12)):
            lo, hi = rng.choice(_RANGES[:3] * 4 + _RANGES)  # mostly Latin, some of everything
            words.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 9))))
        sep = rng.choice([" ", " ", " ", "  ", "\n", "\t", ", ", ". "])
        out.append(sep.join(words))
    return out


def _keras_ids(tokenizer, texts):
    fn = tf.function(lambda x: tokenizer(x), input_signature=[tf.TensorSpec([None], tf.string)])
    return fn(tf.constant([t.encode("utf-8") for t in texts], dtype=tf.string)).to_list()


def _assert_identical(tokenizer, texts):
    fast = fast_tokenizer_for(tokenizer)
    assert fast is not None
    want, got = _keras_ids(tokenizer, texts), fast(texts)
    diffs = [(t, w, g) for t, w, g in zip(texts, want, got) if list(w) != list(g)]
    assert not diffs, f"{len(diffs)} of {len(texts)} texts differ, first: {diffs[0]!r}"


@pytest.mark.parametrize("kind", ["decoder", "encoder"])
def test_tiny_presets_identical_ids(kind, tiny_decoder_preset, tiny_encoder_preset):
    preset = tiny_decoder_preset if kind == "decoder" else tiny_encoder_preset
    _assert_identical(keras_hub.models.Tokenizer.from_preset(preset), varied_texts(150))


def test_empty_batch_and_unsupported_family():
    assert fast_tokenizer_for(object()) is None
    kt = keras_hub.tokenizers.WordPieceTokenizer(vocabulary=["[UNK]", "a"], oov_token="[UNK]")
    assert fast_tokenizer_for(kt)([]) == []


@pytest.mark.large
@pytest.mark.parametrize("name", ["smollm2-135m", "minilm-l6"])
def test_shipped_presets_identical_ids(name):
    """SmolLM2 (byte-level BPE) and MiniLM (WordPiece): identical ids on hand-written and random texts."""
    from learn_tf.pretrained.presets import resolve_preset

    _assert_identical(keras_hub.models.Tokenizer.from_preset(resolve_preset(name)), varied_texts(1000))


def test_unsplittable_tokens_and_prefix_space(tiny_decoder_preset):
    """Texts holding special tokens take keras-hub's own split; add_prefix_space is mirrored."""
    kt = keras_hub.models.Tokenizer.from_preset(tiny_decoder_preset)
    assert kt.unsplittable_tokens
    special = kt.unsplittable_tokens[0]
    texts = [f"the {special} end", f"{special}{special}x", "no special here", f"a{special}"] + varied_texts(20)
    _assert_identical(kt, texts)
    vocab = {s: i for i, s in enumerate(["Ġ", "a", "b", "Ġa", "<|endoftext|>"])}
    gpt2 = keras_hub.tokenizers.BytePairTokenizer(vocabulary=vocab, merges=["Ġ a"], add_prefix_space=True,
                                                  unsplittable_tokens=["<|endoftext|>"])
    _assert_identical(gpt2, ["a", "a a", "ab", "<|endoftext|>a"])
