#!/usr/bin/env python3
"""Golden logits for a BitNet b1.58 GGUF, computed by Hugging Face transformers' BitNet model.

What it does
    Reads a GGUF file with its own parser (header, metadata, tensor table, alignment; tensor types
    F32, F16, BF16, I2_S, TQ2_0, TQ1_0 decoded here, independently of the Rust code), loads the
    weights into transformers' ``BitNetForCausalLM`` through ``from_pretrained`` with the ``bitnet``
    quantizer (ternary weights packed as in the published HF checkpoint, one ``weight_scale`` per
    linear, W1.58A8: activations absmax-quantized to int8 per token by transformers' own code), and
    runs it in float32 on the CPU:

    * teacher-forced logits for every prompt position (one batch, no cache);
    * a greedy continuation (argmax, lowest id on ties) of ``--steps`` tokens using the KV cache.

    Checks recorded with every fixture (README in crates/model/tests/data/reference explains them):
    * agreement: a plain numpy implementation written from docs/model.md,
      transformers' other BitNet linear class, and transformers' uncached decode must match
      (cosine >= 0.999 on every row, or the script fails);
    * robustness: 16 numpy runs perturbed like another correct engine (ulp jitter before every
      quantizer, f16 KV cache) give the cosine floor, the tie tolerance for greedy steps and
      whether free-running greedy is stable;
    * mutants: deliberately wrong variants (SiLU, interleaved RoPE, ...) must fail the cosine check.

What it does NOT do
    It is not run in CI and is not part of the engine; it needs torch, which CI does not install.
    It does not tokenize (token ids in, logits out), does not support partial RoPE, per-block
    scales that differ inside one ternary tensor, or K-quant embeddings (Q6_K, Q8_0).

Usage (from the workspace root; versions pinned in xtask/py/requirements-reference.txt)
    target/pyenv/bin/pip install -r xtask/py/requirements-reference.txt
    target/pyenv/bin/python xtask/py/hf_reference.py MODEL.gguf OUT.json \
        [--prompt-tokens 128000,9906,11] [--steps 32] [--store-positions all|0,5,7]
    target/pyenv/bin/python xtask/py/hf_reference.py make-fixtures [--out-dir DIR]

    ``make-fixtures`` runs ``cargo xtask gen-model`` for every case in FIXTURE_CASES (searching a
    stable prompt where asked) and rewrites crates/model/tests/data/reference/ (~10 min on 2 cores). The fixture format is documented in that directory's README.md.

Pinned versions (the fixtures were produced with exactly these; others are refused unless
``--allow-other-versions``): python 3.11, torch 2.15.0, transformers 5.24.0, accelerate 1.15.0,
safetensors 0.8.0, numpy 2.4.6.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

# transformers decorates its BitNet kernels with @torch.compile; eager execution runs the same
# Python code without generating C++ (slow, compiler-dependent, and pointless for a tiny model).
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")

import numpy as np  # noqa: E402

PINNED = {
    "torch": "2.15.0",
    "transformers": "5.24.0",
    "accelerate": "1.15.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
}

FORMAT_ID = "bitnet-serve/hf-reference/v1"


class RefError(Exception):
    """A problem with the input file or the environment, reported without a traceback."""


# ----------------------------------------------------------------------------------------------
# GGUF reading (independent of crates/gguf/src)
# ----------------------------------------------------------------------------------------------

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32

# metadata value type id -> (struct format, size); 8 = string, 9 = array handled separately
_SCALAR = {
    0: ("<B", 1),
    1: ("<b", 1),
    2: ("<H", 2),
    3: ("<h", 2),
    4: ("<I", 4),
    5: ("<i", 4),
    6: ("<f", 4),
    7: ("<B", 1),  # bool, checked to be 0/1
    10: ("<Q", 8),
    11: ("<q", 8),
    12: ("<d", 8),
}
_NP_SCALAR = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}

# ggml tensor type ids used here
T_F32, T_F16, T_BF16, T_TQ1_0, T_TQ2_0, T_I2_S = 0, 1, 30, 34, 35, 36
TYPE_NAMES = {T_F32: "F32", T_F16: "F16", T_BF16: "BF16", T_TQ1_0: "TQ1_0", T_TQ2_0: "TQ2_0", T_I2_S: "I2_S"}


def tensor_nbytes(ggml_type: int, dims: list[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    if ggml_type == T_F32:
        return 4 * n
    if ggml_type in (T_F16, T_BF16):
        return 2 * n
    if ggml_type == T_I2_S:
        if n % 4:
            raise RefError(f"I2_S tensor with {n} elements: not a multiple of 4")
        return n // 4 + 32
    if ggml_type in (T_TQ2_0, T_TQ1_0):
        if dims[0] % 256:
            raise RefError(f"{TYPE_NAMES[ggml_type]} row length {dims[0]} is not a multiple of 256")
        return (n // 256) * (66 if ggml_type == T_TQ2_0 else 54)
    raise RefError(
        f"tensor type id {ggml_type} is not supported by this reference (F32, F16, BF16, I2_S, TQ2_0, TQ1_0)"
    )


@dataclass
class TensorInfo:
    name: str
    dims: list[int]  # ne0 first
    ggml_type: int
    offset: int  # relative to the data section
    nbytes: int = 0


@dataclass
class Gguf:
    path: Path
    version: int
    metadata: dict
    tensors: dict[str, TensorInfo]
    order: list[str]
    data_start: int
    buf: mmap.mmap = field(repr=False)

    def raw(self, name: str) -> memoryview:
        t = self.tensors[name]
        start = self.data_start + t.offset
        return memoryview(self.buf)[start : start + t.nbytes]


class _Cursor:
    def __init__(self, buf, what: str):
        self.buf, self.pos, self.what = buf, 0, what

    def take(self, n: int, why: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise RefError(f"{self.what}: truncated while reading {why} at byte {self.pos} (file has {len(self.buf)} bytes)")
        b = self.buf[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str, size: int, why: str):
        return struct.unpack(fmt, self.take(size, why))[0]

    def string(self, why: str) -> str:
        n = self.unpack("<Q", 8, why + " length")
        raw = self.take(n, why)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return raw.decode("utf-8", errors="replace")

    def value(self, vtype: int, why: str):
        if vtype in _SCALAR:
            fmt, size = _SCALAR[vtype]
            v = self.unpack(fmt, size, why)
            if vtype == 7:
                if v not in (0, 1):
                    raise RefError(f"{self.what}: {why}: bool byte {v} is neither 0 nor 1")
                v = bool(v)
            return v
        if vtype == 8:
            return self.string(why)
        if vtype == 9:
            etype = self.unpack("<I", 4, why + " array element type")
            n = self.unpack("<Q", 8, why + " array length")
            if etype in _NP_SCALAR:
                size = _SCALAR[etype][1]
                raw = self.take(n * size, why + f" ({n} array elements)")
                arr = np.frombuffer(raw, dtype=_NP_SCALAR[etype])
                return arr.astype(bool) if etype == 7 else arr
            if etype == 8:
                if n > len(self.buf) // 8:
                    raise RefError(f"{self.what}: {why}: string array of {n} items cannot fit in the file")
                return [self.string(why + f"[{i}]") for i in range(n)]
            if etype == 9:
                return [self.value(9, why + f"[{i}]") for i in range(n)]
            raise RefError(f"{self.what}: {why}: unknown array element type {etype}")
        raise RefError(f"{self.what}: {why}: unknown metadata value type {vtype}")


def read_gguf(path: Path) -> Gguf:
    f = open(path, "rb")
    try:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except ValueError as e:
        raise RefError(f"{path}: cannot map the file ({e}); is it empty?") from None
    c = _Cursor(buf, str(path))
    if c.take(4, "magic") != GGUF_MAGIC:
        raise RefError(f"{path}: not a GGUF file (magic is not 'GGUF')")
    version = c.unpack("<I", 4, "version")
    if version not in (2, 3):
        raise RefError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    n_tensors = c.unpack("<Q", 8, "tensor count")
    n_kv = c.unpack("<Q", 8, "metadata count")
    if n_tensors > len(buf) // 24 or n_kv > len(buf) // 12:
        raise RefError(f"{path}: counts ({n_tensors} tensors, {n_kv} keys) cannot fit in the file")
    metadata = {}
    for i in range(n_kv):
        key = c.string(f"metadata key #{i}")
        vtype = c.unpack("<I", 4, f"type of {key}")
        metadata[key] = c.value(vtype, key)
    tensors, order = {}, []
    for i in range(n_tensors):
        name = c.string(f"tensor name #{i}")
        n_dims = c.unpack("<I", 4, f"{name} n_dims")
        if not 1 <= n_dims <= 4:
            raise RefError(f"{path}: tensor {name} has {n_dims} dimensions (1..4 allowed)")
        dims = [c.unpack("<Q", 8, f"{name} dim") for _ in range(n_dims)]
        ggml_type = c.unpack("<I", 4, f"{name} type")
        offset = c.unpack("<Q", 8, f"{name} offset")
        if name in tensors:
            raise RefError(f"{path}: tensor {name} appears twice")
        tensors[name] = TensorInfo(name, dims, ggml_type, offset)
        order.append(name)
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    if alignment <= 0 or alignment & (alignment - 1):
        raise RefError(f"{path}: general.alignment = {alignment} is not a power of two")
    data_start = (c.pos + alignment - 1) // alignment * alignment
    for t in tensors.values():
        t.nbytes = tensor_nbytes(t.ggml_type, t.dims)
        if t.offset % alignment:
            raise RefError(f"{path}: tensor {t.name} offset {t.offset} is not aligned to {alignment}")
        if data_start + t.offset + t.nbytes > len(buf):
            raise RefError(
                f"{path}: tensor {t.name} ({TYPE_NAMES.get(t.ggml_type)}, {t.dims}) ends past the end of the file"
            )
    return Gguf(path, version, metadata, tensors, order, data_start, buf)


# ----------------------------------------------------------------------------------------------
# Tensor decoding
# ----------------------------------------------------------------------------------------------


def decode_float(g: Gguf, name: str) -> np.ndarray:
    """F32/F16/BF16 tensor -> float32 array shaped [ne1, ne0] (or [ne0] for vectors)."""
    t = g.tensors[name]
    raw = g.raw(name)
    if t.ggml_type == T_F32:
        a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif t.ggml_type == T_F16:
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif t.ggml_type == T_BF16:
        a = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        raise RefError(f"{name}: expected a float tensor (F32/F16/BF16), found {TYPE_NAMES.get(t.ggml_type, t.ggml_type)}")
    return a.reshape(list(reversed(t.dims))) if len(t.dims) > 1 else a


def _i2s_codes(raw: memoryview, n: int) -> np.ndarray:
    """I2_S codes in element order (docs/formats.md#i2_s-codes): 128-element blocks of 32 bytes; byte 32b+m
    holds elements 128b+m, +32, +64, +96 from the most significant bit pair down."""
    packed = np.frombuffer(raw[: n // 4], dtype=np.uint8).reshape(-1, 32)
    codes = np.empty((packed.shape[0], 4, 32), dtype=np.uint8)
    for grp in range(4):
        codes[:, grp, :] = (packed >> (6 - 2 * grp)) & 3
    return codes.reshape(-1)


def _tq2_codes(raw: memoryview, nblocks: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ2_0 (docs/formats.md#tq2_0): 66-byte blocks, qs[64] then fp16 d; element 128j+32l+m is
    qs[32j+m] bits 2l..2l+1 (least significant pair first)."""
    blk = np.frombuffer(raw, dtype=np.uint8).reshape(nblocks, 66)
    qs = blk[:, :64].reshape(nblocks, 2, 32)
    d = blk[:, 64:66].copy().view("<f2").reshape(nblocks).astype(np.float32)
    codes = np.empty((nblocks, 2, 4, 32), dtype=np.uint8)
    for grp in range(4):
        codes[:, :, grp, :] = (qs >> (2 * grp)) & 3
    return codes.reshape(nblocks, 256), d


def _trit(b: np.ndarray, n: int) -> np.ndarray:
    """Trit n of a TQ1_0 byte: ((uint8)(b * 3^n) * 3) >> 8."""
    x = (b.astype(np.uint32) * (3**n)) & 0xFF
    return ((x * 3) >> 8).astype(np.uint8)


def _tq1_codes(raw: memoryview, nblocks: int) -> tuple[np.ndarray, np.ndarray]:
    """TQ1_0 (docs/formats.md#tq1_0): 54-byte blocks qs[48], qh[4], fp16 d; base-3 packing, first trit
    most significant."""
    blk = np.frombuffer(raw, dtype=np.uint8).reshape(nblocks, 54)
    codes = np.empty((nblocks, 256), dtype=np.uint8)
    for n in range(5):
        codes[:, 32 * n : 32 * n + 32] = _trit(blk[:, 0:32], n)
        codes[:, 160 + 16 * n : 160 + 16 * n + 16] = _trit(blk[:, 32:48], n)
    for n in range(4):
        codes[:, 240 + 4 * n : 240 + 4 * n + 4] = _trit(blk[:, 48:52], n)
    d = blk[:, 52:54].copy().view("<f2").reshape(nblocks).astype(np.float32)
    return codes, d


def decode_ternary(g: Gguf, name: str) -> tuple[np.ndarray, float]:
    """A ternary tensor -> (T as int8 [ne1, ne0] with values in {-1,0,1}, per-tensor scale)."""
    t = g.tensors[name]
    if len(t.dims) != 2:
        raise RefError(f"{name}: ternary tensors must be 2-D, found dims {t.dims}")
    ne0, ne1 = t.dims
    n = ne0 * ne1
    raw = g.raw(name)
    if t.ggml_type == T_I2_S:
        if ne0 % 128:
            raise RefError(f"{name}: I2_S row length {ne0} is not a multiple of 128")
        codes = _i2s_codes(raw, n)
        scale = float(np.frombuffer(raw[n // 4 : n // 4 + 4], dtype="<f4")[0])
    elif t.ggml_type in (T_TQ2_0, T_TQ1_0):
        codes, d = (_tq2_codes if t.ggml_type == T_TQ2_0 else _tq1_codes)(raw, n // 256)
        nonzero = (codes != 1).any(axis=1)
        used = np.unique(d[nonzero])
        if len(used) > 1:
            raise RefError(
                f"{name}: {TYPE_NAMES[t.ggml_type]} blocks carry {len(used)} different scales; transformers' "
                "BitNet layers hold one scale per tensor, so this file cannot be represented there"
            )
        scale = float(used[0]) if len(used) else 0.0
        codes = codes.reshape(-1)
    else:
        raise RefError(f"{name}: expected a ternary tensor (I2_S, TQ2_0, TQ1_0), found {TYPE_NAMES.get(t.ggml_type, t.ggml_type)}")
    if (codes == 3).any():
        bad = int(np.argmax(codes == 3))
        raise RefError(f"{name}: element {bad} has the unused 2-bit code 3 (valid codes are 0, 1, 2)")
    if not np.isfinite(scale) or scale < 0:
        raise RefError(f"{name}: tensor scale {scale} is not a finite non-negative number")
    tern = codes.astype(np.int8) - 1
    return tern.reshape(ne1, ne0), scale


# ----------------------------------------------------------------------------------------------
# Model description from the GGUF
# ----------------------------------------------------------------------------------------------

LINEARS = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
]
NORMS = [
    ("attn_norm", "input_layernorm"),
    ("attn_sub_norm", "self_attn.attn_sub_norm"),
    ("ffn_norm", "post_attention_layernorm"),
    ("ffn_sub_norm", "mlp.ffn_sub_norm"),
]
ARCHES = ("bitnet-b1.58", "bitnet-25")


@dataclass
class Hparams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx: int
    rope_base: float
    rms_eps: float
    bos: int | None
    eos: int | None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head


@dataclass
class Weights:
    hp: Hparams
    embd: np.ndarray  # [n_vocab, n_embd] f32
    out_norm: np.ndarray
    layers: list[dict]  # per layer: norms (f32 vectors) and linears ((T int8 [out,in], scale))
    _head64: np.ndarray | None = None

    @property
    def head64(self) -> np.ndarray:
        """The tied head as float64 [n_embd, n_vocab], converted once."""
        if self._head64 is None:
            self._head64 = np.ascontiguousarray(self.embd.T, dtype=np.float64)
        return self._head64


def model_arch(g: Gguf, arches: tuple[str, ...]) -> str:
    """general.architecture of `g`, refused unless it is one of `arches`."""
    arch = g.metadata.get("general.architecture")
    if arch not in arches:
        raise RefError(f"{g.path}: general.architecture is {arch!r}; this reference runs {', '.join(arches)}")
    return arch


def need_key(g: Gguf, arch: str, key: str):
    """The value of metadata key `<arch>.<key>`, which must be present."""
    full = f"{arch}.{key}"
    if full not in g.metadata:
        raise RefError(f"{g.path}: metadata key {full} is missing")
    return g.metadata[full]


def need_tensor(g: Gguf, name: str) -> str:
    """`name`, checked to be a tensor of `g`."""
    if name not in g.tensors:
        raise RefError(f"{g.path}: tensor {name} is missing")
    return name


def hparams_common(g: Gguf, arch: str, n_vocab: int) -> dict:
    """The hyper-parameters both references read the same way from `<arch>.*` and
    `tokenizer.ggml.*` (keyword arguments of Hparams and of hf_embed_reference's EHparams)."""
    md = g.metadata

    def token(key):
        full = f"tokenizer.ggml.{key}"
        return int(md[full]) if full in md else None

    n_head = int(need_key(g, arch, "attention.head_count"))
    return dict(
        arch=arch,
        n_vocab=n_vocab,
        n_embd=int(need_key(g, arch, "embedding_length")),
        n_layer=int(need_key(g, arch, "block_count")),
        n_head=n_head,
        n_head_kv=int(md.get(f"{arch}.attention.head_count_kv", n_head)),
        n_ff=int(need_key(g, arch, "feed_forward_length")),
        n_ctx=int(need_key(g, arch, "context_length")),
        rope_base=float(md.get(f"{arch}.rope.freq_base", 10000.0)),
        rms_eps=float(need_key(g, arch, "attention.layer_norm_rms_epsilon")),
        bos=token("bos_token_id"),
        eos=token("eos_token_id"),
    )


def linear_shapes(n_embd: int, q_dim: int, kv_dim: int, n_ff: int) -> dict[str, tuple[int, int]]:
    """[out, in] of each projection of a block whose attention is `q_dim` wide (n_head · head_dim)
    with `kv_dim`-wide K and V, and an `n_ff`-wide gated FFN."""
    return {
        "attn_q": (q_dim, n_embd),
        "attn_k": (kv_dim, n_embd),
        "attn_v": (kv_dim, n_embd),
        "attn_output": (n_embd, q_dim),
        "ffn_gate": (n_ff, n_embd),
        "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
    }


def load_layers(g: Gguf, n_layer: int, norm_len: dict[str, int], shapes: dict[str, tuple[int, int]]) -> list[dict]:
    """Per layer: each `norm_len` key as an f32 vector of that length, each `shapes` key as a ternary
    linear (T int8 [out, in], scale) of that shape; a missing tensor or another shape is an error."""
    layers = []
    for i in range(n_layer):
        layer = {}
        for key, length in norm_len.items():
            v = decode_float(g, need_tensor(g, f"blk.{i}.{key}.weight"))
            if v.shape != (length,):
                raise RefError(f"blk.{i}.{key}.weight has shape {v.shape}, expected ({length},)")
            layer[key] = v
        for key, shape in shapes.items():
            tern, scale = decode_ternary(g, need_tensor(g, f"blk.{i}.{key}.weight"))
            if tern.shape != shape:
                raise RefError(f"blk.{i}.{key}.weight is [out {tern.shape[0]}, in {tern.shape[1]}], expected {shape}")
            layer[key] = (tern, scale)
        layers.append(layer)
    return layers


def load_weights(g: Gguf) -> Weights:
    md = g.metadata
    arch = model_arch(g, ARCHES)

    def need(key):
        return need_key(g, arch, key)

    embd = decode_float(g, need_tensor(g, "token_embd.weight"))
    n_embd = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    hp = Hparams(**hparams_common(g, arch, embd.shape[0]))
    if embd.shape[1] != n_embd:
        raise RefError(f"token_embd.weight has rows of {embd.shape[1]}, embedding_length is {n_embd}")
    if f"{arch}.vocab_size" in md and int(md[f"{arch}.vocab_size"]) != hp.n_vocab:
        raise RefError(f"{arch}.vocab_size = {md[f'{arch}.vocab_size']} but token_embd.weight has {hp.n_vocab} rows")
    if n_embd % n_head or n_head % hp.n_head_kv:
        raise RefError(f"head counts {n_head}/{hp.n_head_kv} do not divide embedding_length {n_embd}")
    rope_dim = int(md.get(f"{arch}.rope.dimension_count", hp.head_dim))
    if rope_dim != hp.head_dim:
        raise RefError(f"rope.dimension_count {rope_dim} != head dim {hp.head_dim}: partial RoPE is not supported here")
    if "output.weight" in g.tensors:
        print("note: output.weight present but ignored; BitNet b1.58 ties the head to token_embd", file=sys.stderr)

    kv_dim = hp.head_dim * hp.n_head_kv
    shapes = linear_shapes(n_embd, n_embd, kv_dim, hp.n_ff)
    norm_len = {"attn_norm": n_embd, "attn_sub_norm": n_embd, "ffn_norm": n_embd, "ffn_sub_norm": hp.n_ff}
    layers = load_layers(g, hp.n_layer, norm_len, shapes)
    out_norm = decode_float(g, need_tensor(g, "output_norm.weight"))
    return Weights(hp, embd, out_norm, layers)


# ----------------------------------------------------------------------------------------------
# Plain numpy forward pass (docs/model.md), used only as a cross-check
# ----------------------------------------------------------------------------------------------


def np_rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    ms = np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)
    return (x / np.sqrt(ms + eps)).astype(np.float32) * w


def np_bitlinear(
    x: np.ndarray, tern: np.ndarray, scale: float, quantize: bool = True, dither: np.random.Generator | None = None
) -> np.ndarray:
    """Per-row absmax int8 quantization, exact integer dot with the ternary codes, then
    (acc / s) * scale (docs/model.md#activation-quantization,
    docs/model.md#the-ternary-matrix-product). `dither` multiplies the input by
    (1 + 2^-22·N(0,1)) first: a stand-in for another correct implementation whose float rounding
    differs by a couple of ulps."""
    if dither is not None:
        x = (x * (1.0 + DITHER_EPS * dither.standard_normal(x.shape))).astype(np.float32)
    if not quantize:
        return ((x.astype(np.float64) @ tern.T.astype(np.float64)) * scale).astype(np.float32)
    amax = np.maximum(np.float32(1e-5), np.abs(x).max(axis=-1, keepdims=True))
    s = (np.float32(127.0) / amax).astype(np.float32)
    q = np.clip(np.rint(x * s), -128, 127)  # rint: round half to even, like nearest_int
    acc = q.astype(np.float64) @ tern.T.astype(np.float64)  # integers, exact in float64
    return ((acc / s.astype(np.float64)) * scale).astype(np.float32)


def np_rope(x: np.ndarray, positions: np.ndarray, base: float, interleaved: bool = False) -> np.ndarray:
    """NeoX rotation on [T, heads, d]: pairs (i, i + d/2). `interleaved` (pairs 2i, 2i+1) exists
    only as a deliberately wrong variant for the mutant check."""
    d = x.shape[-1]
    half = d // 2
    inv = base ** (-np.arange(half, dtype=np.float64) * 2.0 / d)
    ang = positions[:, None].astype(np.float64) * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    if interleaved:
        a, b = x[..., 0::2].astype(np.float64), x[..., 1::2].astype(np.float64)
        out = np.empty(x.shape, dtype=np.float64)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out.astype(np.float32)
    a, b = x[..., :half].astype(np.float64), x[..., half:].astype(np.float64)
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1).astype(np.float32)


DITHER_EPS = 2.0**-22
CI_COSINE = 0.999  # the threshold of the CI check (issue 2, Must show 2)

# Deliberately wrong variants of the forward pass, each of which the CI check (cosine >= 0.999 on
# every stored row) must reject. `no_activation_quant` is listed but not required: skipping the
# int8 step moves logits by about the same amount as the rounding flips that any two correct
# engines already differ by (see README), so no end-to-end tolerance can separate the two.
MUTANTS = {
    "silu_instead_of_relu2": ({"act": "silu"}, True),
    "interleaved_rope": ({"interleaved": True}, True),
    "no_sub_norms": ({"sub_norms": False}, True),
    "gqa_head_modulo": ({"gqa": "modulo"}, True),
    "rope_base_10000": ({"rope_base": 10000.0}, True),
    "i2s_groups_lsb_first": ({"i2s_swap": True}, True),
    "no_activation_quant": ({"quantize": False}, False),
}


def perturbation(run: int) -> dict:
    """The stand-in for "another correct engine" used by the robustness checks: every quantizer
    input jittered by ~2 ulps, and on even runs also keys/values rounded to f16 as llama.cpp (and
    this project's engine) store them."""
    var = {"dither": np.random.default_rng(1000 + run)}
    if run % 2 == 0:
        var["kv_f16"] = True
    return var


def _swap_groups(tern: np.ndarray) -> np.ndarray:
    """Re-read a ternary matrix as if the 2-bit groups of every I2_S byte were LSB-first."""
    rows, cols = tern.shape
    return tern.reshape(rows, cols // 128, 4, 32)[:, :, ::-1, :].reshape(rows, cols)


def np_forward(
    w: Weights, tokens: list[int], last_only: bool = False, variant: dict | None = None, cache: list | None = None
) -> np.ndarray:
    """Logits for `tokens` (rows: positions; only the last if `last_only`). With `cache` (a list,
    empty at the start of a sequence) earlier keys/values are reused and extended."""
    v = variant or {}
    hp = w.hp
    quant = v.get("quantize", True)
    base = v.get("rope_base", hp.rope_base)
    inter = v.get("interleaved", False)

    def lin(x, wt):
        tern, scale = wt
        return np_bitlinear(x, _swap_groups(tern) if v.get("i2s_swap") else tern, scale, quant, v.get("dither"))

    def sub(x, wn):
        return np_rmsnorm(x, wn, hp.rms_eps) if v.get("sub_norms", True) else x

    T = len(tokens)
    past = cache[0][0].shape[0] if cache else 0
    hd = hp.head_dim
    rep = hp.n_head // hp.n_head_kv
    pos = np.arange(past, past + T)
    x = w.embd[np.asarray(tokens)].astype(np.float32)
    # query t (absolute past+t) sees keys 0..past+t
    mask = np.where(np.arange(past + T)[None, :] > pos[:, None], -np.inf, 0.0)
    for li, L in enumerate(w.layers):
        h = np_rmsnorm(x, L["attn_norm"], hp.rms_eps)
        q = lin(h, L["attn_q"]).reshape(T, hp.n_head, hd)
        k = lin(h, L["attn_k"]).reshape(T, hp.n_head_kv, hd)
        val = lin(h, L["attn_v"]).reshape(T, hp.n_head_kv, hd)
        q, k = np_rope(q, pos, base, inter), np_rope(k, pos, base, inter)
        if v.get("kv_f16"):  # llama.cpp-style f16 KV cache
            k, val = k.astype(np.float16).astype(np.float32), val.astype(np.float16).astype(np.float32)
        if cache is not None:
            if len(cache) <= li:
                cache.append([k, val])
            else:
                cache[li] = [np.concatenate([cache[li][0], k]), np.concatenate([cache[li][1], val])]
            k, val = cache[li]
        out = np.empty((T, hp.n_head, hd), dtype=np.float32)
        for head in range(hp.n_head):
            kvh = head % hp.n_head_kv if v.get("gqa") == "modulo" else head // rep
            sc = (q[:, head, :].astype(np.float64) @ k[:, kvh, :].T.astype(np.float64)) / np.sqrt(hd) + mask
            sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
            sc /= sc.sum(axis=-1, keepdims=True)
            out[:, head, :] = (sc @ val[:, kvh, :].astype(np.float64)).astype(np.float32)
        a = sub(out.reshape(T, hp.n_embd), L["attn_sub_norm"])
        x = x + lin(a, L["attn_output"])
        h2 = np_rmsnorm(x, L["ffn_norm"], hp.rms_eps)
        gate = lin(h2, L["ffn_gate"])
        up = lin(h2, L["ffn_up"])
        if v.get("act") == "silu":
            f = (gate / (1.0 + np.exp(-gate.astype(np.float64)))).astype(np.float32) * up
        else:
            f = np.square(np.maximum(gate, 0)) * up
        f = sub(f, L["ffn_sub_norm"])
        x = x + lin(f, L["ffn_down"])
    if last_only:
        x = x[-1:]
    hn = np_rmsnorm(x, w.out_norm, hp.rms_eps)
    if v.get("head_f16"):
        hn = hn.astype(np.float16).astype(np.float32)
    return (hn.astype(np.float64) @ w.head64).astype(np.float32)


def np_greedy(w: Weights, tokens: list[int], steps: int, variant: dict | None = None) -> list[int]:
    """Greedy decoding with the numpy model's own KV cache."""
    cache: list = []
    row = np_forward(w, tokens, last_only=True, variant=variant, cache=cache)[0]
    out = []
    for step in range(steps):
        out.append(int(np.argmax(row)))
        if step + 1 < steps:
            row = np_forward(w, out[-1:], last_only=True, variant=variant, cache=cache)[0]
    return out


def first_difference(a: list[int], b: list[int]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


# ----------------------------------------------------------------------------------------------
# transformers model
# ----------------------------------------------------------------------------------------------


def check_versions(allow_other: bool) -> dict:
    from importlib.metadata import version

    found = {name: version(name) for name in PINNED}
    bad = {k: (found[k], v) for k, v in PINNED.items() if found[k] != v}
    if bad and not allow_other:
        lines = ", ".join(f"{k} {have} (pinned {want})" for k, (have, want) in bad.items())
        raise RefError(
            f"installed versions differ from the pins: {lines}. Install the pins with "
            "`target/pyenv/bin/pip install -r xtask/py/requirements-reference.txt` or pass --allow-other-versions"
        )
    found["python"] = platform.python_version()
    return found


def pack_hf(tern: np.ndarray) -> np.ndarray:
    """Ternary [out, in] -> HF packed uint8 [out/4, in] (docs/formats.md#hugging-face-packed-weights): bit pair k of packed row i
    holds logical row k*(out/4) + i as code value+1."""
    out = tern.shape[0]
    if out % 4:
        raise RefError(f"a linear with {out} output rows cannot be packed 4 rows per byte")
    r = out // 4
    codes = (tern.astype(np.int16) + 1).astype(np.uint8)
    packed = np.zeros((r, tern.shape[1]), dtype=np.uint8)
    for k in range(4):
        packed |= codes[k * r : (k + 1) * r] << (2 * k)
    return packed


def quiet_transformers() -> None:
    """Silence transformers' notices ("no GPU") and progress bars."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def hf_config_common(hp) -> dict:
    """The transformers config arguments that a model's GGUF hyper-parameters give the same way
    for every architecture here (b1.58 Hparams and the embedding models' EHparams)."""
    return dict(
        vocab_size=hp.n_vocab,
        hidden_size=hp.n_embd,
        intermediate_size=hp.n_ff,
        num_hidden_layers=hp.n_layer,
        num_attention_heads=hp.n_head,
        num_key_value_heads=hp.n_head_kv,
        max_position_embeddings=hp.n_ctx,
        rms_norm_eps=hp.rms_eps,
        attention_bias=False,
        tie_word_embeddings=True,
        bos_token_id=hp.bos,
        eos_token_id=hp.eos,
    )


def build_hf_model(w: Weights, linear_class: str, workdir: Path):
    """Write an HF checkpoint (config.json + model.safetensors, packed ternary weights) and load it
    with BitNetForCausalLM.from_pretrained, so the bitnet quantizer swaps in its W1.58A8 layers."""
    import torch
    from safetensors.torch import save_file
    from transformers import BitNetConfig, BitNetForCausalLM
    from transformers.integrations.bitnet import AutoBitLinear, BitLinear

    quiet_transformers()
    hp = w.hp
    cfg = BitNetConfig(
        **hf_config_common(hp),
        hidden_act="relu2",
        rope_parameters={"rope_type": "default", "rope_theta": hp.rope_base},
    )
    cfg.quantization_config = {
        "quant_method": "bitnet",
        "linear_class": linear_class,
        "quantization_mode": "offline",
        "use_rms_norm": False,
    }
    sd = {
        "model.embed_tokens.weight": torch.from_numpy(w.embd.copy()),
        "model.norm.weight": torch.from_numpy(w.out_norm.copy()),
    }
    for i, L in enumerate(w.layers):
        pre = f"model.layers.{i}."
        for gkey, hkey in NORMS:
            sd[pre + hkey + ".weight"] = torch.from_numpy(L[gkey].copy())
        for gkey, hkey in LINEARS:
            tern, scale = L[gkey]
            sd[pre + hkey + ".weight"] = torch.from_numpy(pack_hf(tern))
            # AutoBitLinear (offline) multiplies its output by weight_scale; BitLinear divides by it.
            ws = scale if linear_class == "autobitlinear" else 1.0 / scale
            sd[pre + hkey + ".weight_scale"] = torch.tensor([ws], dtype=torch.float32)
    ckpt = workdir / f"hf-{linear_class}"
    ckpt.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(ckpt)
    save_file(sd, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    model, info = BitNetForCausalLM.from_pretrained(
        ckpt, dtype=torch.float32, attn_implementation="eager", output_loading_info=True
    )
    model.eval()
    # lm_head.weight is tied to the embedding, so it is legitimately absent from the checkpoint.
    problems = {k: sorted(v) for k, v in info.items() if v}
    if set(problems.get("missing_keys", [])) <= {"lm_head.weight"}:
        problems.pop("missing_keys", None)
    if problems:
        raise RefError(f"transformers did not load the checkpoint cleanly: {problems}")

    # The W1.58A8 path must really be in place, with exactly the weights from the file.
    want = AutoBitLinear if linear_class == "autobitlinear" else BitLinear
    for i, L in enumerate(w.layers):
        layer = model.model.layers[i]
        for gkey, hkey in LINEARS:
            mod = layer.get_submodule(hkey)
            if not isinstance(mod, want):
                raise RefError(f"layer {i} {hkey} is {type(mod).__name__}, not {want.__name__}: quantizer not applied")
            tern, scale = L[gkey]
            if linear_class == "autobitlinear":
                got = mod.weight.detach().numpy()
                ok = getattr(mod, "online_quant", True) is False and np.array_equal(got, tern.astype(np.float32))
            else:
                ok = np.array_equal(mod.weight.detach().numpy(), pack_hf(tern))
            if not ok:
                raise RefError(f"layer {i} {hkey}: loaded weights differ from the GGUF's ternary values")
    if type(model.lm_head) is not torch.nn.Linear:
        raise RefError(f"lm_head became {type(model.lm_head).__name__}; the head must stay a plain float linear")
    if model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr():
        raise RefError("lm_head is not tied to embed_tokens")
    if model.config.hidden_act != "relu2":
        raise RefError("hidden_act is not relu2")
    return model


def hf_teacher_forced(model, tokens: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return out.logits[0].float().numpy()


def hf_greedy(model, tokens: list[int], steps: int) -> tuple[list[int], list[np.ndarray]]:
    """Greedy decode with transformers' KV cache: prompt in one batch, then one token per call.
    Returns the tokens and, per step, the logits row that chose it."""
    import torch

    rows = []
    gen = []
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=True)
        cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        for step in range(steps):
            row = out.logits[0, -1].float().numpy()
            rows.append(row)
            nxt = int(np.argmax(row))
            gen.append(nxt)
            if step + 1 == steps:
                break
            out = model(input_ids=torch.tensor([[nxt]], dtype=torch.long), cache=cache, use_cache=True)
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
    if cache is None or cache.get_seq_length() != len(tokens) + steps - 1:
        raise RefError("the KV cache did not grow as expected during greedy decoding")
    return gen, rows


# ----------------------------------------------------------------------------------------------
# Comparisons and output
# ----------------------------------------------------------------------------------------------


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float(a64 @ b64 / (np.linalg.norm(a64) * np.linalg.norm(b64)))


def top2(row: np.ndarray) -> tuple[int, float, float]:
    i = int(np.argmax(row))
    rest = row.copy()
    rest[i] = -np.inf
    return i, float(row[i]), float(row[i] - rest.max())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_data_sha256(g: Gguf) -> str:
    h = hashlib.sha256()
    for name in g.order:
        h.update(g.raw(name))
    return h.hexdigest()


def parse_positions(spec: str, n: int) -> list[int]:
    if spec == "all":
        return list(range(n))
    out = []
    for part in spec.split(","):
        p = int(part)
        if p < 0:
            p += n
        if not 0 <= p < n:
            raise RefError(f"--store-positions: position {part} is outside the prompt (0..{n - 1})")
        out.append(p)
    return sorted(set(out))


@dataclass
class Reference:
    """transformers' answers for one prompt."""

    logits: np.ndarray  # [n_prompt, n_vocab] f32, teacher-forced
    greedy: list[int]
    greedy_rows: list[np.ndarray]  # the row that chose each greedy token (KV-cache decode)


def top_candidates(row: np.ndarray, k: int) -> tuple[list[int], list[float]]:
    idx = np.argsort(-row.astype(np.float64), kind="stable")[:k]
    return [int(i) for i in idx], [float(row[i]) for i in idx]


def check_agreement(w: Weights, prompt: list[int], steps: int, ref: Reference, model_b, model) -> dict:
    """Independent implementations of the same math must reproduce transformers."""
    n = len(prompt)
    logits_b = hf_teacher_forced(model_b, prompt)
    greedy_b, _ = hf_greedy(model_b, prompt, steps)
    full = hf_teacher_forced(model, prompt + ref.greedy[:-1])  # one uncached batch
    np_logits = np_forward(w, prompt)
    np_head16 = np_forward(w, prompt, variant={"head_f16": True})
    cos_np = [cosine(ref.logits[p], np_logits[p]) for p in range(n)]
    return {
        "numpy_min_cosine": min(cos_np),
        "numpy_max_abs_diff": float(np.abs(ref.logits - np_logits).max()),
        "numpy_positions_within_1e-9": sum(c > 1 - 1e-9 for c in cos_np),
        "numpy_greedy_equal": np_greedy(w, prompt, steps) == ref.greedy,
        "bitlinear_min_cosine": min(cosine(ref.logits[p], logits_b[p]) for p in range(n)),
        "bitlinear_greedy_equal": greedy_b == ref.greedy,
        "cache_vs_uncached_min_cosine": min(cosine(ref.greedy_rows[s], full[n - 1 + s]) for s in range(steps)),
        "cache_vs_uncached_greedy_equal": [int(np.argmax(full[n - 1 + s])) for s in range(steps)] == ref.greedy,
        # ggml rounds the hidden state to f16 before the F16 head: a legitimate difference.
        "numpy_f16_head_input_min_cosine": min(cosine(np_logits[p], np_head16[p]) for p in range(n)),
    }


def check_robustness(w: Weights, prompt: list[int], steps: int, ref: Reference, runs: int, cand: list[list[int]]) -> dict:
    """How a correct engine with different float rounding fares against this fixture."""
    n = len(prompt)
    per_run = []
    drift = 0.0
    forced_mismatch_steps: set[int] = set()
    for r in range(runs):
        tf = np_forward(w, prompt, variant=perturbation(r))
        free = np_greedy(w, prompt, steps, variant=perturbation(r))
        forced = np_forward(w, prompt + ref.greedy[:-1], variant=perturbation(r))[n - 1 :]
        for s in range(steps):
            c = cand[s]
            drift = max(drift, float(np.abs(forced[s][c] - ref.greedy_rows[s][c]).max()))
            if int(np.argmax(forced[s])) != ref.greedy[s]:
                forced_mismatch_steps.add(s)
        per_run.append({
            "kv_f16": bool(perturbation(r).get("kv_f16")),
            "min_cosine": min(cosine(ref.logits[p], tf[p]) for p in range(n)),
            "first_free_greedy_difference": first_difference(free, ref.greedy),
        })
    return {
        "runs": runs,
        "dither_eps": DITHER_EPS,
        "min_cosine": min(x["min_cosine"] for x in per_run),
        "free_greedy_stable": all(x["first_free_greedy_difference"] is None for x in per_run),
        "forced_argmax_mismatch_steps": sorted(forced_mismatch_steps),
        "max_candidate_logit_drift": drift,
        "per_run": per_run,
    }


def check_mutants(w: Weights, prompt: list[int], steps: int, ref: Reference) -> dict:
    n = len(prompt)
    out = {}
    for name, (var, required) in MUTANTS.items():
        ml = np_forward(w, prompt, variant=var)
        cs = [cosine(ref.logits[p], ml[p]) for p in range(n)]
        out[name] = {
            "required": required,
            "min_cosine": min(cs),
            "positions_below_0.999": sum(c < CI_COSINE for c in cs),
            "first_free_greedy_difference": first_difference(np_greedy(w, prompt, steps, variant=var), ref.greedy),
        }
    return out


def run_reference(
    gguf_path: Path,
    out_json: Path,
    prompt: list[int],
    steps: int,
    store: str,
    allow_other_versions: bool,
    gen_model: dict | None = None,
    robust_runs: int = 16,
    top_k: int = 8,
) -> dict:
    t0 = time.time()
    versions = check_versions(allow_other_versions)
    import torch

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)

    g = read_gguf(gguf_path)
    w = load_weights(g)
    hp = w.hp
    if not prompt:
        raise RefError("--prompt-tokens is empty")
    bad = [t for t in prompt if not 0 <= t < hp.n_vocab]
    if bad:
        raise RefError(f"prompt token ids {bad} are outside the vocabulary (0..{hp.n_vocab - 1})")
    if len(prompt) + steps > hp.n_ctx:
        raise RefError(f"prompt ({len(prompt)}) + steps ({steps}) exceeds context_length {hp.n_ctx}")
    positions = parse_positions(store, len(prompt))
    timings = {"read_gguf": time.time() - t0}

    t = time.time()
    with tempfile.TemporaryDirectory(prefix="hf-ref-") as tmp:
        model = build_hf_model(w, "autobitlinear", Path(tmp))
        model_b = build_hf_model(w, "bitlinear", Path(tmp))
        timings["build_hf_models"] = time.time() - t
        t = time.time()
        ref = Reference(hf_teacher_forced(model, prompt), *hf_greedy(model, prompt, steps))
        timings["hf_forward_and_greedy"] = time.time() - t
        t = time.time()
        agreement = check_agreement(w, prompt, steps, ref, model_b, model)
        timings["agreement"] = time.time() - t
    cand = [top_candidates(r, top_k) for r in ref.greedy_rows]
    t = time.time()
    robustness = check_robustness(w, prompt, steps, ref, robust_runs, [c[0] for c in cand])
    timings["robustness"] = time.time() - t
    t = time.time()
    mutants = check_mutants(w, prompt, steps, ref)
    timings["mutants"] = time.time() - t

    # Cosine below the CI threshold means a mis-configured reference; differing greedy tokens only
    # mean the trajectory has near-ties that rounding can flip (recorded, not fatal).
    failed = [f"{k} = {v:.6f}" for k, v in agreement.items() if k.endswith("min_cosine") and v < CI_COSINE]
    unstable_greedy_refs = [k for k, v in agreement.items() if k.endswith("greedy_equal") and not v]
    if robustness["min_cosine"] < CI_COSINE:
        failed.append(f"a perturbed run reached cosine {robustness['min_cosine']:.6f} < {CI_COSINE}")
    blind = [k for k, m in mutants.items() if m["required"] and m["positions_below_0.999"] == 0]
    if blind:
        failed.append("wrong variants that pass the cosine check: " + ", ".join(blind))
    tie_tolerance = 2.0 * robustness["max_candidate_logit_drift"]

    n = len(prompt)
    stem = out_json.name[: -len(".json")] if out_json.name.endswith(".json") else out_json.name
    bin_path = out_json.with_name(stem + ".logits.f16")
    rows16 = ref.logits[positions].astype("<f2")
    if not np.isfinite(rows16).all():
        raise RefError("logits overflow float16; use smaller weights")
    per_pos = [top2(ref.logits[p]) for p in range(n)]
    per_step = [top2(r) for r in ref.greedy_rows]
    doc = {
        "format": FORMAT_ID,
        "generator": {
            "script": "xtask/py/hf_reference.py",
            "versions": versions,
            "model_class": "transformers.BitNetForCausalLM",
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"},
            "dtype": "float32",
            "device": "cpu",
            "attn_implementation": "eager",
        },
        "gguf": {
            "file_name": gguf_path.name,
            "size": gguf_path.stat().st_size,
            "sha256": sha256_file(gguf_path),
            "tensor_data_sha256": tensor_data_sha256(g),
            "gen_model": gen_model,
        },
        "model": {
            "arch": hp.arch, "n_vocab": hp.n_vocab, "n_embd": hp.n_embd, "n_layer": hp.n_layer,
            "n_head": hp.n_head, "n_head_kv": hp.n_head_kv, "n_ff": hp.n_ff, "n_ctx": hp.n_ctx,
            "rope_freq_base": hp.rope_base, "rms_norm_eps": hp.rms_eps,
        },
        "prompt_tokens": prompt,
        "prompt": {
            "argmax": [p[0] for p in per_pos],
            "top1_logit": [p[1] for p in per_pos],
            "top1_margin": [p[2] for p in per_pos],
        },
        "logits": {
            "file": bin_path.name,
            "dtype": "f16",
            "byte_order": "little",
            "n_vocab": hp.n_vocab,
            "positions": positions,
            "sha256": hashlib.sha256(rows16.tobytes()).hexdigest(),
        },
        "greedy": {
            "steps": steps,
            "tokens": ref.greedy,
            "top1_margin": [s[2] for s in per_step],
            "candidates": [c[0] for c in cand],
            "candidate_logits": [c[1] for c in cand],
            "tie_tolerance": tie_tolerance,
            "free_running_stable": robustness["free_greedy_stable"] and not unstable_greedy_refs,
        },
        "agreement": agreement,
        "robustness": robustness,
        "mutants": mutants,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    bin_path.write_bytes(rows16.tobytes())
    out_json.write_text(json.dumps(doc, indent=1) + "\n")

    ambiguous = sum(m < tie_tolerance for m in doc["greedy"]["top1_margin"])
    mutant_summary = ", ".join(
        f"{k} {m['min_cosine']:.4f}/{m['first_free_greedy_difference']}" for k, m in mutants.items()
    )
    print(
        f"{out_json}: {n} positions ({len(positions)} rows stored), greedy {steps} steps\n"
        f"  agreement: numpy cos min {agreement['numpy_min_cosine']:.9f} "
        f"({agreement['numpy_positions_within_1e-9']}/{n} within 1e-9), "
        f"bitlinear cos min {agreement['bitlinear_min_cosine']:.9f}, "
        f"cache/uncached cos min {agreement['cache_vs_uncached_min_cosine']:.9f}; greedy equal: "
        f"numpy {agreement['numpy_greedy_equal']} bitlinear {agreement['bitlinear_greedy_equal']} "
        f"uncached {agreement['cache_vs_uncached_greedy_equal']}\n"
        f"  robustness ({robust_runs} perturbed runs): cos min {robustness['min_cosine']:.6f}, free-running greedy "
        f"stable {doc['greedy']['free_running_stable']}, forced argmax mismatches at steps "
        f"{robustness['forced_argmax_mismatch_steps']}, tie tolerance {tie_tolerance:.4g} "
        f"({ambiguous} of {steps} steps have a smaller margin)\n"
        f"  wrong variants (min cos / first greedy difference): {mutant_summary}",
        file=sys.stderr,
    )
    if failed:
        raise RefError("checks failed: " + "; ".join(failed))
    return doc


# ----------------------------------------------------------------------------------------------
# Fixture set
# ----------------------------------------------------------------------------------------------


def long_prompt() -> list[int]:
    """64 tokens: BOS, ids spread over the whole vocabulary (incl. both ends and a special),
    from a fixed multiplicative walk so the list is reproducible without being stored."""
    ids = [128000]
    x = 1
    while len(ids) < 61:
        x = (x * 48271) % 2147483647
        ids.append(x % 128000)
    ids += [0, 127999, 128009]
    return ids


SHORT_PROMPT = [128000, 9906, 11, 1917, 0, 358, 1097, 264]  # "<|begin_of_text|>Hello, world! I am a"


def candidate_prompts(length: int, seed: int):
    """BOS followed by random ordinary token ids: the candidates a stable case is chosen from."""
    rng = np.random.default_rng(seed)
    while True:
        yield [128000] + [int(x) for x in rng.integers(0, 128000, length - 1)]


def stable_under_perturbation(w: Weights, prompt: list[int], steps: int, runs: int) -> bool:
    """Free-running greedy gives the same tokens in every perturbed run (early exit)."""
    base = np_greedy(w, prompt, steps)
    return all(np_greedy(w, prompt, steps, variant=perturbation(r)) == base for r in range(runs))


# Each case: which synthetic model (cargo xtask gen-model arguments), which prompt, which prompt
# positions keep their full logits row. "search" cases take the first candidate prompt whose
# 32-step greedy continuation survives every perturbed run (see README: why free-running greedy
# comparisons need such cases).
FIXTURE_CASES = [
    {"name": "tiny-s1-short", "seed": 1, "prompt": SHORT_PROMPT, "store": "all"},
    {"name": "tiny-s1-long", "seed": 1, "prompt": long_prompt(), "store": "1,15,31,47,62,63"},
    {"name": "tiny-s1-stable", "seed": 1, "search": {"length": 8, "seed": 11}, "store": "-1"},
    {"name": "tiny-s2-stable", "seed": 2, "search": {"length": 8, "seed": 12}, "store": "-1"},
]
OTHER_FORMATS = ("tq2_0", "tq1_0")


def same_weights(a: Weights, b: Weights) -> bool:
    if not (np.array_equal(a.embd, b.embd) and np.array_equal(a.out_norm, b.out_norm)):
        return False
    for la, lb in zip(a.layers, b.layers):
        for key, va in la.items():
            vb = lb[key]
            if isinstance(va, tuple):
                if va[1] != vb[1] or not np.array_equal(va[0], vb[0]):
                    return False
            elif not np.array_equal(va, vb):
                return False
    return True


def make_fixtures(out_dir: Path, steps: int, allow_other_versions: bool, workspace: Path, max_candidates: int) -> None:
    check_versions(allow_other_versions)
    with tempfile.TemporaryDirectory(prefix="hf-ref-models-") as tmp:
        made: dict[tuple, Path] = {}

        def model_file(seed: int, fmt: str) -> Path:
            if (seed, fmt) not in made:
                path = Path(tmp) / f"tiny-{fmt}-s{seed}.gguf"
                cmd = ["cargo", "xtask", "gen-model", "--preset", "tiny", "--format", fmt,
                       "--seed", str(seed), "--out", str(path)]
                print("+ " + " ".join(cmd), file=sys.stderr)
                subprocess.run(cmd, cwd=workspace, check=True)
                made[(seed, fmt)] = path
            return made[(seed, fmt)]

        for case in FIXTURE_CASES:
            path = model_file(case["seed"], "i2_s")
            w = load_weights(read_gguf(path))
            formats = ["i2_s"]
            for fmt in OTHER_FORMATS:
                if not same_weights(w, load_weights(read_gguf(model_file(case["seed"], fmt)))):
                    raise RefError(f"seed {case['seed']}: the {fmt} file does not decode to the i2_s file's weights")
                formats.append(fmt)
            gen = {"preset": "tiny", "format": "i2_s", "seed": case["seed"], "same_weights_formats": formats}
            out = out_dir / f"{case['name']}.json"
            if "prompt" in case:
                run_reference(path, out, case["prompt"], steps, case["store"], allow_other_versions, gen)
                continue
            tried = 0
            for prompt in candidate_prompts(case["search"]["length"], case["search"]["seed"]):
                tried += 1
                if tried > max_candidates:
                    raise RefError(f"{case['name']}: no stable prompt among {max_candidates} candidates")
                if not stable_under_perturbation(w, prompt, steps, 16):
                    continue
                print(f"{case['name']}: candidate {tried} is stable under perturbation", file=sys.stderr)
                gen["search"] = dict(case["search"], candidate=tried)
                doc = run_reference(path, out, prompt, steps, case["store"], allow_other_versions, gen)
                if doc["greedy"]["free_running_stable"]:
                    break


def main(argv: list[str]) -> int:
    workspace = Path(__file__).resolve().parents[2]
    if argv[:1] == ["make-fixtures"]:
        ap = argparse.ArgumentParser(prog="hf_reference.py make-fixtures")
        ap.add_argument("--out-dir", type=Path, default=workspace / "crates/model/tests/data/reference")
        ap.add_argument("--steps", type=int, default=32)
        ap.add_argument("--max-candidates", type=int, default=400)
        ap.add_argument("--allow-other-versions", action="store_true")
        a = ap.parse_args(argv[1:])
        make_fixtures(a.out_dir, a.steps, a.allow_other_versions, workspace, a.max_candidates)
        return 0
    ap = argparse.ArgumentParser(prog="hf_reference.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out_json", type=Path)
    ap.add_argument("--prompt-tokens", default=",".join(map(str, SHORT_PROMPT)))
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--store-positions", default="all", help="'all' or comma-separated prompt positions (negative = from the end)")
    ap.add_argument("--robust-runs", type=int, default=16, help="perturbed numpy runs for the robustness check")
    ap.add_argument("--allow-other-versions", action="store_true")
    a = ap.parse_args(argv)
    try:
        prompt = [int(t) for t in a.prompt_tokens.split(",") if t.strip()]
    except ValueError:
        raise RefError(f"--prompt-tokens must be comma-separated integers, got {a.prompt_tokens!r}") from None
    if a.steps < 1:
        raise RefError("--steps must be at least 1")
    run_reference(a.gguf, a.out_json, prompt, a.steps, a.store_positions, a.allow_other_versions,
                  robust_runs=a.robust_runs)
    return 0


def run_cli(main, prog: str) -> None:
    """Exit with main(argv)'s status; a RefError or a failed subprocess becomes a one-line error."""
    try:
        sys.exit(main(sys.argv[1:]))
    except RefError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except subprocess.CalledProcessError as e:
        print(f"{prog}: error: {' '.join(e.cmd)} failed with exit code {e.returncode}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_cli(main, "hf_reference")
