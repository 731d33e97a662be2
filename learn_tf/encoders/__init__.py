"""Pretrained text encoders from pip-installed weights, converted once for keras-hub."""

from learn_tf.encoders.cache import cache_dir
from learn_tf.encoders.gguf_convert import (
    GGUFConversionError,
    convert_gguf,
    gguf_paths_from_package,
)
from learn_tf.encoders.minilm_convert import convert_minilm
from learn_tf.encoders.presets import (
    EMBEDDED_PRESETS,
    EmbeddedPreset,
    PresetPackageMissingError,
    preset_kind,
    resolve_preset,
)

__all__ = [
    "EMBEDDED_PRESETS",
    "EmbeddedPreset",
    "GGUFConversionError",
    "PresetPackageMissingError",
    "cache_dir",
    "convert_gguf",
    "convert_minilm",
    "gguf_paths_from_package",
    "preset_kind",
    "resolve_preset",
]
