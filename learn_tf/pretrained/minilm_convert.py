"""Rename a sentence-transformers BERT checkpoint (e.g. all-MiniLM-L6-v2) for keras-hub.

keras-hub's Hugging Face BERT loader looks up the original BERT tensor names
(`bert.` prefix, `LayerNorm.gamma` / `LayerNorm.beta`); sentence-transformers
saves the bare `BertModel` names (`embeddings.LayerNorm.weight`, ...). The
converted folder holds the renamed `model.safetensors` plus copies of the
config and tokenizer files.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from learn_tf.pretrained.cache import build_folder_atomically, file_fingerprint

CONVERTER_VERSION = 1
_COPIED_FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_DROPPED_TENSORS = ("embeddings.position_ids",)  # a buffer, not a weight


def bert_tensor_name(name: str) -> str:
    """Map a `BertModel` tensor name to the `BertForPreTraining` name keras-hub reads."""
    if not name.startswith(("bert.", "cls.")):
        name = "bert." + name
    if name.endswith("LayerNorm.weight"):
        name = name[: -len("weight")] + "gamma"
    elif name.endswith("LayerNorm.bias"):
        name = name[: -len("bias")] + "beta"
    return name


def convert_minilm(src_dir: str, out_dir: str) -> str:
    """Write a keras-hub-loadable copy of the BERT folder `src_dir` to `out_dir`.

    Returns `out_dir`; does nothing when it already holds a conversion of the
    same source. Raises ValueError naming the folder when it is not a BERT
    checkpoint with `config.json`, `model.safetensors`, `vocab.txt` and
    `tokenizer_config.json`.
    """
    weights = os.path.join(src_dir, "model.safetensors")
    # keras-hub's BERT tokenizer loader reads `do_lower_case` from tokenizer_config.json.
    for required in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"):
        if not os.path.isfile(os.path.join(src_dir, required)):
            raise ValueError(f"{src_dir} is not a BERT checkpoint folder: {required} is missing")
    with open(os.path.join(src_dir, "config.json"), encoding="utf-8") as f:
        model_type = json.load(f).get("model_type")
    if model_type != "bert":
        raise ValueError(f"{src_dir}/config.json: model_type is {model_type!r}, expected 'bert'")
    marker = {
        "converter": "learn_tf.pretrained.minilm_convert",
        "converter_version": CONVERTER_VERSION,
        "source": file_fingerprint(weights),
    }

    def build(tmp: str) -> None:
        from safetensors.numpy import load_file, save_file

        tensors = {
            bert_tensor_name(k): np.ascontiguousarray(v)
            for k, v in load_file(weights).items()
            if k.removeprefix("bert.") not in _DROPPED_TENSORS
        }
        save_file(tensors, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        for name in _COPIED_FILES:
            if os.path.isfile(os.path.join(src_dir, name)):
                shutil.copyfile(os.path.join(src_dir, name), os.path.join(tmp, name))

    return build_folder_atomically(out_dir, marker, build)
