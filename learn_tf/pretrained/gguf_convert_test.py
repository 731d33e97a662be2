"""Tests for the GGUF -> Hugging Face folder conversion (tiny synthetic files + real SmolLM2).

Size (~410 lines): the tiny GGUF writers for both architectures are shared by every test here.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from safetensors import safe_open  # noqa: E402

from learn_tf.pretrained.gguf_convert import (  # noqa: E402
    GGUFConversionError,
    convert_gguf,
    gguf_paths_from_package,
    permute_rows_like_llama_cpp,
)

HIDDEN, HEADS, KV_HEADS, FFN, LAYERS = 32, 4, 2, 64, 2
HEAD_DIM = HIDDEN // HEADS
T = gguf.GGMLQuantizationType


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins GPT-2's byte-level BPE uses for bytes."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


BPE_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
BPE_MERGES = ["Ġ t", "h e", "Ġt he", "Ġ c", "a t", "Ġc at"]
BPE_TOKENS = BPE_SPECIALS + _byte_chars() + [m.replace(" ", "") for m in BPE_MERGES]


def _random_llama_weights(vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Hugging Face-named random weights of a tiny Llama."""
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    hf = {"model.embed_tokens.weight": w(vocab, HIDDEN), "model.norm.weight": w(HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        hf |= {
            p + "input_layernorm.weight": w(HIDDEN),
            p + "post_attention_layernorm.weight": w(HIDDEN),
            p + "self_attn.q_proj.weight": w(HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.k_proj.weight": w(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.v_proj.weight": w(KV_HEADS * HEAD_DIM, HIDDEN),
            p + "self_attn.o_proj.weight": w(HIDDEN, HEADS * HEAD_DIM),
            p + "mlp.gate_proj.weight": w(FFN, HIDDEN),
            p + "mlp.up_proj.weight": w(FFN, HIDDEN),
            p + "mlp.down_proj.weight": w(HIDDEN, FFN),
        }
    return hf


_TO_GGUF = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _gguf_name(hf_name: str) -> str:
    if hf_name.startswith("model.layers."):
        _, _, i, rest = hf_name.split(".", 3)
        module, suffix = rest.rsplit(".", 1)
        return f"blk.{i}.{_TO_GGUF[module]}.{suffix}"
    return {"model.embed_tokens.weight": "token_embd.weight",
            "model.norm.weight": "output_norm.weight"}[hf_name]


def write_tiny_llama_gguf(path: str, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny Llama GGUF the way llama.cpp does; return the weights expected back.

    Q/K rows are permuted like llama.cpp; one tensor is stored as F16 and one
    as Q8_0, so their expected values are the rounded ones.
    """
    hf = _random_llama_weights(len(BPE_TOKENS), seed)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(100000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(BPE_TOKENS)
    writer.add_token_types([3] * len(BPE_SPECIALS) + [1] * (len(BPE_TOKENS) - len(BPE_SPECIALS)))
    writer.add_token_merges(BPE_MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    expected = dict(hf)
    for name, value in hf.items():
        if name.endswith("q_proj.weight"):
            value = permute_rows_like_llama_cpp(value, HEADS)
        elif name.endswith("k_proj.weight"):
            value = permute_rows_like_llama_cpp(value, KV_HEADS)
        if name == "model.layers.0.mlp.up_proj.weight":
            packed = gguf.quants.quantize(value, T.Q8_0)
            writer.add_tensor(_gguf_name(name), packed, raw_shape=packed.shape, raw_dtype=T.Q8_0)
            expected[name] = gguf.quants.dequantize(packed, T.Q8_0).reshape(value.shape)
        elif name == "model.layers.1.mlp.down_proj.weight":
            writer.add_tensor(_gguf_name(name), value.astype(np.float16))
            expected[name] = value.astype(np.float16).astype(np.float32)
        else:
            writer.add_tensor(_gguf_name(name), value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def _load(folder: str) -> dict[str, np.ndarray]:
    with safe_open(os.path.join(folder, "model.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_tiny_llama_round_trip_and_qk_unpermuted(tmp_path):
    src = str(tmp_path / "tiny.gguf")
    expected = write_tiny_llama_gguf(src)
    out = convert_gguf(src, str(tmp_path / "out"))

    got = _load(out)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert not np.array_equal(  # the permutation is not a no-op at this size
        permute_rows_like_llama_cpp(expected["model.layers.0.self_attn.q_proj.weight"], HEADS),
        expected["model.layers.0.self_attn.q_proj.weight"],
    )
    with open(os.path.join(out, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True
    assert (config["num_attention_heads"], config["num_key_value_heads"]) == (HEADS, KV_HEADS)
    assert config["rope_theta"] == 100000.0 and config["vocab_size"] == len(BPE_TOKENS)
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        tok_config = json.load(f)
    assert (tok_config["bos_token"], tok_config["eos_token"]) == ("<|im_start|>", "<|im_end|>")
    assert tok_config["add_bos_token"] is False


def test_tiny_llama_loads_in_keras_hub(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    tokenizers = pytest.importorskip("tokenizers")
    src = str(tmp_path / "tiny.gguf")
    expected = write_tiny_llama_gguf(src)
    out = convert_gguf(src, str(tmp_path / "out"))

    backbone = keras_hub.models.Backbone.from_preset(out)
    assert type(backbone).__name__ == "Llama3Backbone"
    np.testing.assert_array_equal(
        backbone.get_layer("token_embedding").embeddings.numpy(),
        expected["model.embed_tokens.weight"],
    )
    attention = backbone.get_layer("transformer_layer_1")._self_attention_layer
    for dense, key, heads in ((attention._query_dense, "q_proj", HEADS),
                              (attention._key_dense, "k_proj", KV_HEADS)):
        hf = expected[f"model.layers.1.self_attn.{key}.weight"]
        np.testing.assert_array_equal(dense.kernel.numpy(), hf.T.reshape(HIDDEN, heads, HEAD_DIM))

    text = "the cat<|im_end|> the hat"
    keras_ids = keras_hub.models.Tokenizer.from_preset(out)(text).numpy().tolist()
    hf_ids = tokenizers.Tokenizer.from_file(os.path.join(out, "tokenizer.json")).encode(text).ids
    assert keras_ids == hf_ids
    assert BPE_TOKENS.index("Ġcat") in keras_ids and BPE_TOKENS.index("<|im_end|>") in keras_ids

    outputs = backbone({"token_ids": np.array([keras_ids]),
                        "padding_mask": np.ones((1, len(keras_ids)), bool)})
    assert outputs.shape == (1, len(keras_ids), HIDDEN)


SPM_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>"]
SPM_WORDS = ["▁", "a", "b", "ab", "▁a", "▁ab"]
SPM_TOKENS = SPM_SPECIALS + [f"<0x{b:02X}>" for b in range(256)] + SPM_WORDS + ["  "]


def write_tiny_gemma3_gguf(path: str) -> dict[str, np.ndarray]:
    """Write a tiny Gemma 3 GGUF like llama.cpp (norms stored +1, no Q/K permutation)."""
    rng = np.random.default_rng(1)
    w = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    heads, kv, head_dim = 2, 1, 16
    vocab = len(SPM_TOKENS)
    hf = {"model.embed_tokens.weight": w(vocab, HIDDEN), "model.norm.weight": w(HIDDEN)}
    names = {"token_embd.weight": "model.embed_tokens.weight",
             "output_norm.weight": "model.norm.weight"}
    for i in range(LAYERS):
        for gguf_name, hf_name, shape in (
            ("attn_norm", "input_layernorm", (HIDDEN,)),
            ("post_attention_norm", "post_attention_layernorm", (HIDDEN,)),
            ("ffn_norm", "pre_feedforward_layernorm", (HIDDEN,)),
            ("post_ffw_norm", "post_feedforward_layernorm", (HIDDEN,)),
            ("attn_q_norm", "self_attn.q_norm", (head_dim,)),
            ("attn_k_norm", "self_attn.k_norm", (head_dim,)),
            ("attn_q", "self_attn.q_proj", (heads * head_dim, HIDDEN)),
            ("attn_k", "self_attn.k_proj", (kv * head_dim, HIDDEN)),
            ("attn_v", "self_attn.v_proj", (kv * head_dim, HIDDEN)),
            ("attn_output", "self_attn.o_proj", (HIDDEN, heads * head_dim)),
            ("ffn_gate", "mlp.gate_proj", (FFN, HIDDEN)),
            ("ffn_up", "mlp.up_proj", (FFN, HIDDEN)),
            ("ffn_down", "mlp.down_proj", (HIDDEN, FFN)),
        ):
            hf[f"model.layers.{i}.{hf_name}.weight"] = w(*shape)
            names[f"blk.{i}.{gguf_name}.weight"] = f"model.layers.{i}.{hf_name}.weight"
    writer = gguf.GGUFWriter(path, "gemma3")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(8)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(SPM_TOKENS)
    word_scores = [-1.0, -5.0, -5.0, -2.0, -3.0, -1.0, 0.0]
    writer.add_token_scores([0.0] * (len(SPM_SPECIALS) + 256) + word_scores)
    writer.add_token_types([3] * len(SPM_SPECIALS) + [6] * 256 + [1] * len(SPM_WORDS) + [4])
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)
    for gguf_name, hf_name in names.items():
        shift = 1.0 if hf_name.endswith("norm.weight") else 0.0
        writer.add_tensor(gguf_name, hf[hf_name] + np.float32(shift))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


def test_tiny_gemma3_round_trip_and_loads(tmp_path):
    keras_hub = pytest.importorskip("keras_hub")
    spm = pytest.importorskip("sentencepiece")
    src = str(tmp_path / "tiny_gemma.gguf")
    expected = write_tiny_gemma3_gguf(src)
    out = convert_gguf(src, str(tmp_path / "out"))

    got = _load(out)
    assert set(got) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(got[name], value, rtol=0, atol=1e-6, err_msg=name)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "gemma3_text"

    sp = spm.SentencePieceProcessor(model_file=os.path.join(out, "tokenizer.model"))
    assert (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id()) == (2, 1, 3, 0)
    pieces = sp.encode("ab  a<start_of_turn>z", out_type=str)
    assert pieces[:3] == ["ab", "▁▁", "a"]  # user-defined "  " is matched as "▁▁"
    assert "<start_of_turn>" in pieces and "<0x7A>" in pieces  # special token, byte fallback

    backbone = keras_hub.models.Backbone.from_preset(out)
    assert type(backbone).__name__ == "Gemma3Backbone"
    block = backbone.get_layer("decoder_block_0")
    np.testing.assert_allclose(block.pre_ffw_norm.scale.numpy(),
                               expected["model.layers.0.pre_feedforward_layernorm.weight"],
                               atol=1e-6)
    tokenizer = keras_hub.models.Tokenizer.from_preset(out)
    assert tokenizer("ab a").numpy().tolist() == sp.encode("ab a")


def test_second_conversion_is_a_no_op_and_changed_source_reconverts(tmp_path):
    src, out = str(tmp_path / "tiny.gguf"), str(tmp_path / "out")
    write_tiny_llama_gguf(src, seed=0)
    convert_gguf(src, out)
    stamp = os.stat(os.path.join(out, "model.safetensors")).st_mtime_ns
    start = time.perf_counter()
    assert convert_gguf(src, out) == out
    assert time.perf_counter() - start < 0.5
    assert os.stat(os.path.join(out, "model.safetensors")).st_mtime_ns == stamp

    expected = write_tiny_llama_gguf(src, seed=1)
    convert_gguf(src, out)
    np.testing.assert_array_equal(_load(out)["model.norm.weight"], expected["model.norm.weight"])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".out.tmp")]


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="bad.gguf"):
        convert_gguf(str(bad), str(tmp_path / "out"))
    with pytest.raises(ValueError, match="missing.gguf"):
        convert_gguf(str(tmp_path / "missing.gguf"), str(tmp_path / "out"))

    other = str(tmp_path / "gpt2.gguf")
    writer = gguf.GGUFWriter(other, "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ValueError, match=r"gpt2\.gguf: architecture 'gpt2' is not supported"):
        convert_gguf(other, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    write_tiny_llama_gguf(str(tmp_path / "tiny.gguf"))
    with pytest.raises(FileExistsError, match="refusing"):
        convert_gguf(str(tmp_path / "tiny.gguf"), str(foreign))


def _fake_distribution(site, name: str, files: dict[str, bytes], requires=()) -> None:
    """Install a minimal distribution (dist-info + RECORD) into the folder `site`."""
    module = name.replace("-", "_")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"
    (info / "METADATA").write_text(meta + "".join(f"Requires-Dist: {r}\n" for r in requires))
    for rel, data in files.items():
        (site / module / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / module / rel).write_bytes(data)
    record = [f"{module}/{rel},," for rel in files] + [f"{info.name}/METADATA,,"]
    (info / "RECORD").write_text("\n".join(record) + "\n")


def test_gguf_paths_from_package_reassembles_chunks(tmp_path, monkeypatch):
    import hashlib

    blob = os.urandom(3000)
    site = tmp_path / "site"
    _fake_distribution(site, "fake-model-part1", {"data/m.gguf.part00": blob[:1000]})
    _fake_distribution(site, "fake-model-part2", {"data/m.gguf.part01": blob[1000:2000],
                                                  "data/m.gguf.part02": blob[2000:]})
    sums = f"{hashlib.sha256(blob).hexdigest()}  m.gguf\n".encode()
    _fake_distribution(site, "fake-model", {"data/SHA256SUMS": sums},
                       requires=("fake-model-part1==1.0", "fake-model-part2==1.0"))
    _fake_distribution(site, "fake-whole", {"w.gguf": b"x"})
    monkeypatch.syspath_prepend(str(site))

    paths = gguf_paths_from_package("fake-model", str(tmp_path / "assembled"))
    assert paths == [str(tmp_path / "assembled" / "m.gguf")]
    assert open(paths[0], "rb").read() == blob
    assert gguf_paths_from_package("fake_whole") == [str(site / "fake_whole" / "w.gguf")]
    with pytest.raises(FileNotFoundError, match="not installed"):
        gguf_paths_from_package("no-such-package-here")


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    """A throwaway LEARN_TF_CACHE, deleted afterwards (converted weights are large)."""
    monkeypatch.setenv("LEARN_TF_CACHE", str(tmp_path / "cache"))
    yield str(tmp_path / "cache")
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


@pytest.mark.large
def test_smollm2_completes_capital_of_france(tmp_cache):
    keras_hub = pytest.importorskip("keras_hub")
    from learn_tf.pretrained.presets import PresetPackageMissingError, resolve_preset

    try:
        folder = resolve_preset("smollm2-135m")
    except PresetPackageMissingError as err:
        pytest.skip(str(err))
    assert folder == os.path.join(tmp_cache, "smollm2-135m")

    causal_lm = keras_hub.models.CausalLM.from_preset(folder)
    assert type(causal_lm).__name__ == "Llama3CausalLM"
    preprocessor = causal_lm.preprocessor
    preprocessor.add_start_token = False  # SmolLM2 does not prepend BOS (add_bos_token false)
    tokenizer = preprocessor.tokenizer
    prompt = "The capital of France is"
    ids = tokenizer(prompt).numpy()
    hidden = causal_lm.backbone({"token_ids": ids[None],
                                 "padding_mask": np.ones((1, len(ids)), bool)})
    logits = causal_lm.backbone.token_embedding(hidden, reverse=True).numpy()[0, -1]
    assert tokenizer.detokenize([int(np.argmax(logits))]) == " Paris"

    causal_lm.compile(sampler="greedy")
    text = causal_lm.generate(prompt, max_length=len(ids) + 3)
    assert text.startswith(prompt + " Paris"), text


@pytest.mark.large
def test_gemma3_270m_knows_where_the_eiffel_tower_is(tmp_cache):
    keras_hub = pytest.importorskip("keras_hub")
    from learn_tf.pretrained.presets import PresetPackageMissingError, resolve_preset

    try:
        folder = resolve_preset("gemma3-270m")
    except PresetPackageMissingError as err:
        pytest.skip(str(err))
    causal_lm = keras_hub.models.CausalLM.from_preset(folder)
    assert type(causal_lm).__name__ == "Gemma3CausalLM"
    tokenizer = causal_lm.preprocessor.tokenizer
    ids = [2] + tokenizer("The Eiffel Tower is located in the city of").numpy().tolist()  # <bos>
    hidden = causal_lm.backbone({"token_ids": np.array([ids]),
                                 "padding_mask": np.ones((1, len(ids)), bool)})
    logits = causal_lm.backbone.token_embedding(hidden, reverse=True).numpy()[0, -1]
    assert tokenizer.id_to_token(int(np.argmax(logits))) == "▁Paris"
