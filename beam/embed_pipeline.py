"""The Beam job that computes frozen-LLM item embeddings (LEARN's Content Embedding Generation).

items.parquet -> render prompt -> key by hash(model, template, text)
  -> join with the published cache -> hits reuse their vector;
     misses: tokenize -> batch by length bucket -> frozen keras-hub backbone
             -> pool -> L2-normalise
  -> fit post-processing on the catalogue (centring / whitening moments)
  -> apply -> sharded Parquet + TFRecord, raw-vector cache, stats.

`build_embedding_pipeline(p, spec)` is pure construction (TFX reuses it);
`run_embedding_job(...)` decides whether anything needs doing, runs it and
publishes the manifest atomically.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

import learn_tf  # noqa: F401
from learn_tf.embeddings import postprocess
from learn_tf.embeddings import store
from learn_tf.embeddings.templates import render, resolve_template, template_fields

NAMESPACE = "learn_embed"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedSpec:
    """Everything the pipeline needs, as plain values."""

    items_path: str
    output_dir: str
    run_id: str
    model: str  # the configured model (name, folder or handle)
    model_id: str  # identity used in cache keys
    template: str  # resolved template text
    pooling: str = "mean"
    max_tokens: int = 128
    batch_size: int = 32
    postprocess: str = "center"
    whiten_dim: Optional[int] = None
    num_shards: int = 2
    num_subkeys: int = 8  # parallelism inside one length bucket
    cache_files: tuple[str, ...] = ()
    transform_file: Optional[str] = None  # reuse this fitted transform instead of refitting
    expected_to_embed: int = 0  # for progress / ETA only


# --------------------------------------------------------------------------- model sharing


class _EncoderHolder:
    """A weak-referenceable wrapper so `Shared` can hold the encoder."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder


def _load_encoder(model: str, pooling: str, max_tokens: int) -> _EncoderHolder:
    from learn_tf.embeddings.text_embedder import TextEmbedder
    from learn_tf.pretrained.presets import resolve_preset

    return _EncoderHolder(TextEmbedder(resolve_preset(model), pooling=pooling, max_tokens=max_tokens))


class _Progress:
    """Process-wide items/s and ETA, logged at most every few seconds."""

    def __init__(self, total: int, every: float = 5.0) -> None:
        self.total, self.every = total, every
        self.done, self.start, self.last = 0, time.time(), 0.0
        self.lock = threading.Lock()

    def add(self, n: int) -> None:
        with self.lock:
            self.done += n
            now = time.time()
            if now - self.last < self.every and self.done < self.total:
                return
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 and self.total > self.done else 0.0
            pct = f"{100 * self.done / self.total:.0f}%" if self.total else "?"
            msg = f"embedded {self.done:,}/{self.total:,} items ({pct}), {rate:.1f} items/s, ETA {eta:.0f} s"
            print(f"[learn embed] {msg}", flush=True)


_PROGRESS: dict[str, _Progress] = {}


# --------------------------------------------------------------------------- DoFns


def item_text(template: str, row: dict[str, Any]) -> tuple[str, tuple[str, ...], bool]:
    """The text embedded for one item: (text, empty fields, whether the title fallback was used).

    When every template field is empty the title stands in (ingestion
    guarantees one), else "Item <id>".
    """
    text, missing = render(template, row)
    if not text.strip() or set(missing) == set(template_fields(template)):
        return str(row.get("title") or f"Item {row['item_id']}"), missing, True
    return text, missing, False


def _render_fn(row: dict[str, Any], template: str, model_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    import apache_beam as beam

    text, missing, fallback = item_text(template, row)
    beam.metrics.Metrics.counter(NAMESPACE, "items_in").inc()
    for name in missing:
        beam.metrics.Metrics.counter(NAMESPACE, f"template_missing_{name}").inc()
    if fallback:
        beam.metrics.Metrics.counter(NAMESPACE, "empty_text_fallback").inc()
    h = store.text_hash(model_id, template, text)
    yield h, {"item_id": str(row["item_id"]), "text": text}


def _chunk(element: tuple[tuple[int, int], Iterable[Any]], size: int) -> Iterator[tuple[int, list[Any]]]:
    """Cuts one length bucket into batches of `size` (sorted by hash: deterministic batches)."""
    (bucket, _), values = element
    values = sorted(values, key=lambda v: v[0])
    for s in range(0, len(values), size):
        yield bucket, values[s : s + size]


class _SplitHits:
    """After the cache join: hits emit (item_id, hash, raw); misses go to the model."""

    @staticmethod
    def process(element: tuple[str, dict[str, list]]) -> Iterator[Any]:
        import apache_beam as beam

        h, groups = element
        items, cached = groups["items"], groups["cached"]
        if not items:
            beam.metrics.Metrics.counter(NAMESPACE, "cache_entries_evicted").inc()
            return
        if cached:
            beam.metrics.Metrics.counter(NAMESPACE, "items_reused").inc(len(items))
            raw = np.asarray(cached[0], np.float32)
            for it in items:
                yield (it["item_id"], h, raw)
        else:
            yield beam.pvalue.TaggedOutput("miss", (h, items[0]["text"], [it["item_id"] for it in items]))


def _make_dofns(spec: EmbedSpec, shared_handle: Any):
    import apache_beam as beam

    class TokenizeFn(beam.DoFn):
        """Tokenizes a batch of texts; keys each by its padded-length bucket."""

        def setup(self) -> None:
            self.holder = shared_handle.acquire(lambda: _load_encoder(spec.model, spec.pooling, spec.max_tokens))

        def process(self, batch):
            from learn_tf.embeddings.text_embedder import bucket_length

            ids, truncated = self.holder.encoder.tokenize([text for _, text, _ in batch])
            beam.metrics.Metrics.counter(NAMESPACE, "texts_truncated").inc(sum(truncated))
            beam.metrics.Metrics.counter(NAMESPACE, "tokens").inc(sum(len(r) for r in ids))
            for (h, _, item_ids), r in zip(batch, ids):
                # Key: (padded length, sub-key) so one long bucket still spreads over workers.
                key = (bucket_length(len(r), spec.max_tokens), int(h[:8], 16) % spec.num_subkeys)
                yield key, (h, r.tolist(), item_ids)

    class EmbedBatchFn(beam.DoFn):
        """Runs the frozen backbone on one same-bucket batch; emits per item."""

        def setup(self) -> None:
            self.holder = shared_handle.acquire(lambda: _load_encoder(spec.model, spec.pooling, spec.max_tokens))
            self.progress = _PROGRESS.setdefault(spec.run_id, _Progress(spec.expected_to_embed))

        def process(self, element):
            bucket, batch = element
            vecs = self.holder.encoder.embed_ids([np.asarray(ids, np.int32) for _, ids, _ in batch], pad_to=bucket)
            beam.metrics.Metrics.counter(NAMESPACE, "forward_passes").inc()
            beam.metrics.Metrics.counter(NAMESPACE, "texts_embedded").inc(len(batch))
            for (h, _, item_ids), v in zip(batch, vecs):
                if not np.all(np.isfinite(v)):
                    raise ValueError(f"non-finite embedding for item {item_ids[0]} (text hash {h})")
                for item_id in item_ids:
                    yield item_id, h, v
            self.progress.add(sum(len(b[2]) for b in batch))

    return TokenizeFn(), EmbedBatchFn()


def _moments_combine(with_outer: bool):
    """A CombineFn of vectors into [n, sum, sum of outer products (or None)]."""
    import apache_beam as beam

    class MomentsFn(beam.CombineFn):
        def create_accumulator(self):
            return [0, None, None]

        def add_input(self, acc, v):
            v = np.asarray(v, np.float64)
            acc[0] += 1
            acc[1] = v.copy() if acc[1] is None else acc[1] + v
            if with_outer:
                o = np.outer(v, v)
                acc[2] = o if acc[2] is None else acc[2] + o
            return acc

        def merge_accumulators(self, accs):
            out = [0, None, None]
            for a in accs:
                out[0] += a[0]
                for k in (1, 2):
                    if a[k] is not None:
                        out[k] = a[k].copy() if out[k] is None else out[k] + a[k]
            return out

        def extract_output(self, acc):
            return acc

    return MomentsFn()


def _isotropy(acc) -> float:
    """Mean pairwise cosine from (n, sum of unit vectors)."""
    n, s = acc[0], acc[1]
    if n < 2 or s is None:
        return float("nan")
    return float((s @ s - n) / (n * (n - 1)))


# --------------------------------------------------------------------------- pipeline


def build_embedding_pipeline(p: Any, spec: EmbedSpec) -> dict[str, Any]:
    """Adds the embedding job to pipeline `p`.

    Args:
      p: an `apache_beam.Pipeline`.
      spec: inputs, outputs and model settings.

    Returns:
      The main PCollections by name ("rows", "stats") for callers that extend
      the pipeline (TFX).
    """
    import apache_beam as beam
    import pyarrow as pa
    from apache_beam.utils import shared

    out = spec.output_dir.rstrip("/")
    run_dir = f"{out}/.run-{spec.run_id}"
    tokenize_fn, embed_fn = _make_dofns(spec, shared.Shared())

    items = p | "ReadItems" >> beam.io.ReadFromParquet(spec.items_path)
    prompts = items | "Render" >> beam.FlatMap(_render_fn, spec.template, spec.model_id)
    if spec.cache_files:
        cached = (
            p
            | "CacheFiles" >> beam.Create([f"{out}/{f}" for f in spec.cache_files])
            | "ReadCache" >> beam.io.ReadAllFromParquet()
            | "KeyCache" >> beam.Map(lambda r: (r["text_hash"], r["raw"]))
        )
    else:
        cached = p | "NoCache" >> beam.Create([])
    split = (
        {"items": prompts, "cached": cached}
        | "JoinCache" >> beam.CoGroupByKey()
        | "SplitHits" >> beam.FlatMap(_SplitHits.process).with_outputs("miss", main="hit")
    )
    embedded = (
        split.miss
        | "BatchTexts" >> beam.BatchElements(min_batch_size=16, max_batch_size=512)
        | "Tokenize" >> beam.ParDo(tokenize_fn)
        | "GroupByLength" >> beam.GroupByKey()
        | "Batch" >> beam.FlatMap(_chunk, spec.batch_size)
        | "Embed" >> beam.ParDo(embed_fn)
    )
    rows = (split.hit, embedded) | "AllRaw" >> beam.Flatten()  # (item_id, hash, raw)

    need_outer = spec.postprocess == "whiten"
    moments = rows | "RawVectors" >> beam.Map(lambda r: r[2]) | "FitMoments" >> beam.CombineGlobally(
        _moments_combine(need_outer))

    def fit(acc):
        d = len(acc[1]) if acc[1] is not None else 0
        return postprocess.fit_from_moments(spec.postprocess, acc[0], acc[1] if d else np.zeros(1), acc[2],
                                            spec.whiten_dim)

    if spec.transform_file:
        # Keep the published transform: vectors of unchanged items stay bit-identical
        # and new items get exactly the transform the model was trained with.
        transform = p | "TransformPath" >> beam.Create([spec.transform_file]) | "LoadTransform" >> beam.Map(
            _load_transform)
    else:
        transform = moments | "FitTransform" >> beam.Map(fit)

    def apply(batch, tr):
        vecs = tr.apply(np.stack([r[2] for r in batch]))
        for (item_id, h, _), v in zip(batch, vecs):
            yield {"item_id": item_id, "embedding": v.tolist(), "text_hash": h, "model_id": spec.model_id}

    final = (
        rows
        | "BatchForTransform" >> beam.BatchElements(min_batch_size=64, max_batch_size=4096)
        | "ApplyTransform" >> beam.FlatMap(apply, beam.pvalue.AsSingleton(transform))
    )

    _ = final | "WriteParquet" >> beam.io.WriteToParquet(
        f"{out}/embeddings-{spec.run_id}", pa.schema(store.EMBEDDINGS_SCHEMA), num_shards=spec.num_shards,
        file_name_suffix=".parquet")
    _ = (
        final
        | "ToExample" >> beam.Map(_to_example)
        | "WriteTFRecord" >> beam.io.WriteToTFRecord(f"{out}/embeddings-{spec.run_id}",
                                                      num_shards=spec.num_shards, file_name_suffix=".tfrecord")
    )
    _ = (
        rows
        | "CacheKey" >> beam.Map(lambda r: (r[1], r[2]))
        | "OnePerHash" >> beam.CombinePerKey(lambda vs: next(iter(vs)))
        | "CacheRow" >> beam.Map(lambda kv: {"text_hash": kv[0], "raw": np.asarray(kv[1], np.float32).tolist()})
        | "WriteCache" >> beam.io.WriteToParquet(f"{out}/cache-{spec.run_id}", pa.schema(store.CACHE_SCHEMA),
                                                 num_shards=spec.num_shards, file_name_suffix=".parquet")
    )
    post_moments = (
        final
        | "PostVectors" >> beam.Map(lambda r: r["embedding"])
        | "PostMoments" >> beam.CombineGlobally(_moments_combine(False))
    )
    checksum = (
        final
        | "RowDigest" >> beam.Map(lambda r: store.row_digest(r["item_id"], np.asarray(r["embedding"], np.float32)))
        | "SumDigests" >> beam.CombineGlobally(sum)
        | "Checksum" >> beam.Map(lambda total: store.combine_digests([total]))
    )

    def write_stats(tr, raw_acc, post_acc, digest):
        from apache_beam.io.filesystems import FileSystems

        stats = {
            "count": int(raw_acc[0]),
            "input_dim": int(len(tr.mean)),
            "dim": tr.output_dim,
            "isotropy_raw_mean_pairwise_cosine": _isotropy(raw_acc),
            "isotropy_mean_pairwise_cosine": _isotropy(post_acc),
            "checksum": digest,
        }
        with FileSystems.create(f"{run_dir}/stats.json") as f:
            f.write(json.dumps(stats).encode("utf-8"))
        with FileSystems.create(f"{run_dir}/{store.TRANSFORM}") as f:
            import io

            buf = io.BytesIO()
            np.savez(buf, method=np.array(tr.method), mean=tr.mean, matrix=tr.matrix)
            f.write(buf.getvalue())
        return stats

    stats = transform | "WriteStats" >> beam.Map(
        write_stats, beam.pvalue.AsSingleton(moments), beam.pvalue.AsSingleton(post_moments),
        beam.pvalue.AsSingleton(checksum))
    return {"rows": final, "stats": stats}


def _load_transform(path: str) -> postprocess.Transform:
    import io

    from apache_beam.io.filesystems import FileSystems

    with FileSystems.open(path) as f:
        z = np.load(io.BytesIO(f.read()))
        return postprocess.Transform(method=str(z["method"]), mean=z["mean"], matrix=z["matrix"])


def _to_example(r: dict[str, Any]) -> bytes:
    import tensorflow as tf

    f = tf.train.Feature
    ex = tf.train.Example(features=tf.train.Features(feature={
        "item_id": f(bytes_list=tf.train.BytesList(value=[r["item_id"].encode()])),
        "embedding": f(float_list=tf.train.FloatList(value=r["embedding"])),
        "text_hash": f(bytes_list=tf.train.BytesList(value=[r["text_hash"].encode()])),
        "model_id": f(bytes_list=tf.train.BytesList(value=[r["model_id"].encode()])),
    }))
    return ex.SerializeToString()


# --------------------------------------------------------------------------- driver


@dataclass
class EmbedResult:
    """What one `run_embedding_job` call did."""

    manifest: dict[str, Any]
    ran_pipeline: bool
    counters: dict[str, int]
    seconds: float


def model_identity(model: str, pooling: str, max_tokens: int) -> str:
    """The model id recorded with each embedding and used in cache keys."""
    return f"{model}|pooling={pooling}|max_tokens={max_tokens}"


def _item_hashes(items_path: str, template: str, model_id: str) -> tuple[list[str], list[str]]:
    import pandas as pd

    df = pd.read_parquet(items_path)
    ids, hashes = [], []
    fields = template_fields(template)
    for row in df[["item_id", "title", *[f for f in fields if f != "title"]]].to_dict("records"):
        text = item_text(template, row)[0]
        ids.append(str(row["item_id"]))
        hashes.append(store.text_hash(model_id, template, text))
    return ids, hashes


def _check_model(model: str) -> None:
    from learn_tf.embeddings.text_embedder import EmbedderLoadError

    if "://" in model:
        return
    from learn_tf.pretrained.presets import resolve_preset

    try:
        folder = resolve_preset(model)
    except Exception as e:
        raise EmbedderLoadError(f"embedding.model {model!r}: {e}") from e
    if "://" in folder:
        return
    if not os.path.isdir(folder) or not any(
        os.path.exists(os.path.join(folder, f)) for f in ("config.json", "metadata.json")
    ):
        raise EmbedderLoadError(
            f"embedding.model {model!r}: {folder} is not a keras-hub preset folder "
            "(no config.json or metadata.json); give a registered name (smollm2-135m, minilm-l6), "
            "a preset folder or a keras-hub handle"
        )


def run_embedding_job(
    items_path: str,
    output_dir: str,
    model: str,
    template: str,
    pooling: str = "mean",
    max_tokens: int = 128,
    batch_size: int = 32,
    postprocess_method: str = "center",
    whiten_dim: Optional[int] = None,
    num_shards: int = 2,
    beam_args: Sequence[str] = ("--runner=FnApiRunner", "--direct_running_mode=in_memory",
                               "--direct_num_workers=1"),
    force: bool = False,
    refit: bool = False,
) -> EmbedResult:
    """Embeds the catalogue incrementally and publishes the result atomically.

    Does nothing (no pipeline, no forward pass) when the published embeddings
    already match the catalogue and settings. Otherwise reuses every cached
    vector whose key (model, template, rendered text) is unchanged, embeds the
    rest and commits a new manifest; files of earlier or crashed runs are
    removed afterwards. Post-processing is fitted on the catalogue the first
    time (or with `refit`/`force`, or when settings change) and otherwise
    reused, so items embedded later get the identical transform.

    Raises:
      EmbedderLoadError: the model cannot be found or loaded.
      ValueError: the published count differs from the catalogue.
    """
    import apache_beam as beam
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.options.pipeline_options import PipelineOptions

    t0 = time.time()
    template = resolve_template(template)
    template_fields(template)
    model_id = model_identity(model, pooling, max_tokens)
    settings = {"model_id": model_id, "template": template, "postprocess": postprocess_method,
                "whiten_dim": whiten_dim}
    ids, hashes = _item_hashes(items_path, template, model_id)
    import hashlib

    digest = hashlib.sha256("".join(f"{i}\t{h}\n" for i, h in sorted(zip(ids, hashes))).encode()).hexdigest()
    os.makedirs(output_dir, exist_ok=True)
    manifest = store.read_manifest(output_dir)
    if (not force and manifest and manifest.get("settings") == settings
            and manifest.get("items_digest") == digest and _files_present(output_dir, manifest)):
        print(f"[learn embed] {output_dir} is up to date ({manifest['count']:,} items); nothing to embed")
        return EmbedResult(manifest, False, {"forward_passes": 0}, time.time() - t0)

    _check_model(model)
    have = store.cached_hashes(output_dir, manifest) if not force else set()
    to_embed = len({h for h in hashes if h not in have})
    print(f"[learn embed] {len(ids):,} items: {len(ids) - sum(h in have for h in hashes):,} to embed "
          f"({to_embed:,} distinct texts), the rest reused from the cache")
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    spec = EmbedSpec(
        items_path=items_path, output_dir=os.path.abspath(output_dir), run_id=run_id, model=model,
        model_id=model_id, template=template, pooling=pooling, max_tokens=max_tokens, batch_size=batch_size,
        postprocess=postprocess_method, whiten_dim=whiten_dim, num_shards=num_shards,
        cache_files=tuple(manifest["files"].get("cache", [])) if manifest and have else (),
        transform_file=(os.path.abspath(os.path.join(output_dir, manifest["transform_file"]))
                        if manifest and have and not refit and manifest.get("settings") == settings else None),
        expected_to_embed=len(ids) - sum(h in have for h in hashes),
    )
    p = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    build_embedding_pipeline(p, spec)
    result = p.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: int(c.committed if c.committed is not None else c.attempted)
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    }
    counters.setdefault("forward_passes", 0)
    new_manifest = _publish(output_dir, spec, settings, digest, counters, model, pooling, max_tokens, len(ids))
    dt = time.time() - t0
    print(f"[learn embed] published {new_manifest['count']:,} embeddings (dim {new_manifest['dim']}) in {dt:.1f} s; "
          f"forward passes {counters['forward_passes']:,}; isotropy (mean pairwise cosine) "
          f"{new_manifest['isotropy']['raw_mean_pairwise_cosine']:.3f} raw -> "
          f"{new_manifest['isotropy']['mean_pairwise_cosine']:.3f} after {postprocess_method}")
    return EmbedResult(new_manifest, True, counters, dt)


def _files_present(directory: str, manifest: dict[str, Any]) -> bool:
    files = [f for group in manifest["files"].values() for f in group] + [manifest["transform_file"]]
    return all(os.path.exists(os.path.join(directory, f)) for f in files)


def _publish(output_dir: str, spec: EmbedSpec, settings: dict[str, Any], digest: str, counters: dict[str, int],
             model: str, pooling: str, max_tokens: int, n_items: int) -> dict[str, Any]:
    import glob
    import shutil

    from learn_tf.utils.io import write_json

    run_dir = os.path.join(output_dir, f".run-{spec.run_id}")
    with open(os.path.join(run_dir, "stats.json"), encoding="utf-8") as f:
        stats = json.load(f)
    if stats["count"] != n_items:
        raise ValueError(f"embedded {stats['count']} items but the catalogue has {n_items}; nothing published")
    transform_file = f"transform-{spec.run_id}.npz"
    os.replace(os.path.join(run_dir, store.TRANSFORM), os.path.join(output_dir, transform_file))
    fitted = spec.transform_file is None

    def listed(pattern: str) -> list[str]:
        return sorted(os.path.basename(f) for f in glob.glob(os.path.join(output_dir, pattern)))

    manifest = {
        "run_id": spec.run_id,
        "model": model,
        "model_id": spec.model_id,
        "pooling": pooling,
        "max_tokens": max_tokens,
        "template": spec.template,
        "postprocess": spec.postprocess,
        "whiten_dim": spec.whiten_dim,
        "settings": settings,
        "items_digest": digest,
        "count": stats["count"],
        "input_dim": stats["input_dim"],
        "dim": stats["dim"],
        "checksum": stats["checksum"],
        "isotropy": {"raw_mean_pairwise_cosine": stats["isotropy_raw_mean_pairwise_cosine"],
                     "mean_pairwise_cosine": stats["isotropy_mean_pairwise_cosine"]},
        "counters": dict(sorted(counters.items())),
        "transform_file": transform_file,
        "transform_fitted_this_run": fitted,
        "files": {
            "parquet": listed(f"embeddings-{spec.run_id}-*.parquet"),
            "tfrecord": listed(f"embeddings-{spec.run_id}-*.tfrecord"),
            "cache": listed(f"cache-{spec.run_id}-*.parquet"),
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_json(os.path.join(output_dir, store.MANIFEST), manifest)  # the commit point
    keep = {store.MANIFEST, transform_file, *[f for g in manifest["files"].values() for f in g]}
    for name in os.listdir(output_dir):
        path = os.path.join(output_dir, name)
        stale = name.startswith(("embeddings-", "cache-", "transform-", ".run-", "beam-temp-")) and name not in keep
        if stale:
            shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.remove(path)
    return manifest


def run_embedding_job_from_config(embedding: Any, items_path: str, output_dir: str,
                                  extra_beam_args: Sequence[str] = (), force: bool = False,
                                  refit: bool = False) -> EmbedResult:
    """`run_embedding_job` with the settings of a config's `embedding` section (an `EmbeddingConfig`)."""
    e = embedding
    return run_embedding_job(
        items_path, output_dir, model=e.model, template=e.template, pooling=e.pooling, max_tokens=e.max_tokens,
        batch_size=e.batch_size, postprocess_method=e.postprocess, whiten_dim=e.whiten_dim,
        num_shards=e.num_shards, beam_args=list(e.beam_args) + list(extra_beam_args), force=force, refit=refit)
