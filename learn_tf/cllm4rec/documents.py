"""CLLM4Rec documents (soft+hard prompts) and length-bucketed, right-padded batches.

A document is [prompt; main]: the prompt mixes ID tokens (soft) with BPE text
(hard), the loss covers the main text only. Three kinds:

- collaborative (one per user): `user_u has interacted with` -> the user's
  training item tokens, in the split's order (the official code does not
  reorder them);
- content (one per item): `item_j is described as:` -> the item's text.
  MovieLens has no reviews, so the content documents are item descriptions
  rendered from the catalogue fields by the embedding job's template
  (`learn_tf.embeddings.templates.item_text`); no user-review documents;
- recommendation (fine-tuning, one per user and epoch): `user_u has
  interacted with <visible items, shuffled>, user_u will interact with` with
  the masked items (or all the user's items) as multinomial target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np

from learn_tf.cllm4rec.vocab import IdVocabulary

# Regularisation scope of a batch: every ID token (collaborative L-step) or the prompt's only (content C-step).
REG_SCOPES = ("all", "prompt")


@dataclass(frozen=True)
class Prompts:
    """The hard (text) parts of the prompts; each follows an ID token."""

    collaborative: str = " has interacted with"
    content: str = " is described as:"
    recommend_sep: str = ","
    recommend: str = " will interact with"


@dataclass(frozen=True)
class Document:
    """One training document: prompt token ids, main-text token ids."""

    prompt: np.ndarray
    main: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt) + len(self.main)


class DocumentBuilder:
    """Builds documents from user / item indices and item text.

    Args:
      vocab: where the ID tokens sit.
      tokenize: texts -> BPE ids (no BOS/EOS), e.g. `FrozenLM.tokenize`.
      prompts: the hard prompt texts.
      max_content_tokens: item texts are cut to this many tokens.
    """

    def __init__(self, vocab: IdVocabulary, tokenize: Callable[[Sequence[str]], list[list[int]]],
                 prompts: Prompts = Prompts(), max_content_tokens: int = 64) -> None:
        self.vocab = vocab
        self.tokenize = tokenize
        self.max_content_tokens = max_content_tokens
        hard = tokenize([prompts.collaborative, prompts.content, prompts.recommend_sep, prompts.recommend])
        self.collab_text, self.content_text, self.sep_text, self.recommend_text = (
            np.asarray(h, np.int32) for h in hard)

    def collaborative(self, user: int, items: Sequence[int]) -> Document:
        """`user_u has interacted with` -> item tokens (0-based item indices, in order)."""
        prompt = np.concatenate([[self.vocab.user_token(user)], self.collab_text]).astype(np.int32)
        return Document(prompt, self.vocab.item_tokens(items))

    def content(self, items: Sequence[int], texts: Sequence[str]) -> list[Document]:
        """`item_j is described as:` -> the item's text tokens, one document per item."""
        ids = self.tokenize([" " + t.strip() for t in texts])
        return [Document(np.concatenate([self.vocab.item_tokens([j]), self.content_text]).astype(np.int32),
                         np.asarray(r[: self.max_content_tokens], np.int32))
                for j, r in zip(items, ids)]

    def recommendation_prompt(self, user: Optional[int], visible: Sequence[int]) -> np.ndarray:
        """`user_u has interacted with <visible>, user_u will interact with` (user tokens left out when None)."""
        u = [] if user is None else [self.vocab.user_token(user)]
        return np.concatenate([u, self.collab_text, self.vocab.item_tokens(visible), self.sep_text, u,
                               self.recommend_text]).astype(np.int32)

    def masked_history(self, user: int, items: Sequence[int], mask_fraction: float, rng: np.random.Generator,
                       target: str = "masked") -> tuple[np.ndarray, np.ndarray]:
        """One fine-tuning example: (prompt over the shuffled visible items, target item indices).

        Masks max(1, floor(mask_fraction * n)) random items; the target is the
        masked items ("masked", the paper) or every item of the user ("all",
        the official code).
        """
        items = np.asarray(items, np.int64)
        n = len(items)
        n_mask = min(max(1, int(np.floor(mask_fraction * n))), n)
        order = rng.permutation(n)
        masked, visible = items[order[:n_mask]], items[order[n_mask:]]
        targets = masked if target == "masked" else items
        return self.recommendation_prompt(user, visible), np.unique(targets)


@dataclass(frozen=True)
class Batch:
    """Right-padded arrays of one batch.

    tokens [B, T] int32 (pad 0); padding_mask [B, T] bool; label_mask [B, T]
    bool (True at main-text tokens the loss scores); reg_mask [B, T] bool
    (True at the ID tokens the mutual regularisation covers).
    """

    tokens: np.ndarray
    padding_mask: np.ndarray
    label_mask: np.ndarray
    reg_mask: np.ndarray


def collate(docs: Sequence[Document], vocab: IdVocabulary, reg_scope: str = "all") -> Batch:
    """Pads documents to the batch's longest one (no BOS/EOS).

    Args:
      docs: the documents of one batch.
      vocab: to find the ID tokens.
      reg_scope: "all" (prompt + main ID tokens) or "prompt" (the prompt's ID tokens only).
    """
    if reg_scope not in REG_SCOPES:
        raise ValueError(f"reg_scope must be one of {REG_SCOPES}, got {reg_scope!r}")
    length = max(len(d) for d in docs)
    b = len(docs)
    tokens = np.zeros((b, length), np.int32)
    label = np.zeros((b, length), bool)
    region = np.zeros((b, length), bool)
    lengths = np.zeros(b, np.int64)
    for k, d in enumerate(docs):
        p, n = len(d.prompt), len(d)
        tokens[k, :p], tokens[k, p:n] = d.prompt, d.main
        label[k, p:n] = True
        region[k, : (n if reg_scope == "all" else p)] = True
        lengths[k] = n
    mask = np.arange(length)[None, :] < lengths[:, None]
    return Batch(tokens, mask, label, region & (tokens >= vocab.base_size) & mask)


def prompt_batch(prompts: Sequence[np.ndarray], vocab: IdVocabulary) -> Batch:
    """Right-padded prompt-only batch (fine-tuning, scoring): every ID token is regularised, no labels."""
    return collate([Document(np.asarray(p, np.int32), np.zeros(0, np.int32)) for p in prompts], vocab, "prompt")


def bucket_batches(lengths: Sequence[int], batch_size: int, max_tokens: int, rng: np.random.Generator
                   ) -> list[np.ndarray]:
    """Groups documents of similar length: sort by length (random tie order), cut, shuffle the batches.

    A batch holds at most `batch_size` documents and at most `max_tokens`
    padded tokens (a longer single document still forms its own batch), so
    padding stays small and long histories do not blow up memory.

    Returns:
      Lists of document indices, in a random order.
    """
    lengths = np.asarray(lengths, np.int64)
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches, current = [], []
    for i in order:
        longest = max(lengths[i], lengths[current[-1]]) if current else lengths[i]
        if current and (len(current) >= batch_size or (len(current) + 1) * longest > max_tokens):
            batches.append(np.asarray(current))
            current = []
        current.append(int(i))
    if current:
        batches.append(np.asarray(current))
    return [batches[k] for k in rng.permutation(len(batches))]
