"""Convert llama.cpp GGUF checkpoints into Hugging Face-style folders keras-hub loads.

Supported architectures: `llama` (with a GPT-2-style byte-level BPE tokenizer,
e.g. SmolLM2) and `gemma3` (text-only, SentencePiece tokenizer, e.g. Gemma 3
270M). Quantized tensors are dequantized with the `gguf` package; the output
folder holds `config.json`, `model.safetensors`, the tokenizer files keras-hub's
Hugging Face loader reads, and a `learn_tf_conversion.json` marker.

Two llama.cpp storage conventions are undone here:
- llama: the rows of the Q and K projections are permuted (per head, the two
  rotary halves are interleaved); the Hugging Face layout keeps them as halves.
- gemma3: every RMS-norm weight is stored plus one (Gemma applies `1 + w`).

Size (~530 lines): one reader, tensor map and writer serve both architectures and
both tokenizer formats; a file per architecture would repeat them.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import struct
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from learn_tf.pretrained.cache import (
    build_folder_atomically,
    cache_dir,
    file_fingerprint,
    sha256_file,
    write_json,
)

CONVERTER_VERSION = 1
_DTYPES = {"float32": np.float32, "float16": np.float16}
_MISSING = object()

# llama.cpp per-block tensor names -> Hugging Face names (shared by llama and gemma3).
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
_GLOBAL_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}


@dataclass(frozen=True)
class _Arch:
    """How one llama.cpp architecture maps back to its Hugging Face form."""

    block_names: dict[str, str]
    tokenizer_model: str  # the tokenizer.ggml.model this converter supports
    unpermute_qk: bool
    norm_shift: float
    hf_config: Callable[[Any, str, dict[str, np.ndarray]], dict[str, Any]]


class GGUFConversionError(ValueError):
    """A GGUF file cannot be read or converted."""


# ---------------------------------------------------------------- reading


class _Meta:
    """Typed access to the key/value metadata of a GGUF file."""

    def __init__(self, reader: Any, path: str):
        self.reader, self.path = reader, path
        self.arch = self.get("general.architecture")

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """Value of `key` (`{arch}` expands to the architecture); `default` when absent."""
        key = key.replace("{arch}", getattr(self, "arch", ""))
        field = self.reader.fields.get(key)
        if field is None:
            if default is _MISSING:
                raise GGUFConversionError(f"{self.path}: metadata key {key!r} is missing")
            return default
        value = field.contents()
        return value.item() if isinstance(value, np.generic) else value


def _open_gguf(gguf_path: str) -> _Meta:
    import gguf

    if not os.path.isfile(gguf_path):
        raise GGUFConversionError(f"GGUF file not found: {gguf_path}")
    try:
        return _Meta(gguf.GGUFReader(gguf_path, "r"), gguf_path)
    except GGUFConversionError:
        raise
    except Exception as err:  # the reader raises assorted errors on bad input
        raise GGUFConversionError(f"{gguf_path} is not a readable GGUF file: {err}") from err


def _dequantize(tensor: Any) -> np.ndarray:
    """Float32 array of a GGUF tensor in numpy (row-major, Hugging Face) order."""
    import gguf

    values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    return np.asarray(values, dtype=np.float32).reshape(
        tuple(int(d) for d in reversed(tensor.shape))
    )


def _unpermute_rows(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Invert llama.cpp's rotary row permutation of a Q or K projection (out, in)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


def permute_rows_like_llama_cpp(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Apply llama.cpp's rotary row permutation (the inverse of what conversion undoes)."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_heads, 2, rows // n_heads // 2, *weight.shape[1:])
        .swapaxes(1, 2)
        .reshape(weight.shape)
    )


# ---------------------------------------------------------------- configs


def _token_ids(meta: _Meta) -> dict[str, Any]:
    ids = {}
    for hf_key, gguf_key in (
        ("bos_token_id", "bos_token_id"),
        ("eos_token_id", "eos_token_id"),
        ("pad_token_id", "padding_token_id"),
    ):
        value = meta.get(f"tokenizer.ggml.{gguf_key}", None)
        if value is not None:
            ids[hf_key] = int(value)
    return ids


def _common_config(meta: _Meta, dtype: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    n_heads = int(meta.get("{arch}.attention.head_count"))
    if meta.get("{arch}.rope.scaling.type", "none") not in ("none", None):
        raise GGUFConversionError(
            f"{meta.path}: RoPE scaling {meta.get('{arch}.rope.scaling.type')!r} is not supported"
        )
    return {
        "vocab_size": int(tensors["model.embed_tokens.weight"].shape[0]),
        "hidden_size": int(meta.get("{arch}.embedding_length")),
        "intermediate_size": int(meta.get("{arch}.feed_forward_length")),
        "num_hidden_layers": int(meta.get("{arch}.block_count")),
        "num_attention_heads": n_heads,
        "num_key_value_heads": int(meta.get("{arch}.attention.head_count_kv", n_heads)),
        "max_position_embeddings": int(meta.get("{arch}.context_length", 2048)),
        "rms_norm_eps": float(meta.get("{arch}.attention.layer_norm_rms_epsilon", 1e-6)),
        "rope_scaling": None,
        "torch_dtype": dtype,
        **_token_ids(meta),
    }


def _llama_config(meta: _Meta, dtype: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    cfg = _common_config(meta, dtype, tensors)
    head_dim = cfg["hidden_size"] // cfg["num_attention_heads"]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **cfg,
        "head_dim": int(meta.get("{arch}.rope.dimension_count", head_dim)),
        "hidden_act": "silu",
        "rope_theta": float(meta.get("{arch}.rope.freq_base", 10000.0)),
        "tie_word_embeddings": "lm_head.weight" not in tensors,
        "attention_bias": False,
        "mlp_bias": False,
    }


def _gemma3_config(meta: _Meta, dtype: str, tensors: dict[str, np.ndarray]) -> dict[str, Any]:
    cfg = _common_config(meta, dtype, tensors)
    head_dim = int(meta.get("{arch}.attention.key_length"))
    return {
        "architectures": ["Gemma3ForCausalLM"],
        "model_type": "gemma3_text",
        **cfg,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": head_dim,
        "sliding_window": int(meta.get("{arch}.attention.sliding_window")),
        "sliding_window_pattern": 6,  # llama.cpp and keras-hub both fix it at 6
        "rope_theta": float(meta.get("{arch}.rope.freq_base", 1_000_000.0)),
        "rope_local_base_freq": 10_000.0,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": meta.get("{arch}.final_logit_softcapping", None),
        "tie_word_embeddings": True,
    }


_ARCHS = {
    "llama": _Arch(
        block_names={**_BLOCK_NAMES, "ffn_norm": "post_attention_layernorm"},
        tokenizer_model="gpt2",
        unpermute_qk=True,
        norm_shift=0.0,
        hf_config=_llama_config,
    ),
    "gemma3": _Arch(
        block_names={**_BLOCK_NAMES, "ffn_norm": "pre_feedforward_layernorm"},
        tokenizer_model="llama",
        unpermute_qk=False,
        norm_shift=1.0,
        hf_config=_gemma3_config,
    ),
}


# ---------------------------------------------------------------- weights


def _hf_name(gguf_name: str, arch: _Arch, path: str) -> str:
    stem, _, suffix = gguf_name.rpartition(".")
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)", stem)
    if match and match.group(2) in arch.block_names:
        return f"model.layers.{match.group(1)}.{arch.block_names[match.group(2)]}.{suffix}"
    if stem in _GLOBAL_NAMES:
        return f"{_GLOBAL_NAMES[stem]}.{suffix}"
    raise GGUFConversionError(f"{path}: tensor {gguf_name!r} has no Hugging Face equivalent here")


def _convert_tensors(meta: _Meta, arch: _Arch) -> dict[str, np.ndarray]:
    n_heads = int(meta.get("{arch}.attention.head_count"))
    n_kv_heads = int(meta.get("{arch}.attention.head_count_kv", n_heads))
    tensors = {}
    for tensor in meta.reader.tensors:
        name = _hf_name(tensor.name, arch, meta.path)
        try:
            value = _dequantize(tensor)
        except NotImplementedError as err:
            raise GGUFConversionError(f"{meta.path}: tensor {tensor.name}: {err}") from err
        if arch.unpermute_qk and name.endswith("q_proj.weight"):
            value = _unpermute_rows(value, n_heads)
        elif arch.unpermute_qk and name.endswith("k_proj.weight"):
            value = _unpermute_rows(value, n_kv_heads)
        if arch.norm_shift and name.endswith("norm.weight"):
            value = value - np.float32(arch.norm_shift)
        tensors[name] = value
    if "model.embed_tokens.weight" not in tensors:
        raise GGUFConversionError(f"{meta.path}: no token_embd.weight tensor")
    return tensors


# ---------------------------------------------------------------- tokenizers


def _tokenizer_config(meta: _Meta, tokens: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {}
    for name in ("bos", "eos", "unk", "pad"):
        gguf_key = "padding" if name == "pad" else ("unknown" if name == "unk" else name)
        idx = meta.get(f"tokenizer.ggml.{gguf_key}_token_id", None)
        if idx is not None and 0 <= int(idx) < len(tokens):
            cfg[f"{name}_token"] = tokens[int(idx)]
    cfg["add_bos_token"] = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    cfg["add_eos_token"] = bool(meta.get("tokenizer.ggml.add_eos_token", False))
    cfg["model_max_length"] = int(meta.get("{arch}.context_length", 2048))
    cfg["clean_up_tokenization_spaces"] = False
    template = meta.get("tokenizer.chat_template", None)
    if template:
        cfg["chat_template"] = template
    return {**cfg, **extra}


def _write_bpe_tokenizer(meta: _Meta, out: str) -> None:
    """tokenizer.json (byte-level BPE) + tokenizer_config.json from GGUF `gpt2` metadata."""
    tokens = list(meta.get("tokenizer.ggml.tokens"))
    types = list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens)))
    merges = [m.split(" ", 1) for m in meta.get("tokenizer.ggml.merges")]
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": int(kind) == 3}
        for i, (tok, kind) in enumerate(zip(tokens, types))
        if int(kind) in (3, 4)  # CONTROL, USER_DEFINED
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    pre_tokenizer: dict[str, Any] = byte_level
    if meta.get("tokenizer.ggml.pre", "") == "smollm":  # SmolLM splits digits one by one
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    write_json(os.path.join(out, "tokenizer.json"), {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": added, "normalizer": None, "pre_tokenizer": pre_tokenizer,
        "post_processor": {**byte_level, "trim_offsets": False},
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": merges},
    })
    write_json(os.path.join(out, "tokenizer_config.json"),
               _tokenizer_config(meta, tokens, {"tokenizer_class": "GPT2Tokenizer"}))


def _pb_varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32 values use ten-byte two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _pb(field: int, value: Any) -> bytes:
    """Encode one protobuf field: bytes/str (length-delimited), bool/int (varint), float."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        return _pb_varint(field << 3 | 2) + _pb_varint(len(value)) + value
    if isinstance(value, float):
        return _pb_varint(field << 3 | 5) + struct.pack("<f", value)
    return _pb_varint(field << 3) + _pb_varint(int(value))


def _write_sentencepiece_tokenizer(meta: _Meta, out: str) -> None:
    """tokenizer.model (SentencePiece BPE ModelProto) from GGUF `llama` tokenizer metadata.

    The proto is encoded by hand (field numbers of sentencepiece_model.proto)
    because sentencepiece's generated module needs a newer protobuf than TFX.
    """
    tokens = list(meta.get("tokenizer.ggml.tokens"))
    scores = list(meta.get("tokenizer.ggml.scores", [0.0] * len(tokens)))
    types = [int(t) for t in meta.get("tokenizer.ggml.token_type", [1] * len(tokens))]

    def special(key: str, default: int) -> int:
        return int(meta.get(f"tokenizer.ggml.{key}_token_id", default))

    ids = {"unk": special("unknown", 0), "bos": special("bos", 1),
           "eos": special("eos", 2), "pad": special("padding", -1)}
    for i, kind in enumerate(types):
        if i == ids["unk"]:
            types[i] = 2  # UNKNOWN
        elif kind == 3 and i not in (ids["bos"], ids["eos"], ids["pad"]):
            # llama.cpp marks every special added token CONTROL; SentencePiece never
            # matches CONTROL pieces in text, so e.g. <start_of_turn> becomes USER_DEFINED.
            types[i] = 4
        elif kind == 4:
            # llama.cpp stores user-defined pieces with "▁" turned into spaces.
            tokens[i] = tokens[i].replace(" ", "▁")
    pieces = b"".join(
        _pb(1, _pb(1, tok) + _pb(2, float(score)) + _pb(3, kind))
        for tok, score, kind in zip(tokens, scores, types)
    )
    trainer = (
        _pb(3, 2)  # model_type = BPE
        + _pb(4, len(tokens))  # vocab_size
        + _pb(22, False)  # split_by_whitespace: merge over the whole text, as llama.cpp does
        + _pb(25, True)  # split_digits
        + _pb(26, True)  # allow_whitespace_only_pieces
        + _pb(35, 6 in types)  # byte_fallback when <0xNN> byte pieces exist
        + _pb(40, ids["unk"]) + _pb(41, ids["bos"]) + _pb(42, ids["eos"]) + _pb(43, ids["pad"])
        + b"".join(_pb(field, tokens[ids[name]])
                   for field, name in ((45, "unk"), (46, "bos"), (47, "eos"), (48, "pad"))
                   if 0 <= ids[name] < len(tokens))
    )
    normalizer = (
        _pb(1, "identity")
        + _pb(3, bool(meta.get("tokenizer.ggml.add_space_prefix", False)))  # add_dummy_prefix
        + _pb(4, False)  # remove_extra_whitespaces
        + _pb(5, True)  # escape_whitespaces
    )
    with open(os.path.join(out, "tokenizer.model"), "wb") as f:
        f.write(pieces + _pb(2, trainer) + _pb(3, normalizer))
    write_json(os.path.join(out, "tokenizer_config.json"),
               _tokenizer_config(meta, tokens, {"tokenizer_class": "GemmaTokenizer"}))


_TOKENIZER_WRITERS = {"gpt2": _write_bpe_tokenizer, "llama": _write_sentencepiece_tokenizer}


# ---------------------------------------------------------------- public API


def convert_gguf(gguf_path: str, out_dir: str, dtype: str = "float32") -> str:
    """Convert a llama/gemma3 GGUF file into a keras-hub-loadable Hugging Face folder.

    Returns `out_dir`. Does nothing when `out_dir` already holds a conversion of
    the same source file with the same converter version and dtype. Raises
    `GGUFConversionError` (a ValueError) naming the file when it is unreadable
    or its architecture/tokenizer is unsupported.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if not os.path.isfile(gguf_path):
        raise GGUFConversionError(f"GGUF file not found: {gguf_path}")
    marker = {
        "converter": "learn_tf.pretrained.gguf_convert",
        "converter_version": CONVERTER_VERSION,
        "source": file_fingerprint(gguf_path),
        "dtype": dtype,
    }

    def build(tmp: str) -> None:
        from safetensors.numpy import save_file

        meta = _open_gguf(gguf_path)
        arch = _ARCHS.get(meta.arch)
        if arch is None:
            raise GGUFConversionError(
                f"{gguf_path}: architecture {meta.arch!r} is not supported "
                f"(supported: {', '.join(sorted(_ARCHS))})"
            )
        tok_model = meta.get("tokenizer.ggml.model", None)
        if tok_model != arch.tokenizer_model:
            raise GGUFConversionError(
                f"{gguf_path}: tokenizer model {tok_model!r} is not supported for "
                f"{meta.arch!r} (expected {arch.tokenizer_model!r})"
            )
        tensors = _convert_tensors(meta, arch)
        write_json(os.path.join(tmp, "config.json"), arch.hf_config(meta, dtype, tensors))
        _TOKENIZER_WRITERS[tok_model](meta, tmp)
        np_dtype = _DTYPES[dtype]
        save_file({k: np.ascontiguousarray(v.astype(np_dtype, copy=False))
                   for k, v in tensors.items()},
                  os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})

    return build_folder_atomically(out_dir, marker, build)


def _distribution_files(package: str) -> list[str]:
    """Absolute paths of the files of an installed distribution or import package."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package.replace("-", "_"))  # does not import it
        if spec is None or not spec.submodule_search_locations:
            return []
        return [os.path.join(root, name)
                for location in spec.submodule_search_locations
                for root, _, names in os.walk(location) for name in names]
    return [str(dist.locate_file(f)) for f in dist.files or []]


def _dependencies(package: str) -> list[str]:
    try:
        requires = importlib.metadata.requires(package) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    return [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in requires if ";" not in r]


def _assemble(base: str, parts: list[str], checksums: dict[str, str], out_dir: str) -> str:
    """Concatenate `parts` (in order) into `out_dir/base`, reusing a complete earlier copy."""
    target = os.path.join(out_dir, base)
    size = sum(os.path.getsize(p) for p in parts)
    if os.path.isfile(target) and os.path.getsize(target) == size:
        return target
    os.makedirs(out_dir, exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as dst:
            for part in parts:
                with open(part, "rb") as src:
                    for block in iter(lambda: src.read(1 << 22), b""):
                        dst.write(block)
        if base in checksums and sha256_file(tmp) != checksums[base]:
            raise GGUFConversionError(f"reassembled {base} does not match its SHA256SUMS entry")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def gguf_paths_from_package(package: str, assemble_dir: Optional[str] = None) -> list[str]:
    """Paths of the GGUF file(s) shipped by an installed pip package (never imports it).

    Whole `*.gguf` files are returned in place. Files split into chunks
    (`name.gguf.part00`, `.part01`, ..., possibly spread over the package's
    dependencies) are concatenated once into `assemble_dir` (default
    `cache_dir()/gguf`) and checked against a `SHA256SUMS` file when the
    package has one. Raises FileNotFoundError when nothing is found.
    """
    files = _distribution_files(package)
    if not files:
        raise FileNotFoundError(f"package {package!r} is not installed")
    whole = sorted(f for f in files if f.endswith(".gguf"))
    if whole:
        return whole
    for dep in _dependencies(package):
        files += _distribution_files(dep)
    checksums: dict[str, str] = {}
    for path in (f for f in files if os.path.basename(f) == "SHA256SUMS"):
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) == 2:
                    checksums[fields[1].lstrip("*")] = fields[0]
    groups: dict[str, list[str]] = {}
    for path in files:
        match = re.fullmatch(r"(.+\.gguf)\.part(\d+)", os.path.basename(path))
        if match:
            groups.setdefault(match.group(1), []).append(path)
    if not groups:
        raise FileNotFoundError(
            f"package {package!r} contains no .gguf file or .gguf.partNN chunks")
    out_dir = assemble_dir or os.path.join(cache_dir(), "gguf")
    paths = []
    for base, parts in sorted(groups.items()):
        parts.sort(key=lambda p: int(p.rsplit(".part", 1)[1]))
        numbers = [int(p.rsplit(".part", 1)[1]) for p in parts]
        if numbers != list(range(numbers[0], numbers[0] + len(parts))):
            raise FileNotFoundError(f"chunks of {base} are incomplete: found parts {numbers}")
        paths.append(_assemble(base, parts, checksums, out_dir))
    return paths
