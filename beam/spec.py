"""`EmbedSpec`: the embedding job's inputs, outputs and model settings as plain values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


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
    fast_tokenizer: bool = True  # Hugging Face `tokenizers` with keras-hub's ids when supported
    jit_compile: bool = False  # XLA for the backbone forward
    cache_files: tuple[str, ...] = ()
    transform_file: Optional[str] = None  # reuse this fitted transform instead of refitting
    expected_to_embed: int = 0  # for progress / ETA only
