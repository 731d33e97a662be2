"""Pretrained LLM weights from pip-installed packages, converted once into keras-hub preset folders."""

from learn_tf.pretrained.cache import cache_dir
from learn_tf.pretrained.gguf_convert import (
    GGUFConversionError,
    convert_gguf,
    gguf_paths_from_package,
)
from learn_tf.pretrained.minilm_convert import convert_minilm
from learn_tf.pretrained.presets import (
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
