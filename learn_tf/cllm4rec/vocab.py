"""ID-token vocabulary extension of a frozen keras-hub causal LM (CLLM4Rec, Zhu et al. 2024).

Token ids: 0..N-1 are the backbone's own vocabulary, N+u is `user_u` and
N+U+j is `item_j` (N = base vocabulary, U users, I items). The lookup routes
each id by range: base ids to the backbone's frozen token embedding, user and
item ids to an `IdTables` set (trainable, N(0, 0.02^2) initialised). The
content and collaborative models share one `FrozenLM` and own one `IdTables`
each. Nothing of the backbone trains: transformer blocks, token (and
position) embeddings, final norm and the vocabulary head are frozen.

Everything here is Keras 3 (keras-hub's `import keras`, TF backend); nothing
is nested in a tf_keras model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import keras
import numpy as np
import tensorflow as tf

from learn_tf.embeddings.text_embedder import _backbone_overrides  # the llama RMSNorm-eps fix of our HF presets
from learn_tf.pretrained import resolve_preset

INIT_STDDEV = 0.02


@dataclass(frozen=True)
class IdVocabulary:
    """Where the user and item tokens sit in the extended vocabulary.

    Args:
      base_size: N, the backbone's vocabulary size.
      num_users: U.
      num_items: I.
    """

    base_size: int
    num_users: int
    num_items: int

    @property
    def size(self) -> int:
        """N + U + I."""
        return self.base_size + self.num_users + self.num_items

    @property
    def item_offset(self) -> int:
        """N + U: the token id of item 0."""
        return self.base_size + self.num_users

    def user_token(self, user: int) -> int:
        """Token id of user index `user` (0-based)."""
        if not 0 <= user < self.num_users:
            raise IndexError(f"user index {user} outside [0, {self.num_users})")
        return self.base_size + user

    def item_tokens(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """Token ids of 0-based item indices."""
        idx = np.asarray(items, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_items):
            raise IndexError(f"item indices must be in [0, {self.num_items})")
        return (idx + self.item_offset).astype(np.int32)


class IdTables(keras.layers.Layer):
    """One set of trainable user and item embedding tables ([U, d] and [I, d]).

    Args:
      num_users: U.
      num_items: I.
      dim: the backbone's hidden size d.
      seed: initialiser seed.
    """

    def __init__(self, num_users: int, num_items: int, dim: int, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_users, self.num_items, self.dim, self.seed = num_users, num_items, dim, seed
        self.users = self.add_weight(shape=(num_users, dim), name="users", trainable=True,
                                     initializer=keras.initializers.RandomNormal(0.0, INIT_STDDEV, seed=seed))
        self.items = self.add_weight(shape=(num_items, dim), name="items", trainable=True,
                                     initializer=keras.initializers.RandomNormal(0.0, INIT_STDDEV, seed=seed + 1))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"num_users": self.num_users, "num_items": self.num_items, "dim": self.dim, "seed": self.seed})
        return config


class FrozenLM:
    """A frozen keras-hub causal LM backbone that reads extended token ids.

    The backbone's graph is cut after its token embedding layer: `body` maps
    (input embeddings [B, T, d], padding mask [B, T]) to the last hidden
    states, so the same frozen layers run on routed embeddings. Works for any
    keras-hub backbone with a `token_embedding` (a `ReversibleEmbedding`)
    feeding the rest of a functional graph: Llama, Gemma (its sqrt(d) scale
    sits after the cut), GPT-2 (positions are added after the cut), Mistral,
    Qwen.

    Args:
      backbone: a keras-hub causal LM backbone (set non-trainable here).
      tokenizer: its keras-hub tokenizer.
    """

    def __init__(self, backbone: keras.Model, tokenizer: Any) -> None:
        backbone.trainable = False
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.embedding = getattr(backbone, "token_embedding", None)
        if self.embedding is None or not hasattr(self.embedding, "input_dim"):
            raise ValueError(f"{type(backbone).__name__} has no `token_embedding` layer to extend")
        mask_input = backbone.input["padding_mask"]
        self.body = keras.Model([self.embedding.output, mask_input], backbone.output, name="frozen_body")
        self.base_size = int(self.embedding.input_dim)
        self.dim = int(self.embedding.output_dim)
        self._tokenize = tf.function(lambda x: self.tokenizer(x), input_signature=[tf.TensorSpec([None], tf.string)])

    @classmethod
    def from_preset(cls, preset: str) -> "FrozenLM":
        """Loads backbone + tokenizer from an embedded preset name, a local folder or a keras-hub handle."""
        # Local import: keras-hub (every model family) takes seconds to import; only model loading needs it.
        import keras_hub

        folder = resolve_preset(preset)
        backbone = keras_hub.models.Backbone.from_preset(folder, **_backbone_overrides(folder))
        tokenizer = keras_hub.models.Tokenizer.from_preset(folder)
        return cls(backbone, tokenizer)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """BPE token ids of each text (no BOS/EOS)."""
        if not texts:
            return []
        out = self._tokenize(tf.constant([t.encode("utf-8") for t in texts], dtype=tf.string))
        rows = out.to_list() if hasattr(out, "to_list") else out.numpy().tolist()
        return [[int(v) for v in r] for r in rows]

    def frozen_weights(self) -> list[keras.Variable]:
        """Every weight of the backbone (all frozen)."""
        return list(self.backbone.weights)

    def lookup(self, token_ids: tf.Tensor, tables: IdTables) -> tf.Tensor:
        """[B, T] extended ids -> [B, T, d] input embeddings, routed by id range."""
        n, u = self.base_size, tables.num_users
        ids = tf.cast(token_ids, tf.int32)
        base = self.embedding(tf.clip_by_value(ids, 0, n - 1))
        users = tf.gather(tables.users, tf.clip_by_value(ids - n, 0, u - 1))
        items = tf.gather(tables.items, tf.clip_by_value(ids - n - u, 0, tables.num_items - 1))
        out = tf.where((ids >= n + u)[..., None], items, tf.where((ids >= n)[..., None], users, base))
        return tf.cast(out, tf.float32)

    def hidden(self, embeddings: tf.Tensor, padding_mask: tf.Tensor) -> tf.Tensor:
        """One causal pass: [B, T, d] input embeddings -> [B, T, d] last hidden states."""
        out = self.body([embeddings, tf.cast(padding_mask, tf.int32)], training=False)
        return tf.cast(out, tf.float32)

    def vocab_logits(self, hidden: tf.Tensor) -> tf.Tensor:
        """[..., d] -> [..., N]: the frozen vocabulary head (tied to the token embeddings when the preset ties)."""
        return tf.cast(self.embedding(hidden, reverse=True), tf.float32)

    def extended_logits(self, token_ids: tf.Tensor, padding_mask: tf.Tensor, tables: IdTables) -> tf.Tensor:
        """[B, T] ids -> [B, T, N+U+I] logits: vocabulary head, then user and item heads tied to `tables`."""
        h = self.hidden(self.lookup(token_ids, tables), padding_mask)
        return tf.concat([self.vocab_logits(h), tf.einsum("btd,ud->btu", h, tables.users),
                          tf.einsum("btd,id->bti", h, tables.items)], axis=-1)
