"""Per-user `tf.train.SequenceExample` records: each user's interactions, oldest first, split role per position.

One record per user (the Beam step `beam/sequences.py` writes them, sharded and
sorted by user id across shards). Context: `user_id` (bytes). Sequence features,
one entry per interaction in (timestamp, row) order: `item_id` (bytes),
`timestamp` (int64), `row` (int64) and `role` (int64, `ROLES`): the
leave-one-out split and the cold-item holdout of `learn_tf.data.splits`,
marked per position (`position_roles`).

`read_training_sequences` streams the records with `tf.data`, keeps each
user's `train` positions and maps their item ids to catalogue indices with a
`tf.lookup` table (the catalogue vocabulary: index i + 1 is `item_ids[i]`),
so training never materialises the interactions as strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Container, Iterator, Optional, Sequence

import numpy as np
import tensorflow as tf

from learn_tf.utils import io

# Position roles, in the order of their codes: what `make_splits` makes of each interaction.
ROLES = ("train", "validation", "test", "cold")
TRAIN, VALIDATION, TEST, COLD = range(len(ROLES))
SHARD_PREFIX = "sequences"
SHARD_SUFFIX = ".tfrecord"
MANIFEST_FILE = "sequences_manifest.json"
CONTEXT_FEATURES = ("user_id",)
SEQUENCE_FEATURES = ("item_id", "timestamp", "row", "role")


class SequenceRecordError(ValueError):
    """A SequenceExample record is malformed; the message names the file, record and field."""


def position_roles(item_ids: Sequence[str], cold: Container[str], min_user_interactions: int) -> np.ndarray:
    """[L] int64 role codes of one user's interactions ordered by (timestamp, row), as `make_splits` assigns them.

    With at least `min_user_interactions` interactions the last is TEST and the
    second-last VALIDATION; any other position whose item is cold is COLD; the rest TRAIN.
    """
    n = len(item_ids)
    roles = np.array([COLD if i in cold else TRAIN for i in item_ids], np.int64)
    if n >= min_user_interactions:
        roles[n - 1] = TEST
        roles[n - 2] = VALIDATION
    return roles


def user_sequence_example(user_id: str, item_ids: Sequence[str], timestamps: Sequence[int], rows: Sequence[int],
                          roles: Sequence[int]) -> bytes:
    """One user's serialised SequenceExample (deterministic bytes for identical input).

    Raises:
      ValueError: the per-position lists differ in length or a role code is unknown (naming the user).
    """
    n = len(item_ids)
    if not (len(timestamps) == len(rows) == len(roles) == n):
        raise ValueError(f"user {user_id!r}: item_id, timestamp, row and role lengths differ "
                         f"({n}, {len(timestamps)}, {len(rows)}, {len(roles)})")
    bad = [r for r in roles if not 0 <= int(r) < len(ROLES)]
    if bad:
        raise ValueError(f"user {user_id!r}: role code {bad[0]} is not one of 0..{len(ROLES) - 1} {ROLES}")

    def feats(values: Sequence[Any], kind: str) -> tf.train.FeatureList:
        if kind == "bytes":
            return tf.train.FeatureList(feature=[
                tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(v).encode("utf-8")])) for v in values])
        return tf.train.FeatureList(feature=[
            tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)])) for v in values])

    ex = tf.train.SequenceExample(
        context=tf.train.Features(feature={"user_id": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[str(user_id).encode("utf-8")]))}),
        feature_lists=tf.train.FeatureLists(feature_list={
            "item_id": feats(item_ids, "bytes"), "timestamp": feats(timestamps, "int"), "row": feats(rows, "int"),
            "role": feats(roles, "int")}))
    return ex.SerializeToString(deterministic=True)


def check_sequence_example(serialized: bytes, where: str) -> tf.train.SequenceExample:
    """Parses and validates one record in Python (the slow path that names what is wrong).

    Args:
      serialized: the record's bytes.
      where: how to name the record in messages, e.g. "path/sequences-00000-of-00004.tfrecord record 17".

    Raises:
      SequenceRecordError: not a SequenceExample, a feature missing or of the wrong type, lists of
        different lengths, or an unknown role code; the message names `where`, the user and the field.
    """
    try:
        ex = tf.train.SequenceExample.FromString(serialized)
    except Exception as e:  # protobuf's DecodeError has no stable import path across versions
        raise SequenceRecordError(f"{where}: not a tf.train.SequenceExample ({e})") from None
    uid = ex.context.feature.get("user_id")
    if uid is None or uid.WhichOneof("kind") != "bytes_list" or len(uid.bytes_list.value) != 1:
        raise SequenceRecordError(f"{where}: context feature 'user_id' must hold one bytes value")
    user = uid.bytes_list.value[0].decode("utf-8", "replace")
    lengths = {}
    for name in SEQUENCE_FEATURES:
        fl = ex.feature_lists.feature_list.get(name)
        if fl is None:
            raise SequenceRecordError(f"{where} (user {user!r}): sequence feature {name!r} is missing")
        kind = "bytes_list" if name == "item_id" else "int64_list"
        for j, f in enumerate(fl.feature):
            if f.WhichOneof("kind") != kind or len(getattr(f, kind).value) != 1:
                raise SequenceRecordError(f"{where} (user {user!r}): sequence feature {name!r} position {j} "
                                          f"must hold one {kind.split('_')[0]} value")
        lengths[name] = len(fl.feature)
    if len(set(lengths.values())) != 1:
        raise SequenceRecordError(f"{where} (user {user!r}): sequence features have different lengths {lengths}")
    roles = [f.int64_list.value[0] for f in ex.feature_lists.feature_list["role"].feature]
    bad = [(j, r) for j, r in enumerate(roles) if not 0 <= r < len(ROLES)]
    if bad:
        raise SequenceRecordError(f"{where} (user {user!r}): sequence feature 'role' position {bad[0][0]} holds "
                                  f"{bad[0][1]}, not one of 0..{len(ROLES) - 1} {ROLES}")
    return ex


def shard_files(directory: str) -> list[str]:
    """The record shards under `directory` in shard order (= user order), or FileNotFoundError naming it."""
    files = sorted(io.glob(f"{directory.rstrip('/')}/{SHARD_PREFIX}-*{SHARD_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"no {SHARD_PREFIX}-*{SHARD_SUFFIX} shards under {directory}; "
                                "run the sequence step (beam/sequences.py, the pipeline's SequenceGen) first")
    return files


@dataclass
class ReadCounts:
    """What `read_training_sequences` read: records in, sequences out, users left out (no training item)."""

    records: int = 0
    sequences: int = 0
    users_without_training: int = 0
    training_items: int = 0
    files: list[str] = field(default_factory=list)


def _parse_batch(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """Graph-compatible parse of a batch of records: user ids and ragged item ids / roles."""
    context, seq, _ = tf.io.parse_sequence_example(
        serialized,
        context_features={"user_id": tf.io.FixedLenFeature([], tf.string)},
        sequence_features={"item_id": tf.io.RaggedFeature(tf.string), "timestamp": tf.io.RaggedFeature(tf.int64),
                           "row": tf.io.RaggedFeature(tf.int64), "role": tf.io.RaggedFeature(tf.int64)})
    # Each is [B, (positions), (values)]: one value per position is expected; keep [B, (positions)].
    one = tf.reduce_all([tf.reduce_all(tf.equal(seq[k].values.row_lengths(), 1)) for k in SEQUENCE_FEATURES])
    flat = {k: tf.RaggedTensor.from_row_splits(seq[k].values.flat_values, seq[k].row_splits, validate=False)
            for k in ("item_id", "role")}
    n = seq["item_id"].row_lengths()
    same = tf.reduce_all([tf.reduce_all(tf.equal(seq[k].row_lengths(), n)) for k in ("timestamp", "row", "role")])
    roles = flat["role"].flat_values
    valid = one & same & tf.reduce_all((roles >= 0) & (roles < len(ROLES)))
    return {"user_id": context["user_id"], "item_id": flat["item_id"], "role": flat["role"], "valid": valid}


def _catalogue_table(item_ids: np.ndarray) -> tf.lookup.StaticHashTable:
    """item id -> catalogue index (i + 1), 0 for ids outside the catalogue."""
    keys = tf.constant(np.asarray(item_ids).astype(str).astype(object).astype(bytes))
    values = tf.range(1, len(item_ids) + 1, dtype=tf.int32)
    return tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(keys, values), default_value=0)


def training_batches(files: Sequence[str], item_ids: np.ndarray, batch_size: int = 512,
                     counts: Optional[ReadCounts] = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Streams the records' training positions as catalogue indices, a batch of users at a time.

    Args:
      files: record shards in user order (`shard_files`).
      item_ids: the catalogue order (index i + 1 is item_ids[i]).
      batch_size: records parsed per step (bounds memory).
      counts: updated in place (records, sequences, users left out, training items).

    Yields:
      (user_ids [B] object, values [sum of lengths] int32, lengths [B] int64) for the users of a batch that
      have at least one training position, in record order.

    Raises:
      SequenceRecordError: a malformed record (named by file, record number, user and field), a file that is
        not a TFRecord file or is truncated (named), or a training item outside the catalogue (naming the
        record, the user and the item id).
    """
    table = _catalogue_table(item_ids)

    @tf.function
    def to_indices(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
        p = _parse_batch(serialized)
        train = tf.equal(p["role"], TRAIN)  # raises when item_id and role lengths differ
        items = tf.ragged.boolean_mask(p["item_id"], train)
        idx = tf.ragged.map_flat_values(table.lookup, items)
        # valid: false when the per-position lists differ in length or a role is unknown (the caller names it).
        return {"valid": p["valid"], "user_id": p["user_id"], "values": idx.flat_values, "lengths": idx.row_lengths(),
                "items": items.flat_values}

    counts = counts if counts is not None else ReadCounts()
    for path in files:
        counts.files.append(path)
        ds = tf.data.TFRecordDataset(path).batch(batch_size).prefetch(1)
        first = 0
        it = iter(ds)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                break
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                raise SequenceRecordError(f"{path}: not a readable TFRecord file after record {first} "
                                          f"({str(e).splitlines()[0][:200]})") from None
            try:
                out = to_indices(batch)
                if not bool(out["valid"]):
                    raise tf.errors.InvalidArgumentError(None, None, "sequence lengths differ or a role is unknown")
            except tf.errors.InvalidArgumentError:
                for j, rec in enumerate(batch.numpy()):
                    check_sequence_example(rec, f"{path} record {first + j}")
                raise  # the Python check found nothing: let TensorFlow's message through
            n = int(tf.shape(batch)[0])
            lengths = out["lengths"].numpy()
            values = out["values"].numpy()
            if (values == 0).any():
                k = int(np.flatnonzero(values == 0)[0])
                rec = int(np.searchsorted(np.cumsum(lengths), k, side="right"))
                raise SequenceRecordError(
                    f"{path} record {first + rec} (user {out['user_id'].numpy()[rec].decode()!r}): training item "
                    f"{out['items'].numpy()[k].decode()!r} is not in the catalogue ({len(item_ids):,} items); "
                    "build the sequences and the catalogue from the same items table")
            keep = lengths > 0
            counts.records += n
            counts.users_without_training += int((~keep).sum())
            counts.sequences += int(keep.sum())
            counts.training_items += int(values.size)
            first += n
            yield out["user_id"].numpy()[keep].astype(object), values.astype(np.int32), lengths[keep]


def earlier_items(files: Sequence[str], cases: Any, batch_size: int = 512) -> list[list[str]]:
    """Every item before each case's target (all roles, oldest first), read from the records.

    The records' counterpart of `learn_tf.evaluation.cases.add_earlier_items`: the
    masked protocol's `earlier_items`, without the interactions table.

    Args:
      files: record shards (`shard_files`).
      cases: evaluation cases with split ("validation" / "test"), user_id and target_item_id columns.
      batch_size: records parsed per step.

    Returns:
      One list per case, in the cases' order.

    Raises:
      ValueError: a case's user has no record, or its target is not the item at that split's position
        (naming the user, the split and both items): the records and the split come from different data.
    """
    want: dict[str, list[tuple[int, str, str]]] = {}
    for k, (split, user, target) in enumerate(zip(cases["split"], cases["user_id"], cases["target_item_id"])):
        if split not in ("validation", "test"):
            raise ValueError(f"case of user {user!r}: unknown split {split!r} (expected test or validation)")
        want.setdefault(str(user), []).append((k, split, str(target)))
    out: list[Optional[list[str]]] = [None] * len(cases)
    for path in files:
        for batch in tf.data.TFRecordDataset(path).batch(batch_size).as_numpy_iterator():
            p = _parse_batch(tf.constant(batch))
            users = [u.decode("utf-8") for u in p["user_id"].numpy()]
            hit = [j for j, u in enumerate(users) if u in want]
            if not hit:
                continue
            items, roles = p["item_id"].to_list(), p["role"].to_list()
            for j in hit:
                for k, split, target in want.pop(users[j]):
                    code = VALIDATION if split == "validation" else TEST
                    pos = roles[j].index(code) if code in roles[j] else -1
                    got = items[j][pos].decode("utf-8") if pos >= 0 else None
                    if got != target:
                        raise ValueError(f"case of user {users[j]!r} ({split}): target {target!r}, but the record in "
                                         f"{path} marks {got!r} as the {split} item; build the sequences and the "
                                         "split from the same data")
                    out[k] = [i.decode("utf-8") for i in items[j][:pos]]
    if want:
        user = next(iter(want))
        raise ValueError(f"{len(want):,} case users have no record (e.g. user {user!r}); build the sequences and "
                         "the split from the same data")
    return out  # type: ignore[return-value]  # every slot filled above
