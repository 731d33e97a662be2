"""The sequence step: interactions -> one `tf.train.SequenceExample` per user, split roles marked per position.

Beam groups the interactions by user, orders each user's by (timestamp, row)
(the stable tie-break of `learn_tf.data.splits`), marks every position with its
role (`learn_tf.data.sequence_examples.position_roles`: the same leave-one-out
and cold-item holdout `make_splits` computes) and writes sharded TFRecords.
Shards partition the users by id range and each shard is sorted, so reading the
shards in name order gives the users sorted by id: the order the trainer's
sampler draws in. Each shard is written to a temporary file and published in
one step (`learn_tf.utils.io.atomic_path`, local or object store); the manifest
(counts in / out / dropped, roles, the shard list) is written after the shards.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import tempfile
from typing import Any, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
import numpy as np
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.stats import ApproximateQuantiles

from learn_tf.config import SplitConfig
from learn_tf.data import sequence_examples as sx
from learn_tf.data.splits import choose_cold_items
from learn_tf.utils import io

DEFAULT_SHARDS = 4
_COUNT_KEYS = ("interactions_in", "unknown_item_dropped", "users", "positions", *(f"role_{r}" for r in sx.ROLES))


def shard_name(shard: int, num_shards: int) -> str:
    """File name of shard `shard` (0-based) of `num_shards`."""
    return f"{sx.SHARD_PREFIX}-{shard:05d}-of-{num_shards:05d}{sx.SHARD_SUFFIX}"


@contextlib.contextmanager
def _tf_readable(path: str) -> Iterator[str]:
    """A path TensorFlow's readers open: the path itself (local, s3:// and others through tf.io.gfile), or a
    scratch download of a gs:// object (the project reaches gs:// through Beam FileSystems, see learn_tf.utils.io)."""
    if not path.startswith("gs://"):
        io.ensure_filesystem(path)  # s3:// needs tensorflow-io's filesystem registered
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="learn-sequences-") as d:  # local by design: a scratch copy
        local = os.path.join(d, os.path.basename(path))
        io.copy(path, local)
        yield local


class _ReadRecords(beam.DoFn):
    """A TFRecord file -> its records (each file read by one worker)."""

    def __init__(self, compression: str) -> None:
        self.compression = compression

    def process(self, path: str) -> Iterator[bytes]:
        with _tf_readable(path) as readable:
            try:
                yield from tf.data.TFRecordDataset(readable, compression_type=self.compression).as_numpy_iterator()
            except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
                raise ValueError(f"{path}: not a readable {self.compression or 'uncompressed'} TFRecord file "
                                 f"({str(e).splitlines()[0][:200]})") from None


class _ParseInteraction(beam.DoFn):
    """A serialised interaction tf.Example -> (user_id, (timestamp, row, item_id)); unknown items to "dropped"."""

    def process(self, raw: bytes, catalogue: Any) -> Iterator[Any]:
        ex = tf.train.Example.FromString(raw)
        f = ex.features.feature
        try:
            user = f["user_id"].bytes_list.value[0].decode("utf-8")
            item = f["item_id"].bytes_list.value[0].decode("utf-8")
            ts = int(f["timestamp"].int64_list.value[0])
            row = int(f["row"].int64_list.value[0])
        except (KeyError, IndexError) as e:
            raise ValueError(f"interaction example without a user_id/item_id/timestamp/row value ({e!r}): "
                             f"{str(ex)[:200]}") from None
        if item not in catalogue:
            yield beam.pvalue.TaggedOutput("dropped", 1)
            return
        yield user, (ts, row, item)


def _user_record(user_events: tuple[str, Iterable[tuple[int, int, str]]], cold: Any,
                 min_user_interactions: int) -> tuple[str, bytes, dict[str, int]]:
    """(user, events) -> (user, serialised SequenceExample, counts)."""
    user, events = user_events
    ordered = sorted(events)  # (timestamp, row): rows are unique, so the order is total
    items = [e[2] for e in ordered]
    roles = sx.position_roles(items, cold, min_user_interactions)
    record = sx.user_sequence_example(user, items, [e[0] for e in ordered], [e[1] for e in ordered], roles)
    counts = {"users": 1, "positions": len(items)}
    for code, name in enumerate(sx.ROLES):
        counts[f"role_{name}"] = int((roles == code).sum())
    return user, record, counts


def _shard_of(user: str, boundaries: Sequence[str]) -> int:
    """The shard of a user id: shard k holds the ids in [boundaries[k - 1], boundaries[k])."""
    return bisect.bisect_right(list(boundaries), user)


class _WriteShard(beam.DoFn):
    """(shard, [(user, record)]) -> the shard file written atomically, sorted by user; yields (name, users)."""

    def __init__(self, output_dir: str, num_shards: int) -> None:
        self.output_dir, self.num_shards = output_dir, num_shards

    def process(self, shard_records: tuple[int, Iterable[tuple[str, bytes]]]) -> Iterator[tuple[str, int]]:
        shard, records = shard_records
        name = shard_name(shard, self.num_shards)
        n = 0
        with io.atomic_path(os.path.join(self.output_dir, name)) as tmp, tf.io.TFRecordWriter(tmp) as w:
            for _, record in sorted(records, key=lambda ur: ur[0]):
                w.write(record)
                n += 1
        yield name, n


def _sum_counts(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    total = {k: 0 for k in _COUNT_KEYS}
    for c in counts:
        for k, v in c.items():
            total[k] = total.get(k, 0) + v
    return total


def _boundaries(quantiles: list[list[str]], num_shards: int) -> list[str]:
    """Shard boundaries from approximate quantiles of the user ids (strictly increasing, at most n - 1)."""
    q = quantiles[0] if quantiles else []
    return sorted(set(q[1:-1]))[: max(num_shards - 1, 0)]


def build_sequences(p: beam.Pipeline, interaction_examples: beam.PCollection, item_ids: Sequence[str],
                    split: SplitConfig, output_dir: str, num_shards: int = DEFAULT_SHARDS) -> beam.PCollection:
    """Adds the sequence step to `p`; returns a PCollection with the one manifest dict (written last).

    Args:
      p: the pipeline.
      interaction_examples: serialised interaction tf.Examples (user_id, item_id, timestamp, row).
      item_ids: the catalogue; interactions with other items are dropped (counted), as SplitGen drops them.
      split: the split section (cold-item fraction and seed, min_user_interactions).
      output_dir: where the shards and the manifest go (local path or gs:// / s3:// URI).
      num_shards: number of user-range shards (files); each shard's users pass through one worker.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    catalogue_ids = sorted(str(i) for i in item_ids)
    cold = frozenset(choose_cold_items(np.asarray(catalogue_ids, dtype=object), split.cold_item_fraction, split.seed))
    catalogue = p | "Catalogue" >> beam.Create([frozenset(catalogue_ids)])
    parsed = interaction_examples | "Parse" >> beam.ParDo(
        _ParseInteraction(), catalogue=beam.pvalue.AsSingleton(catalogue)).with_outputs("dropped", main="kept")
    users = (parsed.kept | "GroupByUser" >> beam.GroupByKey()
             | "UserRecord" >> beam.Map(_user_record, cold=cold, min_user_interactions=split.min_user_interactions))
    boundaries = (users | "UserIds" >> beam.Map(lambda r: r[0])
                  | "Quantiles" >> ApproximateQuantiles.Globally(num_shards + 1)
                  | "Boundaries" >> beam.Map(lambda q: _boundaries([q], num_shards)))
    written = (users
               | "ToShard" >> beam.Map(lambda r, b: (_shard_of(r[0], b), (r[0], r[1])),
                                       b=beam.pvalue.AsSingleton(boundaries))
               | "GroupByShard" >> beam.GroupByKey()
               | "WriteShard" >> beam.ParDo(_WriteShard(output_dir, num_shards)))
    counts = (users | "Counts" >> beam.Map(lambda r: r[2])
              | "SumCounts" >> beam.CombineGlobally(_sum_counts))
    dropped = parsed.dropped | "CountDropped" >> beam.combiners.Count.Globally()
    inputs = parsed.kept | "CountKept" >> beam.combiners.Count.Globally()

    def manifest(_: Any, counts: dict[str, int], dropped: int, kept: int, shards: list[tuple[str, int]]
                 ) -> dict[str, Any]:
        m = {"interactions_in": int(kept) + int(dropped), "unknown_item_dropped": int(dropped),
             "users": int(counts.get("users", 0)), "positions": int(counts.get("positions", 0)),
             "roles": {r: int(counts.get(f"role_{r}", 0)) for r in sx.ROLES},
             "shards": {name: n for name, n in sorted(shards)}, "num_shards": num_shards,
             "split": {"cold_item_fraction": split.cold_item_fraction, "seed": split.seed,
                       "min_user_interactions": split.min_user_interactions},
             "cold_items": len(cold), "catalogue_items": len(catalogue_ids),
             "format": {"context": list(sx.CONTEXT_FEATURES), "sequence": list(sx.SEQUENCE_FEATURES),
                        "roles": list(sx.ROLES)}}
        io.write_json(os.path.join(output_dir, sx.MANIFEST_FILE), m)
        return m

    return (p | "ManifestTrigger" >> beam.Create([None])
            | "Manifest" >> beam.Map(manifest, counts=beam.pvalue.AsSingleton(counts),
                                     dropped=beam.pvalue.AsSingleton(dropped),
                                     kept=beam.pvalue.AsSingleton(inputs),
                                     shards=beam.pvalue.AsList(written)))


def write_sequences(interaction_files: Sequence[str], item_ids: Sequence[str], split: SplitConfig, output_dir: str,
                    num_shards: int = DEFAULT_SHARDS, beam_args: Optional[Sequence[str]] = None,
                    compression: str = "GZIP") -> dict[str, Any]:
    """Runs the sequence step over interaction tf.Example TFRecord files; returns the manifest.

    Args:
      interaction_files: TFRecord files of interaction tf.Examples (ExampleGen's interactions split).
      item_ids: the catalogue. split: the split section. output_dir: the shards' directory.
      num_shards: user-range shards. beam_args: Beam options (default: the in-memory DirectRunner).
      compression: of the input files ("GZIP" as ExampleGen writes them, or "UNCOMPRESSED").

    Raises:
      FileNotFoundError: no input files.
    """
    if not interaction_files:
        raise FileNotFoundError("no interaction files to build sequences from")
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    io.makedirs(output_dir)
    for stale in io.glob(os.path.join(output_dir, f"{sx.SHARD_PREFIX}-*{sx.SHARD_SUFFIX}")):
        io.remove(stale)  # a re-run with another shard count must not leave old shards behind
    if compression not in ("GZIP", "UNCOMPRESSED"):
        raise ValueError(f"compression must be GZIP or UNCOMPRESSED, got {compression!r}")
    options = PipelineOptions(list(beam_args) if beam_args else ["--direct_running_mode=in_memory",
                                                                 "--direct_num_workers=1"])
    with beam.Pipeline(options=options) as p:
        files = p | "Files" >> beam.Create(sorted(interaction_files))
        examples = (files | "Reshuffle" >> beam.Reshuffle()
                    | "Read" >> beam.ParDo(_ReadRecords("" if compression == "UNCOMPRESSED" else compression)))
        build_sequences(p, examples, item_ids, split, output_dir, num_shards)
    return io.read_json(os.path.join(output_dir, sx.MANIFEST_FILE))
