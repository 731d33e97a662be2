"""Synthetic catalogues for scale tests and benchmarks (never for quality claims).

Items belong to latent topics and their text is drawn from the topic's words,
so text carries signal; users prefer a few topics and their sequences follow
those preferences, with popularity skew inside each topic. Fully vectorised:
a million items and their interactions take seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from learn_tf.config import SyntheticConfig

_SYLLABLES = np.array(
    "ka ri to mo su ne la vi po de shu ran tel gor mi zan bek lo fa qui "
    "dor sel nu pra vel tor ash em ith ul".split()
)
_WORDS_PER_TOPIC = 24
_GENERIC = np.array("classic deluxe mini pro prime ultra basic grand smart".split())


def _topic_words(rng: np.random.Generator, num_topics: int) -> np.ndarray:
    """[num_topics, _WORDS_PER_TOPIC] made-up words, distinct per topic."""
    n = num_topics * _WORDS_PER_TOPIC
    parts = rng.integers(0, len(_SYLLABLES), size=(n, 3))
    words = np.char.add(np.char.add(_SYLLABLES[parts[:, 0]], _SYLLABLES[parts[:, 1]]), _SYLLABLES[parts[:, 2]])
    # Suffix with the topic number in base-26 letters so words never collide across topics.
    topic = np.repeat(np.arange(num_topics), _WORDS_PER_TOPIC)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    tag = np.char.add(letters[(topic // 26) % 26], letters[topic % 26])
    return np.char.add(words, tag).reshape(num_topics, _WORDS_PER_TOPIC)


def generate_synthetic(cfg: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generates a catalogue and interaction log in the canonical layout.

    Args:
      cfg: sizes, topic count, preference concentration and seed.

    Returns:
      (items, interactions): items have item_id, title, genres, brand, year and
      a `topic` column (the planted ground truth); interactions have user_id,
      item_id, timestamp, rating (NaN) and row.
    """
    if cfg.num_items < 1 or cfg.num_users < 1 or cfg.num_topics < 1:
        raise ValueError("synthetic: num_items, num_users and num_topics must be >= 1")
    rng = np.random.default_rng(cfg.seed)
    n, k = cfg.num_items, cfg.num_topics
    words = _topic_words(rng, k)

    topic = rng.integers(0, k, size=n)
    w = rng.integers(0, _WORDS_PER_TOPIC, size=(n, 3))
    generic = _GENERIC[rng.integers(0, len(_GENERIC), size=n)]
    title = words[topic, w[:, 0]]
    for j in (1, 2):
        title = np.char.add(np.char.add(title, " "), words[topic, w[:, j]])
    title = np.char.add(np.char.add(title, " "), generic)
    item_ids = np.char.add("i", np.arange(n).astype(str))
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "title": title,
            "genres": np.char.add("topic ", words[topic, 0]),
            "brand": np.char.add("brand ", words[topic, 1 + rng.integers(0, 3, size=n)]),
            "year": (1950 + rng.integers(0, 75, size=n)).astype(str),
            "topic": topic,
        }
    )

    # Sequence lengths: min + geometric tail with the configured mean.
    extra_mean = max(cfg.mean_sequence_length - cfg.min_sequence_length, 1e-3)
    lengths = cfg.min_sequence_length + rng.geometric(1.0 / (1.0 + extra_mean), size=cfg.num_users) - 1
    total = int(lengths.sum())
    user_of = np.repeat(np.arange(cfg.num_users), lengths)

    # Each user's topic preference (Dirichlet); each interaction draws a topic from it.
    prefs = rng.dirichlet(np.full(k, cfg.topic_concentration), size=cfg.num_users)
    cum = np.cumsum(prefs, axis=1)
    t_of = _topics_for(cum, user_of, rng.random(total))

    # Popularity skew inside a topic: rank = floor(size * u^2) (head items drawn more).
    order = np.argsort(topic, kind="stable")
    sizes = np.bincount(topic, minlength=k)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    # Topics without items fall back to the whole catalogue.
    empty = sizes[t_of] == 0
    rank = np.floor(np.maximum(sizes[t_of], 1) * rng.random(total) ** 2).astype(np.int64)
    item_idx = np.where(empty, rng.integers(0, n, size=total), order[np.minimum(offsets[t_of] + rank, n - 1)])

    start = rng.integers(1_500_000_000, 1_600_000_000, size=cfg.num_users)
    step = rng.integers(60, 86_400, size=total)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    csum = np.cumsum(step)
    within = csum - np.repeat(csum[first] - step[first], lengths)
    interactions = pd.DataFrame(
        {
            "user_id": np.char.add("u", user_of.astype(str)),
            "item_id": item_ids[item_idx],
            "timestamp": (start[user_of] + within).astype(np.int64),
            "rating": np.nan,
            "row": np.arange(total, dtype=np.int64),
        }
    )
    return items, interactions


def _topics_for(cum: np.ndarray, user_of: np.ndarray, u: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """Inverse-CDF topic draws per interaction, in chunks to bound memory."""
    out = np.empty(len(u), dtype=np.int64)
    k = cum.shape[1]
    for s in range(0, len(u), chunk):
        e = s + chunk
        out[s:e] = np.minimum((cum[user_of[s:e]] < u[s:e, None]).sum(axis=1), k - 1)
    return out
