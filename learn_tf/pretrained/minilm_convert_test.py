"""Tests for the sentence-transformers BERT rename (tiny random folder + real MiniLM)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from learn_tf.pretrained.minilm_convert import bert_tensor_name, convert_minilm

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "toy", "story", "gold", "##en", "eye"]
HIDDEN, LAYERS, HEADS, FFN = 8, 2, 2, 16
POSITIONS = 512  # keras-hub's BERT loader always builds 512 positions


def write_tiny_sentence_bert(folder) -> dict[str, np.ndarray]:
    """Write a random BERT folder with sentence-transformers tensor names; return them."""
    rng = np.random.default_rng(0)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    tensors = {
        "embeddings.word_embeddings.weight": w(len(VOCAB), HIDDEN),
        "embeddings.position_embeddings.weight": w(POSITIONS, HIDDEN),
        "embeddings.token_type_embeddings.weight": w(2, HIDDEN),
        "embeddings.LayerNorm.weight": w(HIDDEN),
        "embeddings.LayerNorm.bias": w(HIDDEN),
        "embeddings.position_ids": np.arange(POSITIONS, dtype=np.int64)[None],
        "pooler.dense.weight": w(HIDDEN, HIDDEN),
        "pooler.dense.bias": w(HIDDEN),
    }
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            tensors |= {f"{p}attention.self.{name}.weight": w(HIDDEN, HIDDEN),
                        f"{p}attention.self.{name}.bias": w(HIDDEN)}
        tensors |= {
            p + "attention.output.dense.weight": w(HIDDEN, HIDDEN),
            p + "attention.output.dense.bias": w(HIDDEN),
            p + "attention.output.LayerNorm.weight": w(HIDDEN),
            p + "attention.output.LayerNorm.bias": w(HIDDEN),
            p + "intermediate.dense.weight": w(FFN, HIDDEN),
            p + "intermediate.dense.bias": w(FFN),
            p + "output.dense.weight": w(HIDDEN, FFN),
            p + "output.dense.bias": w(HIDDEN),
            p + "output.LayerNorm.weight": w(HIDDEN),
            p + "output.LayerNorm.bias": w(HIDDEN),
        }
    os.makedirs(folder, exist_ok=True)
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    config = {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": len(VOCAB),
              "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
              "intermediate_size": FFN, "max_position_embeddings": POSITIONS,
              "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True}, f)
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(VOCAB) + "\n")
    return tensors


def test_bert_tensor_name():
    assert bert_tensor_name("embeddings.LayerNorm.weight") == "bert.embeddings.LayerNorm.gamma"
    assert bert_tensor_name("encoder.layer.0.output.LayerNorm.bias") == (
        "bert.encoder.layer.0.output.LayerNorm.beta")
    assert bert_tensor_name("bert.pooler.dense.weight") == "bert.pooler.dense.weight"


def test_tiny_bert_rename_loads_in_keras_hub(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    src = tmp_path / "src"
    original = write_tiny_sentence_bert(src)
    out = convert_minilm(str(src), str(tmp_path / "out"))

    renamed = load_file(os.path.join(out, "model.safetensors"))
    assert "bert.embeddings.LayerNorm.gamma" in renamed
    assert not any("position_ids" in k or k.endswith("LayerNorm.weight") for k in renamed)
    for name, value in original.items():
        if name != "embeddings.position_ids":
            np.testing.assert_array_equal(renamed[bert_tensor_name(name)], value)
    assert sorted(os.listdir(out)) == ["config.json", "learn_tf_conversion.json",
                                       "model.safetensors", "tokenizer_config.json", "vocab.txt"]

    backbone = keras_hub.models.BertBackbone.from_preset(out)
    np.testing.assert_array_equal(backbone.get_layer("embeddings_layer_norm").gamma.numpy(),
                                  original["embeddings.LayerNorm.weight"])
    np.testing.assert_array_equal(
        backbone.get_layer("transformer_layer_1")._feedforward_layer_norm.beta.numpy(),
        original["encoder.layer.1.output.LayerNorm.bias"])
    tokenizer = keras_hub.models.Tokenizer.from_preset(out)
    assert tokenizer("Toy Story").numpy().tolist() == [5, 6]

    assert convert_minilm(str(src), out) == out  # second call: marker matches, no rebuild


def test_rejects_non_bert_folder(tmp_path):
    write_tiny_sentence_bert(tmp_path / "src")
    with open(tmp_path / "src" / "config.json", "w") as f:
        json.dump({"model_type": "roberta"}, f)
    with pytest.raises(ValueError, match="model_type is 'roberta'"):
        convert_minilm(str(tmp_path / "src"), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="not a BERT checkpoint folder: config.json is missing"):
        convert_minilm(str(tmp_path / "nothing"), str(tmp_path / "out"))


@pytest.mark.large
def test_minilm_mean_pooled_similarity(tmp_path, monkeypatch):
    keras_hub = pytest.importorskip("keras_hub")
    from learn_tf.pretrained.presets import PresetPackageMissingError, resolve_preset

    monkeypatch.setenv("LEARN_TF_CACHE", str(tmp_path / "cache"))
    try:
        folder = resolve_preset("minilm-l6")
    except PresetPackageMissingError as err:
        pytest.skip(str(err))
    backbone = keras_hub.models.BertBackbone.from_preset(folder)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(
        folder, sequence_length=32)
    texts = ["Toy Story (1995)", "A children's animated comedy about toys", "GoldenEye (1995)"]
    inputs = preprocessor(texts)
    hidden = backbone(inputs)["sequence_output"].numpy()
    mask = inputs["padding_mask"].numpy()[..., None].astype(np.float32)
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    pooled /= np.linalg.norm(pooled, axis=1, keepdims=True)
    toy_vs_desc, golden_vs_desc = pooled[0] @ pooled[1], pooled[2] @ pooled[1]
    assert toy_vs_desc > golden_vs_desc + 0.05, (toy_vs_desc, golden_vs_desc)
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
