"""Typed, frozen configuration loaded from the YAML files in `configs/`.

Every section is a frozen dataclass. The loader rejects unknown keys, missing
required keys and values of the wrong type with an error that names the key
and the file. Only the app (`learn_app`) and the pipeline read whole configs;
library code receives sections or plain values as arguments.

Size (~430 lines): the whole schema, its loader and its cross-key checks stay in
one file so that every key a user may write is found in one place.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import yaml

from learn_tf.embeddings.templates import TemplateError, resolve_template, template_fields
from learn_tf.layout import RunLayout

SOURCES = ("movielens100k", "amazon", "csv", "parquet", "synthetic")


class ConfigError(ValueError):
    """A configuration file is unreadable or does not match the schema."""


@dataclass(frozen=True)
class InteractionColumns:
    """Source column names for the canonical interaction fields (generic sources)."""

    user_id: str
    item_id: str
    timestamp: str
    rating: Optional[str] = None


@dataclass(frozen=True)
class ItemColumns:
    """Source column names for the canonical item fields (generic sources)."""

    item_id: str
    title: Optional[str] = None
    year: Optional[str] = None
    genres: Optional[str] = None
    brand: Optional[str] = None
    category: Optional[str] = None
    description: Optional[str] = None
    price: Optional[str] = None


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and shape of a generated catalogue (scale tests, never quality claims)."""

    num_items: int = 1000
    num_users: int = 200
    num_topics: int = 20
    mean_sequence_length: float = 20.0
    min_sequence_length: int = 3
    topic_concentration: float = 0.3
    seed: int = 0


@dataclass(frozen=True)
class DataConfig:
    """Where the raw data is and how ingestion treats bad rows."""

    source: Literal["movielens100k", "amazon", "csv", "parquet", "synthetic"]
    # Amazon Reviews 2018: reviews and metadata JSON lines (plain or .gz).
    reviews_path: Optional[str] = None
    meta_path: Optional[str] = None
    # Generic CSV / Parquet.
    interactions_path: Optional[str] = None
    items_path: Optional[str] = None
    interaction_columns: Optional[InteractionColumns] = None
    item_columns: Optional[ItemColumns] = None
    csv_delimiter: str = ","
    # "unix" (seconds), "unix_ms", "iso", or a strftime format such as "%Y-%m-%d".
    timestamp_format: str = "unix"
    synthetic: Optional[SyntheticConfig] = None
    # Items in the catalogue that nobody interacted with are kept by default;
    # set false to drop them (they are then counted as rejected, never silent).
    keep_items_without_interactions: bool = True
    # Ingestion fails (after writing its report) when more than this fraction
    # of interaction rows is rejected.
    max_rejected_fraction: float = 0.2
    # How many example rows the report shows per rejection reason.
    max_reject_examples: int = 5


@dataclass(frozen=True)
class SplitConfig:
    """Leave-one-out split, cold-item holdout and evaluation segments."""

    history_max_len: int = 50
    cold_item_fraction: float = 0.1
    seed: int = 2024
    # Head items: the most popular items covering this fraction of the warm
    # catalogue by training count; the rest are the long tail.
    head_item_fraction: float = 0.2
    short_history_max: int = 5
    # Users with fewer interactions give no evaluation cases (train only).
    min_user_interactions: int = 3


@dataclass(frozen=True)
class EmbeddingConfig:
    """Frozen-LLM content embeddings (the Beam job)."""

    # An embedded preset name (smollm2-135m, gemma3-270m, minilm-l6), a local
    # keras-hub preset folder, or a keras-hub handle such as "hf://org/model".
    model: str = "smollm2-135m"
    # A template name (movielens, learn_amazon, learn_industrial) or a literal
    # template with {field} placeholders over the canonical item fields.
    template: str = "movielens"
    pooling: Literal["mean", "last"] = "mean"
    max_tokens: int = 128
    batch_size: int = 32
    # Post-processing fitted on the catalogue (see learn_tf/embeddings/postprocess.py).
    postprocess: Literal["none", "center", "whiten"] = "center"
    whiten_dim: Optional[int] = None
    num_shards: int = 2
    # Tokenize with Hugging Face `tokenizers` (keras-hub's ids, no ~10 s trace per worker) where supported.
    fast_tokenizer: bool = True
    # XLA-compile the backbone forward (one compile per padded shape); benchmarks/embed_bench.py measures it.
    jit_compile: bool = False
    # Beam pipeline options for local runs. Beam >= 2.68's DirectRunner would
    # otherwise try to download the Prism runner (see docs/dataflow.md).
    beam_args: tuple[str, ...] = ("--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1")


@dataclass(frozen=True)
class ModelConfig:
    """The LEARN towers (and the SASRec baseline, which shares the transformer settings)."""

    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 2
    ff_dim: int = 256
    out_dim: int = 64
    dropout: float = 0.2
    # Item tower: "a" shared weights + causal attention over targets (paper default),
    # "b" shared weights + self-only attention, "c" raw content embedding (no alignment),
    # "e" the adapted input embedding, tied with the user tower's input (SASRec style; out_dim = d_model).
    item_tower: Literal["a", "b", "c", "e"] = "a"
    # "content" (the paper) or "hybrid" (content + learned ID embedding with ID dropout;
    # items never seen in training keep a zero ID vector and fall back to content).
    item_inputs: Literal["content", "hybrid"] = "content"
    id_dropout: float = 0.5
    # Hybrid towers: a dropped (training) or untrained ID vector is "zero", or "content": predicted
    # from the item's content by a linear map trained on the dropped positions (DropoutNet-style).
    id_fallback: Literal["zero", "content"] = "zero"
    # The official LEARN code adds no position embeddings; SASRec uses them.
    use_positions: bool = False
    sasrec_use_positions: bool = True
    input_norm: bool = True
    # Scores: "cosine" (unit-norm vectors times the logit scale; official LEARN) or "dot"
    # (raw dot products, as standard SASRec). SASRec has its own setting.
    similarity: Literal["cosine", "dot"] = "cosine"
    sasrec_similarity: Literal["cosine", "dot"] = "dot"
    # SASRec's dropout (the standard recipe: 0.5); None: `dropout`.
    sasrec_dropout: Optional[float] = None
    # Weights drawn from N(0, initializer_range) (BERT / SASRec); None: Keras defaults.
    initializer_range: Optional[float] = 0.02


@dataclass(frozen=True)
class TrainConfig:
    """Sampling, loss and optimisation (the trainer and sampler read this directly)."""

    # "next_item" (default): each user's training sequence tiled into windows of <= max_len from the
    # end, every position predicts the next item, every training transition once per epoch.
    # "dense" all-action cuts (LEARN's pretraining form), "window" (each sampled position's positives
    # are the items that follow it) or the "official" one-cut-per-user scheme.
    sampling: Literal["next_item", "dense", "window", "official"] = "next_item"
    max_len: int = 50
    num_targets: int = 10
    num_query_positions: int = 10
    samples_per_user: int = 4
    recency_weighted: bool = False
    recency_alpha: float = 10.0
    recency_beta: float = 10000.0
    # Negatives of the next_item objective: "full" softmax over the catalogue (item tower recomputed
    # every step), "sampled" (in-batch + shared sampled negatives, logQ-corrected), "in_batch"
    # (the batch's positives only, logQ-corrected) or "auto": full when the catalogue has at most
    # `full_softmax_max_items` items, else sampled. The dense/window/official samplings always use
    # in-batch negatives (the dense all-action task).
    negatives: Literal["auto", "full", "sampled", "in_batch"] = "auto"
    full_softmax_max_items: int = 50000
    # Items per log-sum-exp chunk of the full softmax (memory: rows x chunk logits at a time).
    full_softmax_chunk: int = 8192
    num_sampled_negatives: int = 1024
    sampled_distribution: Literal["uniform", "unigram"] = "uniform"
    # Cosine towers' inverse temperature; dot-product towers use 1. Learnable: starts here.
    logit_scale: float = 20.0
    learnable_logit_scale: bool = False
    # Subtract log item frequency from in-batch scores (Yi et al. 2019); without it
    # in-batch negatives push popular items down.
    logq_correction: bool = True
    batch_size: int = 128
    epochs: int = 40
    optimizer: Literal["adam", "adamw"] = "adam"
    learning_rate: float = 1e-3
    # "constant" (standard SASRec) or "cosine" (warmup then cosine decay over `epochs`).
    schedule: Literal["constant", "cosine"] = "constant"
    weight_decay: float = 0.0
    warmup_fraction: float = 0.0
    # Gradient clipping by global norm (None: off).
    clipnorm: Optional[float] = None
    # Content-neighbour targets (LEARN, full negatives): this share of each next-item target's mass
    # goes to the target's `content_target_neighbours` nearest trained items by content cosine,
    # weighted by softmax(cosine / `content_target_temperature`) (the LLM's item similarity as a
    # soft label); 0: off (one-hot targets).
    content_target_share: float = 0.0
    content_target_neighbours: int = 10
    content_target_temperature: float = 0.1
    # Exponential moving average of the weights (Polyak averaging) with this decay per step, 0: off.
    # Validation, the best checkpoint and the returned towers use the averaged weights; training
    # continues from the raw ones. Applies to the (last) next-item stage.
    ema_decay: float = 0.0
    # Two-stage LEARN: this many epochs of in-batch dense all-action pretraining (the
    # official code's first stage) before the next-item objective (0: off).
    pretrain_epochs: int = 0
    # Hybrid towers' ID dropout during the pretraining stage (null: the model's `id_dropout`); 1.0
    # pretrains on content alone, so the adaptor and encoder learn from the LLM vectors before the
    # ID vectors are trained (in the next-item stage).
    pretrain_id_dropout: Optional[float] = None
    # The two-stage schedule is LEARN's: SASRec trains single-stage (its standard recipe) unless true.
    pretrain_sasrec: bool = False
    # Early stopping on validation NDCG@10 (protocol below), evaluated every `eval_every` epochs
    # (and after the last one).
    patience: int = 5
    early_stopping_protocol: Literal["masked", "unmasked"] = "masked"
    eval_every: int = 1
    # Keep the best-validation weights (true) or the last epoch's (false: a fixed-length run;
    # validation over ~1k users is noisy and peaks early while test keeps rising, see LEARN.md).
    restore_best: bool = True
    collapse_guard: bool = True
    # Hybrid towers: the ID vectors of items never seen in training (cold items, and items added
    # later with `learn add-items`). "zero": scored from content alone. "ridge": after training, a
    # ridge map content -> ID vector is fitted on the trained items and gives every untrained item
    # its ID vector (stored in the towers, so onboarded items get it too); its L2 strength is
    # `cold_ridge_l2`, or (null) the value of COLD_RIDGE_GRID with the best validation NDCG@10
    # (of the cases `cold_ridge_metric` names).
    cold_ids: Literal["zero", "ridge"] = "zero"
    cold_ridge_l2: Optional[float] = None
    # Training input: 0 (default) = the exact in-memory path (all training sequences packed, an exact
    # global shuffle of each epoch's rows). N > 0 = streamed: sequences are read from the input (the
    # SequenceExample shards, shards in a fresh order each epoch) through a shuffle buffer of N
    # sequences and their rows through one of N rows, so memory stays flat as interactions grow; each
    # sequence gives the same rows per epoch as in memory, in a different order (different batches).
    # A buffer that would hold every sequence (N >= the number of sequences, e.g. MovieLens' 943 users
    # with N = 10000) is the exact path: the same batches as 0, within the same memory bound.
    stream_shuffle_buffer: int = 0
    # What the ridge strength is chosen on: validation NDCG@10 over "overall" cases, or over the
    # "cold_item" cases (targets never trained; every case when there are none): the operating point
    # for cold items, at a cost to warm ones (docs/results.md). "balanced": the best overall NDCG@10
    # among the strengths whose cold-item NDCG@10 is at least `cold_ridge_floor` x the best one.
    cold_ridge_metric: Literal["overall", "cold_item", "balanced"] = "overall"
    cold_ridge_floor: float = 0.5
    seed: int = 2024


@dataclass(frozen=True)
class ServingConfig:
    """SavedModel exports, the TF Serving model base and the local gRPC server (`learn serve`)."""

    # TF Serving model base (`<base>/<model>/<version>/`); default <output_dir>/serving.
    model_base: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8500
    # Largest k a retrieval request may ask for.
    max_k: int = 200
    # Retrieval index of the `learn_retrieval` model; a brute-force twin
    # (`learn_retrieval_bf`) is always exported for the stock TF Serving binary.
    index: Literal["scann", "brute_force"] = "scann"
    # ScaNN: leaves default to ~sqrt(N); leaves searched are tuned on the catalogue
    # to reach `scann_recall_target` recall@10 against exact search.
    scann_num_leaves: Optional[int] = None
    scann_leaves_to_search: Optional[int] = None
    scann_recall_target: float = 0.95
    # gRPC front end of `learn serve`: aio (grpc.aio, the RPCs as coroutines on one event loop) or sync
    # (grpc.server, one pool thread per RPC); aio's loop: auto = uvloop when installed, else asyncio.
    grpc_frontend: Literal["aio", "sync"] = "aio"
    grpc_event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    # Nice value (0-19, Linux) of the server's threads that run models, so its event loops win the CPU
    # from them (serving.priority); null: 10 with batching, 0 without; 0: all threads alike.
    compute_nice: Optional[int] = None
    # Server limits.
    max_message_bytes: int = 4 * 1024 * 1024
    num_threads: int = 16
    poll_seconds: float = 2.0
    # Warmup requests written with each export (assets.extra/tf_serving_warmup_requests).
    warmup_requests: int = 8
    # REST API port of `learn serve`: null = gRPC port + 1 (8501; a free port when port is 0), -1 = no REST.
    rest_port: Optional[int] = None
    # Server-side request batching (`learn serve`; `--enable-batching` / `--no-enable-batching` override).
    # Parameters come from `batching_parameters_file` (default <model_base>/batching_parameters.txt when it
    # exists, else TF Serving's defaults); each of the four keys below, when set, overrides the file's value.
    enable_batching: bool = False
    batching_parameters_file: Optional[str] = None
    max_batch_size: Optional[int] = None
    batch_timeout_micros: Optional[int] = None
    num_batch_threads: Optional[int] = None
    max_enqueued_batches: Optional[int] = None


@dataclass(frozen=True)
class PipelineConfig:
    """The TFX pipeline (local LocalDagRunner by default; Vertex AI + Dataflow by runner)."""

    # Pipeline root and ML Metadata sqlite file; default <output_dir>/tfx and <output_dir>/tfx/metadata.db.
    pipeline_root: Optional[str] = None
    metadata_path: Optional[str] = None
    # Beam options for the pipeline's Beam-based components (local default avoids Prism).
    beam_args: tuple[str, ...] = ("--direct_running_mode=in_memory", "--direct_num_workers=1")
    # Curated schema imported with ImportSchemaGen when the file exists (relative to the repo/config).
    schema_path: Optional[str] = None
    # The run stops before training when more interactions than this reference unknown items.
    max_unknown_item_fraction: float = 0.01
    # Blessing: the model must reach this test NDCG@10 (masked) and, when set, beat content-kNN.
    min_ndcg_at_10: float = 0.0
    must_beat_content_knn: bool = False
    # Which model kind the pipeline trains and pushes ("cllm4rec": the `cllm4rec` section's model,
    # trained as `learn train --model cllm4rec` does, exported with serving/cllm4rec_export.py).
    model_kind: Literal["learn", "learn_c", "sasrec", "cllm4rec"] = "learn"
    # Vertex AI Pipelines + Dataflow (kubeflow_v2_runner); compiled, never submitted by tests.
    gcp_project: Optional[str] = None
    gcp_region: str = "us-central1"
    gcs_root: Optional[str] = None
    dataflow_machine_type: str = "n1-standard-8"
    dataflow_max_workers: int = 8


@dataclass(frozen=True)
class CLLM4RecConfig:
    """CLLM4Rec (Zhu et al., WWW 2024): user/item ID tokens in a frozen causal LM (learn_tf/cllm4rec).

    Defaults are the official schedule (10 content warm-up + 100 alternating
    pre-training epochs, 150 fine-tuning epochs); configs shorten it.
    """

    # Any keras-hub causal LM preset: an embedded name, a local folder or a keras-hub handle.
    model: str = "smollm2-135m"
    # Hard prompts, each following an ID token ("user_u has interacted with ...").
    collaborative_prompt: str = " has interacted with"
    content_prompt: str = " is described as:"
    recommend_prompt: str = " will interact with"
    max_content_tokens: int = 64
    content_warmup_epochs: int = 10
    alternating_epochs: int = 100
    finetune_epochs: int = 150
    batch_size: int = 20
    # Length-bucketed batches hold at most this many padded tokens.
    max_batch_tokens: int = 4096
    pretrain_learning_rate: float = 1e-3
    finetune_learning_rate: float = 1e-4
    lambda_v: float = 1.0
    mask_fraction: float = 0.2
    # Fine-tuning target: the masked items (paper) or all the user's items (official code).
    finetune_target: Literal["masked", "all"] = "masked"
    # Validation users scored after each epoch for the learning curve (0 = none).
    curve_users: int = 200
    score_batch_size: int = 32
    seed: int = 2024


@dataclass(frozen=True)
class Config:
    """The whole job: one file per dataset or scale."""

    name: str
    data: DataConfig
    split: SplitConfig = field(default_factory=SplitConfig)
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    cllm4rec: CLLM4RecConfig = field(default_factory=CLLM4RecConfig)
    # Default working directory for every step; `{name}` is substituted.
    output_dir: str = "runs/{name}"

    def layout(self, output: Optional[str] = None) -> RunLayout:
        """Every path of this run (`output` replaces output_dir, as `--output` does)."""
        return RunLayout.from_config(self, output)

    def resolved_output_dir(self) -> str:
        """The output directory with `{name}` filled in."""
        return self.layout().root

    def resolved_model_base(self) -> str:
        """The TF Serving model base: `serving.model_base` or <output_dir>/serving."""
        return self.layout().model_base

    def resolved_pipeline_root(self) -> str:
        """The TFX pipeline root: `pipeline.pipeline_root` or <output_dir>/tfx."""
        return self.layout().pipeline_root

    def resolved_metadata_path(self) -> str:
        """The ML Metadata sqlite file: `pipeline.metadata_path` or <pipeline root>/metadata.db."""
        return self.layout().metadata_path


def load_config(path: str | os.PathLike[str]) -> Config:
    """Loads and validates a YAML config file into a frozen `Config`.

    Args:
      path: the YAML file.

    Returns:
      The validated config.

    Raises:
      ConfigError: the file is missing, is not YAML, or a key is unknown,
        missing or of the wrong type (the message names the key and the file).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: config file not found") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    cfg = _build(Config, raw, path, "")
    _check_semantics(cfg, path)
    return cfg


def config_from_dict(raw: dict[str, Any], origin: str = "<dict>") -> Config:
    """Builds a config from an in-memory mapping with the same validation."""
    cfg = _build(Config, raw, origin, "")
    _check_semantics(cfg, origin)
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain data (for manifests and reports)."""
    return dataclasses.asdict(cfg)


def _build(cls: type, raw: Any, path: str, prefix: str) -> Any:
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: key '{where}' must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(
            f"{path}: unknown key '{prefix}{unknown[0]}' "
            f"(allowed in {where}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = prefix + name
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{path}: missing required key '{key}'")
            continue
        kwargs[name] = _coerce(hints[name], raw[name], path, key)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(inner[0], value, path, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{path}: key '{key}' must be one of {', '.join(map(str, args))}; got {value!r}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, key + ".")
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(args[0], v, path, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: key '{key}' must be a mapping, got {value!r}")
        return {
            _coerce(args[0], k, path, key): _coerce(args[1], v, path, f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: key '{key}' has an unsupported type {tp!r}")  # pragma: no cover


def _check_semantics(cfg: Config, path: str) -> None:
    d, s = cfg.data, cfg.split
    required = {
        "amazon": ("reviews_path", "meta_path"),
        "csv": ("interactions_path", "interaction_columns"),
        "parquet": ("interactions_path", "interaction_columns"),
        "synthetic": ("synthetic",),
    }.get(d.source, ())
    for name in required:
        if getattr(d, name) is None:
            raise ConfigError(f"{path}: missing required key 'data.{name}' for source '{d.source}'")
    if d.items_path is not None and d.item_columns is None and d.source in ("csv", "parquet"):
        raise ConfigError(f"{path}: missing required key 'data.item_columns' (data.items_path is set)")
    ranges = {
        "split.cold_item_fraction": (s.cold_item_fraction, 0.0, 0.9),
        "split.head_item_fraction": (s.head_item_fraction, 0.0, 1.0),
        "data.max_rejected_fraction": (d.max_rejected_fraction, 0.0, 1.0),
    }
    for key, (v, lo, hi) in ranges.items():
        if not lo <= v <= hi:
            raise ConfigError(f"{path}: key '{key}' must be in [{lo}, {hi}], got {v}")
    e = cfg.embedding
    positives = {
        "split.history_max_len": s.history_max_len,
        "split.min_user_interactions": s.min_user_interactions,
        "embedding.max_tokens": e.max_tokens,
        "embedding.batch_size": e.batch_size,
        "embedding.num_shards": e.num_shards,
        "embedding.whiten_dim": e.whiten_dim if e.whiten_dim is not None else 1,
    }
    sv = cfg.serving
    positives.update({"serving.port": sv.port, "serving.max_k": sv.max_k, "serving.num_threads": sv.num_threads,
                      "serving.max_message_bytes": sv.max_message_bytes})
    if not 0.0 < sv.scann_recall_target <= 1.0:
        raise ConfigError(f"{path}: key 'serving.scann_recall_target' must be in (0, 1], got {sv.scann_recall_target}")
    _check_serving(sv, path)
    if not 0.0 <= cfg.pipeline.max_unknown_item_fraction <= 1.0:
        raise ConfigError(f"{path}: key 'pipeline.max_unknown_item_fraction' must be in [0, 1], "
                          f"got {cfg.pipeline.max_unknown_item_fraction}")
    for key, v in positives.items():
        if v < 1:
            raise ConfigError(f"{path}: key '{key}' must be >= 1, got {v}")
    try:
        template_fields(resolve_template(e.template))
    except TemplateError as err:
        raise ConfigError(f"{path}: key 'embedding.template': {err}") from err
    _check_model_train(cfg, path)
    if s.min_user_interactions < 3:
        raise ConfigError(
            f"{path}: key 'split.min_user_interactions' must be >= 3 "
            "(one train, one validation and one test item)"
        )


def _check_serving(sv: ServingConfig, path: str) -> None:
    """Ranges of the serving section's ports and batching keys (named by key)."""
    if sv.port > 65535:
        raise ConfigError(f"{path}: key 'serving.port' must be <= 65535, got {sv.port}")
    if sv.rest_port is not None and not -1 <= sv.rest_port <= 65535:
        raise ConfigError(f"{path}: key 'serving.rest_port' must be in [-1, 65535] (-1: no REST), got {sv.rest_port}")
    if sv.rest_port is not None and sv.rest_port > 0 and sv.rest_port == sv.port:
        raise ConfigError(f"{path}: key 'serving.rest_port' must differ from 'serving.port' ({sv.port})")
    lows = {"max_batch_size": 1, "num_batch_threads": 1, "max_enqueued_batches": 1, "batch_timeout_micros": 0}
    for name, low in lows.items():
        v = getattr(sv, name)
        if v is not None and v < low:
            raise ConfigError(f"{path}: key 'serving.{name}' must be >= {low} or null, got {v}")
    if sv.compute_nice is not None and not 0 <= sv.compute_nice <= 19:
        raise ConfigError(f"{path}: key 'serving.compute_nice' must be in [0, 19], got {sv.compute_nice}")
    if sv.batching_parameters_file is not None and not sv.batching_parameters_file.strip():
        raise ConfigError(f"{path}: key 'serving.batching_parameters_file' must be a path or null, got ''")


def _check_model_train(cfg: Config, path: str) -> None:
    """Ranges of the model and train sections (named by key)."""
    m, t = cfg.model, cfg.train
    positives = {
        "model.d_model": m.d_model, "model.num_layers": m.num_layers, "model.num_heads": m.num_heads,
        "model.ff_dim": m.ff_dim, "model.out_dim": m.out_dim, "train.max_len": t.max_len,
        "train.num_targets": t.num_targets, "train.num_query_positions": t.num_query_positions,
        "train.samples_per_user": t.samples_per_user, "train.batch_size": t.batch_size, "train.epochs": t.epochs,
        "train.patience": t.patience, "train.full_softmax_max_items": t.full_softmax_max_items,
        "train.full_softmax_chunk": t.full_softmax_chunk, "train.eval_every": t.eval_every,
    }
    for key, v in positives.items():
        if v < 1:
            raise ConfigError(f"{path}: key '{key}' must be >= 1, got {v}")
    if t.stream_shuffle_buffer < 0:
        raise ConfigError(f"{path}: key 'train.stream_shuffle_buffer' must be 0 (exact in-memory input) or a "
                          f"buffer of N > 0 sequences (streamed input), got {t.stream_shuffle_buffer}")
    if not 0.0 <= t.cold_ridge_floor <= 1.0:
        raise ConfigError(f"{path}: key 'train.cold_ridge_floor' must be in [0, 1] (a share of the best cold-item "
                          f"validation NDCG@10), got {t.cold_ridge_floor}")
    if t.cold_ridge_l2 is not None and not t.cold_ridge_l2 > 0:
        raise ConfigError(f"{path}: key 'train.cold_ridge_l2' must be > 0 or null (chosen on validation), "
                          f"got {t.cold_ridge_l2}")
    if m.id_fallback == "content" and m.item_inputs != "hybrid":
        raise ConfigError(f"{path}: key 'model.id_fallback' is 'content' but 'model.item_inputs' is "
                          f"'{m.item_inputs}': only hybrid inputs have ID vectors to predict")
    if m.d_model % m.num_heads:
        raise ConfigError(f"{path}: key 'model.d_model' ({m.d_model}) must be divisible by "
                          f"'model.num_heads' ({m.num_heads})")
    unit = {"model.dropout": m.dropout, "model.id_dropout": m.id_dropout,
            "model.sasrec_dropout": m.sasrec_dropout if m.sasrec_dropout is not None else 0.0,
            "train.warmup_fraction": t.warmup_fraction}
    for key, v in unit.items():
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{path}: key '{key}' must be in [0, 1), got {v}")
    for key, v in {"train.logit_scale": t.logit_scale, "train.learning_rate": t.learning_rate}.items():
        if v <= 0:
            raise ConfigError(f"{path}: key '{key}' must be > 0, got {v}")
    nonneg = {"train.weight_decay": t.weight_decay, "train.num_sampled_negatives": t.num_sampled_negatives,
              "train.pretrain_epochs": t.pretrain_epochs}
    for key, v in nonneg.items():
        if v < 0:
            raise ConfigError(f"{path}: key '{key}' must be >= 0, got {v}")
    if not 0.0 <= t.content_target_share < 1.0:
        raise ConfigError(f"{path}: key 'train.content_target_share' must be in [0, 1), got {t.content_target_share}")
    if t.content_target_neighbours < 1 or t.content_target_temperature <= 0:
        raise ConfigError(f"{path}: keys 'train.content_target_neighbours' (>= 1) and "
                          "'train.content_target_temperature' (> 0) out of range: "
                          f"{t.content_target_neighbours}, {t.content_target_temperature}")
    if t.pretrain_id_dropout is not None and not 0.0 <= t.pretrain_id_dropout <= 1.0:
        raise ConfigError(f"{path}: key 'train.pretrain_id_dropout' must be in [0, 1] or null, "
                          f"got {t.pretrain_id_dropout}")
    if not 0.0 <= t.ema_decay < 1.0:
        raise ConfigError(f"{path}: key 'train.ema_decay' must be in [0, 1), got {t.ema_decay}")
    if t.clipnorm is not None and t.clipnorm <= 0:
        raise ConfigError(f"{path}: key 'train.clipnorm' must be > 0 or null, got {t.clipnorm}")
    if m.initializer_range is not None and m.initializer_range <= 0:
        raise ConfigError(f"{path}: key 'model.initializer_range' must be > 0 or null, got {m.initializer_range}")
    if t.weight_decay > 0 and t.optimizer == "adam":
        raise ConfigError(f"{path}: key 'train.weight_decay' is {t.weight_decay} but 'train.optimizer' is adam "
                          "(no weight decay): set optimizer: adamw or weight_decay: 0")
