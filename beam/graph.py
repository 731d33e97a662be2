"""`build_embedding_pipeline(p, spec)`: the embedding job's graph, pure construction (no I/O, nothing run).

items.parquet -> render prompt -> key by hash(model, template, text)
  -> join with the published cache -> hits reuse their vector;
     misses: tokenize -> group by length bucket -> full batches of similar
             lengths; the buckets' remainders pooled and batched (n texts =
             ceil(n / batch) forward passes) -> spread over workers -> frozen
             keras-hub backbone -> pool -> L2-normalise
  -> fit post-processing on the catalogue (centring / whitening moments)
  -> apply -> sharded Parquet + TFRecord, raw-vector cache, staged stats.
"""

from __future__ import annotations

import os
from typing import Any

import apache_beam as beam
from apache_beam.utils import shared

from beam import publish
from beam import transforms as t
from beam.spec import EmbedSpec
from learn_tf.embeddings import store


def build_embedding_pipeline(p: Any, spec: EmbedSpec) -> dict[str, Any]:
    """Adds the embedding job to pipeline `p`.

    Args:
      p: an `apache_beam.Pipeline`.
      spec: inputs, outputs and model settings.

    Returns:
      The main PCollections by name ("rows", "stats") for callers that extend
      the pipeline (TFX).
    """
    out = spec.output_dir.rstrip("/")
    run_dir = store.staging_dir(out, spec.run_id)
    model = shared.Shared()

    items = p | "ReadItems" >> beam.io.ReadFromParquet(spec.items_path)
    prompts = items | "Render" >> beam.FlatMap(t.render_fn, spec.template, spec.model_id)
    if spec.cache_files:
        cached = (
            p
            | "CacheFiles" >> beam.Create([os.path.join(out, f) for f in spec.cache_files])
            | "ReadCache" >> beam.io.ReadAllFromParquet()
            | "KeyCache" >> beam.Map(t.cache_entry)
        )
    else:
        cached = p | "NoCache" >> beam.Create([])
    split = (
        {"items": prompts, "cached": cached}
        | "JoinCache" >> beam.CoGroupByKey()
        | "SplitHits" >> beam.FlatMap(t.split_hits).with_outputs("miss", main="hit")
    )
    embedded = (
        split.miss
        | "BatchTexts" >> beam.BatchElements(min_batch_size=16, max_batch_size=512)
        | "Tokenize" >> beam.ParDo(t.TokenizeFn(spec, model))
        | "GroupByLength" >> beam.GroupByKey()
        | "FullBatches" >> beam.FlatMap(t.full_batches, spec.batch_size).with_outputs("rest", main="full")
    )
    rest = (
        embedded.rest
        | "PoolRests" >> beam.Map(lambda v: (0, v))
        | "GroupRests" >> beam.GroupByKey()
        | "RestBatches" >> beam.FlatMap(t.rest_batches, spec.batch_size)
    )
    embedded = (
        (embedded.full, rest)
        | "AllBatches" >> beam.Flatten()
        | "SpreadBatches" >> beam.Reshuffle()  # one bucket's full batches still spread over workers
        | "Embed" >> beam.ParDo(t.EmbedBatchFn(spec, model))
    )
    rows = (split.hit, embedded) | "AllRaw" >> beam.Flatten()  # (item_id, hash, raw)

    moments = (
        rows
        | "RawVectors" >> beam.Map(lambda r: r[2])
        | "FitMoments" >> beam.CombineGlobally(t.MomentsFn(spec.postprocess == "whiten"))
    )
    if spec.transform_file:
        # Keep the published transform: vectors of unchanged items stay bit-identical
        # and new items get exactly the transform the model was trained with.
        transform = (
            p
            | "TransformPath" >> beam.Create([spec.transform_file])
            | "LoadTransform" >> beam.Map(store.read_transform)
        )
    else:
        transform = moments | "FitTransform" >> beam.Map(t.fit_transform, spec.postprocess, spec.whiten_dim)

    final = (
        rows
        | "BatchForTransform" >> beam.BatchElements(min_batch_size=64, max_batch_size=4096)
        | "ApplyTransform" >> beam.FlatMap(t.apply_transform, beam.pvalue.AsSingleton(transform), spec.model_id)
    )

    _ = final | "WriteParquet" >> beam.io.WriteToParquet(
        store.shard_prefix(out, "embeddings", spec.run_id), store.EMBEDDINGS_SCHEMA, num_shards=spec.num_shards,
        file_name_suffix=".parquet")
    _ = (
        final
        | "ToExample" >> beam.Map(t.to_example)
        | "WriteTFRecord" >> beam.io.WriteToTFRecord(store.shard_prefix(out, "embeddings", spec.run_id),
                                                      num_shards=spec.num_shards, file_name_suffix=".tfrecord")
    )
    _ = (
        rows
        | "CacheKey" >> beam.Map(lambda r: (r[1], r[2]))
        | "OnePerHash" >> beam.CombinePerKey(lambda vs: next(iter(vs)))
        | "CacheRow" >> beam.Map(t.cache_row)
        | "WriteCache" >> beam.io.WriteToParquet(store.shard_prefix(out, "cache", spec.run_id), store.CACHE_SCHEMA,
                                                 num_shards=spec.num_shards, file_name_suffix=".parquet")
    )
    post_moments = (
        final
        | "PostVectors" >> beam.Map(lambda r: r["embedding"])
        | "PostMoments" >> beam.CombineGlobally(t.MomentsFn(False))
    )
    checksum = (
        final
        | "RowDigest" >> beam.Map(t.row_digest)
        | "SumDigests" >> beam.CombineGlobally(sum)
        | "Checksum" >> beam.Map(lambda total: store.combine_digests([total]))
    )

    def stage(tr, raw_acc, post_acc, digest):
        stats = {
            "count": int(raw_acc[0]),
            "input_dim": int(len(tr.mean)),
            "dim": tr.output_dim,
            "isotropy_raw_mean_pairwise_cosine": t.isotropy(raw_acc),
            "isotropy_mean_pairwise_cosine": t.isotropy(post_acc),
            "checksum": digest,
        }
        return publish.stage_run(run_dir, tr, stats)

    stats = transform | "WriteStats" >> beam.Map(
        stage, beam.pvalue.AsSingleton(moments), beam.pvalue.AsSingleton(post_moments),
        beam.pvalue.AsSingleton(checksum))
    return {"rows": final, "stats": stats}
