"""Tiny randomly initialised keras-hub presets for tests (never the network)."""

from __future__ import annotations

import os

import keras
import keras_hub  # learn_tf/__init__ (imported first, as this module's package) sets KERAS_BACKEND


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable symbol per byte value."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = [], 0
    for b in range(256):
        if b in keep:
            symbols.append(chr(b))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    return symbols


def make_tiny_decoder_preset(path: str, hidden_dim: int = 16, num_layers: int = 2, seed: int = 0) -> str:
    """Saves a tiny random Llama3 backbone + byte-level BPE tokenizer as a keras-hub preset."""
    keras.utils.set_random_seed(seed)
    symbols = _byte_symbols()
    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a"]
    vocab = {s: i for i, s in enumerate(symbols)}
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    for special in ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"):
        vocab[special] = len(vocab)
    tokenizer = keras_hub.models.Llama3Tokenizer(vocabulary=vocab, merges=merges)
    backbone = keras_hub.models.Llama3Backbone(
        vocabulary_size=len(vocab), num_layers=num_layers, num_query_heads=4, hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim, num_key_value_heads=2,
    )
    os.makedirs(path, exist_ok=True)  # test presets: local folders
    backbone.save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path


def make_tiny_encoder_preset(path: str, hidden_dim: int = 16, seed: int = 0) -> str:
    """Saves a tiny random BERT backbone + WordPiece tokenizer as a keras-hub preset."""
    keras.utils.set_random_seed(seed)
    words = "toy story space war comedy drama the a of and in love night day".split()
    chars = [c for c in "abcdefghijklmnopqrstuvwxyz0123456789.:,()" if c not in words]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + chars + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), num_layers=2, num_heads=2, hidden_dim=hidden_dim,
        intermediate_dim=2 * hidden_dim, max_sequence_length=64,
    )
    os.makedirs(path, exist_ok=True)  # test presets: local folders
    backbone.save_to_preset(path)
    tokenizer.save_to_preset(path)
    return path
