"""Item ids <-> indices, content table alignment, users' histories, and full-catalogue scoring for the evaluator."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf


class UnknownItemError(KeyError):
    """A history references an item id that is not in the catalogue."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


class Catalogue:
    """The catalogue order used by every model: index i + 1 is item_ids[i]; 0 is padding.

    Args:
      item_ids: [N] unique item ids (sorted order recommended).
    """

    def __init__(self, item_ids: Sequence[str]) -> None:
        self.item_ids = np.asarray(item_ids).astype(str)
        self.index = {item: i + 1 for i, item in enumerate(self.item_ids)}
        if len(self.index) != len(self.item_ids):
            seen: set[str] = set()
            dup = next(i for i in self.item_ids if i in seen or seen.add(i))
            raise ValueError(f"catalogue item ids are not unique: {dup!r} appears more than once")

    def __len__(self) -> int:
        return len(self.item_ids)

    def extended(self, new_ids: Sequence[str]) -> "Catalogue":
        """This catalogue plus `new_ids` at indices N+1.. (pair with `LearnTowers.with_extra_items`).

        Raises:
          ValueError: a new id is already in the catalogue (or repeated).
        """
        return Catalogue(list(self.item_ids) + [str(i) for i in new_ids])

    def indices(self, ids: Sequence[str], context: str = "") -> np.ndarray:
        """Item ids -> int32 indices.

        Raises:
          UnknownItemError: naming the first unknown id (and `context`, e.g. the user).
        """
        out = np.empty(len(ids), np.int32)
        for k, item in enumerate(ids):
            try:
                out[k] = self.index[item]
            except KeyError:
                where = f" ({context})" if context else ""
                raise UnknownItemError(f"unknown item id {item!r}{where}: not in the catalogue of "
                                       f"{len(self.item_ids):,} items") from None
        return out

    def pad_histories(self, histories: Sequence[Sequence[str]], max_len: int,
                      users: Optional[Sequence[Any]] = None) -> np.ndarray:
        """Histories (oldest first) -> [B, max_len] right-padded indices of the last max_len items.

        Only the items kept (the last `max_len`) are looked up and checked.

        Args:
          histories: [B] lists of item ids, oldest first.
          max_len: the user tower's history length.
          users: optional [B] user ids, named in error messages.

        Raises:
          ValueError: a history is empty. UnknownItemError: an id is not in the
            catalogue. Both name the row (and the user when given).
        """
        if users is not None and len(users) != len(histories):
            raise ValueError(f"{len(users)} user ids for {len(histories)} histories")
        out = np.zeros((len(histories), max_len), np.int32)
        for r, h in enumerate(histories):
            where = f"history row {r}" + (f", user {users[r]!r}" if users is not None else "")
            if len(h) == 0:
                raise ValueError(f"{where} is empty: a user needs at least one item to be scored")
            idx = self.indices(list(h)[-max_len:], context=where)
            out[r, : len(idx)] = idx
        return out

    def check_histories(self, histories: Sequence[Sequence[str]], max_len: int,
                        users: Optional[Sequence[Any]] = None) -> None:
        """Raises the errors `pad_histories` would raise, for all rows at once (e.g. before training starts)."""
        self.pad_histories(histories, max_len, users)

    def align(self, ids: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """Reorders rows of `matrix` (keyed by `ids`) into catalogue order.

        Raises:
          ValueError: naming a catalogue item that has no row.
        """
        pos = {str(i): k for k, i in enumerate(np.asarray(ids).astype(str))}
        missing = [i for i in self.item_ids if i not in pos]
        if missing:
            raise ValueError(f"{len(missing)} catalogue items have no content embedding, e.g. {missing[0]!r}; "
                             "re-run `learn embed` on the current catalogue")
        return matrix[[pos[i] for i in self.item_ids]]


def user_histories(train: pd.DataFrame) -> list[tuple[str, list[str]]]:
    """(user id, item ids oldest first) for every user of a split's training interactions, users sorted."""
    ordered = train.sort_values(["user_id", "position"], kind="mergesort")
    return [(u, g["item_id"].astype(str).tolist()) for u, g in ordered.groupby("user_id", sort=True)]


def tuning_queries(catalogue: Catalogue, train: pd.DataFrame, max_len: int, limit: int = 2000) -> np.ndarray:
    """[Q, max_len] index histories (the last items) of the first `limit` users, to tune a ScaNN index on.

    Args:
      catalogue: the order the towers use (ids outside it are dropped from the histories).
      train: a split's training interactions (user_id, item_id, position).
      max_len: the user tower's history length.
      limit: at most this many users (users sorted; those left without a known item skipped).

    Returns:
      int32 [Q, max_len], right-padded with 0; [0, max_len] when no user has a known item.
    """
    known = set(catalogue.item_ids)
    hists = [[i for i in h if i in known] for _, h in user_histories(train)]
    hists = [h for h in hists if h][:limit]
    return catalogue.pad_histories(hists, max_len) if hists else np.zeros((0, max_len), np.int32)


def check_towers_fit(towers: tf.keras.Model, catalogue: Catalogue, fix: str) -> None:
    """Raises ValueError when the towers were built for another catalogue size; `fix` says what to do."""
    num_items = getattr(towers, "num_items", len(catalogue))
    if num_items != len(catalogue):
        raise ValueError(f"the towers were built for {num_items:,} items but the catalogue has {len(catalogue):,}: "
                         + fix)


def item_matrix(towers: tf.keras.Model, num_items: int, batch_size: int = 1024) -> np.ndarray:
    """[N, d] item-tower vectors of the catalogue (indices 1..N, in catalogue order), `batch_size` at a time."""
    idx = np.arange(1, num_items + 1, dtype=np.int32)
    return np.concatenate([towers.items(tf.constant(idx[s:s + batch_size])).numpy()
                           for s in range(0, num_items, batch_size)])


class TowerScorer:
    """Scores the whole catalogue for histories with trained towers (for the evaluator).

    Args:
      towers: trained towers.
      catalogue: the index mapping the towers were built with.
      max_len: history length fed to the user tower.
      batch_size: items per forward pass when encoding the catalogue.
    """

    def __init__(self, towers: tf.keras.Model, catalogue: Catalogue, max_len: int, batch_size: int = 1024) -> None:
        check_towers_fit(towers, catalogue, "pass the catalogue they were trained with (extend both with "
                                            "LearnTowers.with_extra_items for new items)")
        self.towers, self.catalogue, self.max_len = towers, catalogue, max_len
        self.item_matrix = item_matrix(towers, len(catalogue), batch_size)
        self._users = tf.function(lambda x: towers.users(x, training=False),
                                  input_signature=[tf.TensorSpec([None, max_len], tf.int32)])

    def user_vectors(self, histories: Sequence[Sequence[str]], users: Optional[Sequence[Any]] = None) -> np.ndarray:
        """[B] histories -> [B, d] user embeddings.

        Raises:
          UnknownItemError / ValueError: an unknown item id / an empty history
            (naming the row, and the user when `users` is given).
        """
        return self._users(tf.constant(self.catalogue.pad_histories(histories, self.max_len, users))).numpy()

    def score(self, histories: Sequence[Sequence[str]], users: Optional[Sequence[Any]] = None) -> np.ndarray:
        """[B] histories -> [B, N] cosine scores against every catalogue item (errors as `user_vectors`)."""
        return self.user_vectors(histories, users) @ self.item_matrix.T
