"""The embedding job's entry points (LEARN's Content Embedding Generation).

`run_embedding_job(...)` decides whether anything needs doing, builds the
graph (`beam.graph.build_embedding_pipeline`, whose steps are in
`beam.transforms`), runs it and publishes the result (`beam.publish`, over the
files of `learn_tf.embeddings.store`). `EmbedSpec` and `item_text` are
re-exported here for callers that import them from this module.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from beam.graph import build_embedding_pipeline
from beam.publish import publish
from beam.spec import EmbedSpec
from beam.transforms import NAMESPACE
from learn_tf.embeddings import store
from learn_tf.embeddings.templates import item_text, resolve_template, template_fields, text_columns
from learn_tf.embeddings.text_embedder import EmbedderLoadError
from learn_tf.pretrained.presets import resolve_preset

__all__ = ["EmbedResult", "EmbedSpec", "item_text", "model_identity", "run_embedding_job",
           "run_embedding_job_from_config"]


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
    df = store.read_parquet(items_path).to_pandas()
    ids, hashes = [], []
    for row in df[text_columns(template)].to_dict("records"):
        text = item_text(template, row)[0]
        ids.append(str(row["item_id"]))
        hashes.append(store.text_hash(model_id, template, text))
    return ids, hashes


def _check_model(model: str) -> None:
    if "://" in model:
        return
    try:
        folder = resolve_preset(model)
    except Exception as e:
        raise EmbedderLoadError(f"embedding.model {model!r}: {e}") from e
    if "://" in folder:
        return
    # The model is a keras-hub preset folder on the local disk (or baked into the worker image), not an artifact.
    if not os.path.isdir(folder) or not any(
        os.path.exists(os.path.join(folder, f)) for f in ("config.json", "metadata.json")
    ):
        raise EmbedderLoadError(
            f"embedding.model {model!r}: {folder} is not a keras-hub preset folder "
            "(no config.json or metadata.json); give a registered name (smollm2-135m, minilm-l6), "
            "a preset folder or a keras-hub handle"
        )


def _absolute(path: str) -> str:
    """A local path made absolute (workers may run elsewhere); an object-store URL as it is."""
    return path if "://" in path else os.path.abspath(path)


def _counters(result: Any) -> dict[str, int]:
    counters = {
        c.key.metric.name: int(c.committed if c.committed is not None else c.attempted)
        for c in result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    }
    for name in ("forward_passes", "backbone_calls", "padded_tokens", "tokens"):
        counters.setdefault(name, 0)
    return counters


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
    fast_tokenizer: bool = True,
    jit_compile: bool = False,
) -> EmbedResult:
    """Embeds the catalogue incrementally and publishes the result atomically.

    Does nothing (no pipeline, no forward pass) when the published embeddings
    already match the catalogue and settings. Otherwise reuses every cached
    vector whose key (model, template, rendered text) is unchanged, embeds the
    rest and commits a new manifest; files of earlier or crashed runs are
    removed afterwards. Post-processing is fitted on the catalogue the first
    time (or with `refit`/`force`, or when settings change) and otherwise
    reused, so items embedded later get the identical transform.

    Texts to embed are batched by length (`learn_tf.embeddings.batching`):
    n texts take ceil(n / batch_size) forward passes. `fast_tokenizer` and
    `jit_compile` are `TextEmbedder`'s; neither changes the cache key (ids are
    identical, vectors equal within float tolerance).

    Raises:
      EmbedderLoadError: the model cannot be found or loaded.
      ValueError: the published count differs from the catalogue.
    """
    t0 = time.time()
    template = resolve_template(template)
    template_fields(template)
    model_id = model_identity(model, pooling, max_tokens)
    settings = {"model_id": model_id, "template": template, "postprocess": postprocess_method,
                "whiten_dim": whiten_dim}
    ids, hashes = _item_hashes(items_path, template, model_id)
    digest = hashlib.sha256("".join(f"{i}\t{h}\n" for i, h in sorted(zip(ids, hashes))).encode()).hexdigest()
    store.makedirs(output_dir)
    manifest = store.read_manifest(output_dir)
    if (not force and manifest and manifest.get("settings") == settings
            and manifest.get("items_digest") == digest and store.files_present(output_dir, manifest)):
        print(f"[learn embed] {output_dir} is up to date ({manifest['count']:,} items); nothing to embed")
        return EmbedResult(manifest, False, {"forward_passes": 0}, time.time() - t0)

    _check_model(model)
    have = store.cached_hashes(output_dir, manifest) if not force else set()
    to_embed = len({h for h in hashes if h not in have})
    print(f"[learn embed] {len(ids):,} items: {len(ids) - sum(h in have for h in hashes):,} to embed "
          f"({to_embed:,} distinct texts), the rest reused from the cache")
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    spec = EmbedSpec(
        items_path=items_path, output_dir=_absolute(output_dir), run_id=run_id, model=model,
        model_id=model_id, template=template, pooling=pooling, max_tokens=max_tokens, batch_size=batch_size,
        postprocess=postprocess_method, whiten_dim=whiten_dim, num_shards=num_shards,
        cache_files=tuple(manifest["files"].get("cache", [])) if manifest and have else (),
        transform_file=(_absolute(os.path.join(output_dir, manifest["transform_file"]))
                        if manifest and have and not refit and manifest.get("settings") == settings else None),
        expected_to_embed=len(ids) - sum(h in have for h in hashes),
        fast_tokenizer=fast_tokenizer, jit_compile=jit_compile,
    )
    p = beam.Pipeline(options=PipelineOptions(list(beam_args)))
    build_embedding_pipeline(p, spec)
    result = p.run()
    result.wait_until_finish()
    counters = _counters(result)
    new_manifest = publish(output_dir, spec, settings, digest, counters, model, pooling, max_tokens, len(ids))
    dt = time.time() - t0
    print(f"[learn embed] published {new_manifest['count']:,} embeddings (dim {new_manifest['dim']}) in {dt:.1f} s; "
          f"forward passes {counters['forward_passes']:,}; isotropy (mean pairwise cosine) "
          f"{new_manifest['isotropy']['raw_mean_pairwise_cosine']:.3f} raw -> "
          f"{new_manifest['isotropy']['mean_pairwise_cosine']:.3f} after {postprocess_method}")
    return EmbedResult(new_manifest, True, counters, dt)


def run_embedding_job_from_config(embedding: Any, items_path: str, output_dir: str,
                                  extra_beam_args: Sequence[str] = (), force: bool = False,
                                  refit: bool = False) -> EmbedResult:
    """`run_embedding_job` with the settings of a config's `embedding` section (an `EmbeddingConfig`)."""
    e = embedding
    return run_embedding_job(
        items_path, output_dir, model=e.model, template=e.template, pooling=e.pooling, max_tokens=e.max_tokens,
        batch_size=e.batch_size, postprocess_method=e.postprocess, whiten_dim=e.whiten_dim,
        num_shards=e.num_shards, beam_args=list(e.beam_args) + list(extra_beam_args), force=force, refit=refit,
        fast_tokenizer=e.fast_tokenizer, jit_compile=e.jit_compile)
