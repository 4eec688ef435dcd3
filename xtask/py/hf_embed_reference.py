#!/usr/bin/env python3
"""Golden embeddings for a BitNet embedding GGUF (arch qwen3 or gemma3), computed by Hugging Face
transformers' Qwen3Model / Gemma3TextModel with transformers' own W1.58A8 BitNet linear.

What it does
    Reads the GGUF with the parser of xtask/py/hf_reference.py (independent of crates/gguf), builds
    a Hugging Face checkpoint from it and loads it with ``Qwen3Model.from_pretrained`` or
    ``Gemma3TextModel.from_pretrained`` through the ``bitnet`` quantizer with
    ``linear_class = autobitlinear, quantization_mode = offline, use_rms_norm = true``: every
    q/k/v/o/gate/up/down linear becomes transformers' ``AutoBitLinear`` holding the file's ternary
    values and scale, whose own RMSNorm (weight = the file's ``*_norm_in``) runs before the
    per-token absmax int8 activation quantization (round half to even, clamp -128..127). That is
    BitNet's per-projection norm, so no layer of the reference is written here. float32, CPU,
    eager attention, causal, no cache. The last hidden state (after the final norm) is pooled per
    ``<arch>.pooling_type`` and L2-normalised.

    Checks recorded with every fixture (crates/model/tests/data/reference/README.md):
    * agreement: a plain numpy implementation of the same model, written from docs/model.md and the
      issue-17 data flow (it multiplies Gemma's stored norm weights directly where transformers
      computes x·(1 + (stored − 1))), must give cosine >= 0.999 (--agreement-threshold) on every
      input or the script fails; so must the same numpy model with f16 keys/values, as our engine
      keeps them;
    * the stock Gemma 3 layer pattern (512-token sliding window) run in transformers: identical up
      to 512 tokens (checked), different beyond (recorded);
    * mutants: deliberately wrong numpy variants (no per-projection norm, HF's stock Gemma 3 sliding
      window, ...) with their lowest cosine against transformers; the required ones must fail.

What it does NOT do
    It is not run in CI (it needs torch). It does not tokenize: the stored ``input_ids`` already
    hold the BOS/EOS ids that the model's tokenizer adds. It does not support sliding-window
    files (Microsoft's converter writes no window), partial RoPE or non-ternary projections.

Usage (from the workspace root; versions pinned in xtask/py/requirements-reference.txt)
    target/pyenv/bin/python xtask/py/hf_embed_reference.py MODEL.gguf OUT.json [--lengths 1,7,33,300]
        [--input-seed N] [--beyond-context] [--no-mutants] [--agreement-threshold 0.999]
    target/pyenv/bin/python xtask/py/hf_embed_reference.py make-fixtures [--out-dir DIR]

    ``make-fixtures`` runs ``cargo xtask gen-model`` for every case in FIXTURE_CASES and rewrites
    crates/model/tests/data/reference/embed/ (about a minute once xtask is built).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_reference as hr  # noqa: E402  (GGUF parsing and the numpy building blocks are shared)
from hf_reference import RefError  # noqa: E402

np = hr.np

FORMAT_ID = "bitnet-serve/hf-embed-reference/v1"
CI_COSINE = 0.999
ARCHES = ("qwen3", "gemma3")
POOLING = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
# Sliding window of Hugging Face's stock Gemma 3 270m config (5 of every 6 layers), used only by
# the `hf_stock_gemma3_window` mutant to show what a stock config would change past 512 tokens.
HF_STOCK_GEMMA3_WINDOW = 512

# GGUF name -> transformers module path, per projection; `<name>_norm_in` is its BitNet norm.
LINEARS = hr.LINEARS
LAYER_NORMS = {
    "qwen3": [
        ("attn_norm", "input_layernorm"),
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("ffn_norm", "post_attention_layernorm"),
    ],
    "gemma3": [
        ("attn_norm", "input_layernorm"),
        ("attn_q_norm", "self_attn.q_norm"),
        ("attn_k_norm", "self_attn.k_norm"),
        ("post_attention_norm", "post_attention_layernorm"),
        ("ffn_norm", "pre_feedforward_layernorm"),
        ("post_ffw_norm", "post_feedforward_layernorm"),
    ],
}


@dataclass
class EHparams:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    rope_base: float
    rms_eps: float
    attn_scalar: float  # scores are divided by sqrt(attn_scalar)
    pooling: int
    bos: int | None
    eos: int | None
    add_bos: bool
    add_eos: bool

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["pooling_name"] = POOLING.get(self.pooling, "?")
        return d


@dataclass
class EWeights:
    hp: EHparams
    embd: np.ndarray  # [n_vocab, n_embd] f32, unscaled
    out_norm: np.ndarray  # as stored
    layers: list[dict]  # norms as stored (f32 vectors), linears (T int8 [out, in], scale)


def load_embed_weights(g: hr.Gguf) -> EWeights:
    md = g.metadata
    arch = hr.model_arch(g, ARCHES)

    def need(key):
        return hr.need_key(g, arch, key)

    embd = hr.decode_float(g, hr.need_tensor(g, "token_embd.weight"))
    n_embd = int(need("embedding_length"))
    n_head = int(need("attention.head_count"))
    head_dim = int(md.get(f"{arch}.attention.key_length", n_embd // n_head))
    if int(md.get(f"{arch}.attention.value_length", head_dim)) != head_dim:
        raise RefError(f"{arch}.attention.value_length differs from key_length: not supported here")
    if f"{arch}.attention.sliding_window" in md:
        raise RefError(
            f"{arch}.attention.sliding_window is set; this reference (like Microsoft's converter) "
            "covers files with full attention in every layer only"
        )
    rope_dim = int(md.get(f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise RefError(f"rope.dimension_count {rope_dim} != head dim {head_dim}: partial RoPE is not supported here")
    default_scalar = head_dim
    hp = EHparams(
        **hr.hparams_common(g, arch, embd.shape[0]),
        head_dim=head_dim,
        attn_scalar=float(md.get(f"{arch}.attention.query_pre_attn_scalar", default_scalar)),
        pooling=int(md.get(f"{arch}.pooling_type", 3)),
        add_bos=bool(md.get("tokenizer.ggml.add_bos_token", False)),
        add_eos=bool(md.get("tokenizer.ggml.add_eos_token", False)),
    )
    if hp.pooling not in (1, 2, 3):
        raise RefError(f"{arch}.pooling_type = {hp.pooling} ({POOLING.get(hp.pooling, '?')}): only mean, cls, last are supported")
    if embd.shape[1] != n_embd:
        raise RefError(f"token_embd.weight has rows of {embd.shape[1]}, embedding_length is {n_embd}")
    if n_head % hp.n_head_kv:
        raise RefError(f"head_count {n_head} is not a multiple of head_count_kv {hp.n_head_kv}")
    if "output.weight" in g.tensors:
        print("note: output.weight present but ignored (embedding model)", file=sys.stderr)

    q_dim, kv_dim = n_head * head_dim, hp.n_head_kv * head_dim
    shapes = hr.linear_shapes(n_embd, q_dim, kv_dim, hp.n_ff)
    norm_len = {key: (head_dim if key in ("attn_q_norm", "attn_k_norm") else n_embd) for key, _ in LAYER_NORMS[arch]}
    for key, shape in shapes.items():
        norm_len[key + "_norm_in"] = shape[1]
    layers = hr.load_layers(g, hp.n_layer, norm_len, shapes)
    out_norm = hr.decode_float(g, hr.need_tensor(g, "output_norm.weight"))
    return EWeights(hp, embd, out_norm, layers)


# ----------------------------------------------------------------------------------------------
# transformers model
# ----------------------------------------------------------------------------------------------


def build_hf_model(w: EWeights, workdir: Path, stock_gemma3_window: int | None = None):
    """Write an HF checkpoint for Qwen3Model / Gemma3TextModel with the bitnet quantization config
    and load it, so transformers' AutoBitLinear (with its RMSNorm) replaces every projection.

    `stock_gemma3_window` (Gemma 3 only, comparison only): keep transformers' stock layer pattern
    instead (5 of every 6 layers sliding-window attention of that many positions)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma3TextConfig, Gemma3TextModel, Qwen3Config, Qwen3Model
    from transformers.integrations.bitnet import AutoBitLinear

    hr.quiet_transformers()
    hp = w.hp
    common = dict(hr.hf_config_common(hp), head_dim=hp.head_dim, pad_token_id=None)
    if hp.arch == "qwen3":
        cfg = Qwen3Config(
            **common,
            hidden_act="silu",
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": hp.rope_base},
        )
        cls = Qwen3Model
    else:
        # The file declares no window: every layer is full attention with the one RoPE base (see
        # the fixture README for how this differs from the stock Gemma 3 config past 512 tokens).
        rope = {"rope_type": "default", "rope_theta": hp.rope_base}
        if hp.attn_scalar != int(hp.attn_scalar):
            raise RefError(f"query_pre_attn_scalar {hp.attn_scalar} is not an integer; Gemma3TextConfig takes an int")
        if stock_gemma3_window is None:
            window, layer_types = hp.n_ctx, ["full_attention"] * hp.n_layer
        else:
            window, layer_types = stock_gemma3_window, None  # None: the config's default pattern
        cfg = Gemma3TextConfig(
            **common,
            hidden_activation="gelu_pytorch_tanh",
            query_pre_attn_scalar=int(hp.attn_scalar),
            # Gemma3TextModel builds a sliding mask even when no layer uses it, so it needs some
            # window; no layer is "sliding_attention", and the context length would not clip anyway.
            sliding_window=window,
            layer_types=layer_types,
            rope_parameters={"full_attention": dict(rope), "sliding_attention": dict(rope)},
            final_logit_softcapping=None,
            attn_logit_softcapping=None,
        )
        cls = Gemma3TextModel
    cfg.quantization_config = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "offline",
        "use_rms_norm": True,
        "rms_norm_eps": hp.rms_eps,
    }
    # Gemma3RMSNorm computes x·(1 + w); the GGUF stores the multiplier itself (w + 1).
    shift = 1.0 if hp.arch == "gemma3" else 0.0
    sd = {
        "embed_tokens.weight": torch.from_numpy(w.embd.copy()),
        "norm.weight": torch.from_numpy(w.out_norm - np.float32(shift)),
    }
    for i, L in enumerate(w.layers):
        pre = f"layers.{i}."
        for gkey, hkey in LAYER_NORMS[hp.arch]:
            sd[pre + hkey + ".weight"] = torch.from_numpy(L[gkey] - np.float32(shift))
        for gkey, hkey in LINEARS:
            tern, scale = L[gkey]
            sd[pre + hkey + ".weight"] = torch.from_numpy(hr.pack_hf(tern))
            sd[pre + hkey + ".weight_scale"] = torch.tensor([scale], dtype=torch.float32)
            sd[pre + hkey + ".rms_norm.weight"] = torch.from_numpy(L[gkey + "_norm_in"].copy())
    ckpt = workdir / f"hf-{hp.arch}{'' if stock_gemma3_window is None else '-stock-window'}"
    ckpt.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(ckpt)
    save_file(sd, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    model, info = cls.from_pretrained(ckpt, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
    model.eval()
    problems = {k: sorted(v) for k, v in info.items() if v}
    if problems:
        raise RefError(f"transformers did not load the checkpoint cleanly: {problems}")

    # The BitNet path must really be in place, with exactly the file's values.
    for i, L in enumerate(w.layers):
        layer = model.layers[i]
        for gkey, hkey in LINEARS:
            mod = layer.get_submodule(hkey)
            if not isinstance(mod, AutoBitLinear) or mod.online_quant or mod.rms_norm is None:
                raise RefError(f"layer {i} {hkey} is not an offline AutoBitLinear with its RMSNorm: quantizer not applied")
            tern, scale = L[gkey]
            if not np.array_equal(mod.weight.detach().numpy(), tern.astype(np.float32)):
                raise RefError(f"layer {i} {hkey}: loaded weights differ from the GGUF's ternary values")
            if float(mod.weight_scale) != np.float32(scale):
                raise RefError(f"layer {i} {hkey}: weight_scale {float(mod.weight_scale)} != {scale}")
            if not np.array_equal(mod.rms_norm.weight.detach().numpy(), L[gkey + "_norm_in"]):
                raise RefError(f"layer {i} {hkey}: rms_norm weight differs from {gkey}_norm_in")
            if mod.rms_norm.variance_epsilon != hp.rms_eps:
                raise RefError(f"layer {i} {hkey}: rms_norm eps {mod.rms_norm.variance_epsilon} != {hp.rms_eps}")
    if hp.arch == "gemma3":
        if stock_gemma3_window is None and any(t != "full_attention" for t in model.config.layer_types):
            raise RefError(f"Gemma3 layer types are {model.config.layer_types}, expected full attention everywhere")
        if model.config.hidden_activation != "gelu_pytorch_tanh":
            raise RefError("Gemma3 activation is not gelu_pytorch_tanh")
    elif model.config.hidden_act != "silu":
        raise RefError("Qwen3 activation is not silu")
    return model


def pool(hp: EHparams, hidden: np.ndarray) -> np.ndarray:
    """[T, d] final hidden states -> pooled, L2-normalised [d] (computed in f64, returned f32)."""
    h = hidden.astype(np.float64)
    if hp.pooling == 1:
        v = h.mean(axis=0)
    elif hp.pooling == 2:
        v = h[0]
    else:
        v = h[-1]
    n = np.linalg.norm(v)
    return (v / n if n > 0 else v).astype(np.float32)


def hf_embed(model, hp: EHparams, tokens: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens], dtype=torch.long), use_cache=False)
    return pool(hp, out.last_hidden_state[0].float().numpy())


# ----------------------------------------------------------------------------------------------
# Plain numpy model (docs/model.md + the issue-17 data flow), cross-check and mutants
# ----------------------------------------------------------------------------------------------


def _bitlinear(x: np.ndarray, wt, v: dict) -> np.ndarray:
    tern, scale = wt
    if v.get("round") == "half_away":
        # Wrong variant: round half away from zero instead of half to even.
        amax = np.maximum(np.float32(1e-5), np.abs(x).max(axis=-1, keepdims=True))
        s = (np.float32(127.0) / amax).astype(np.float32)
        y = x * s
        q = np.clip(np.sign(y) * np.floor(np.abs(y) + 0.5), -128, 127)
        return ((q.astype(np.float64) @ tern.T.astype(np.float64)) / s.astype(np.float64) * scale).astype(np.float32)
    if v.get("per_tensor_absmax"):
        # Wrong variant: one absmax for the whole batch instead of one per token.
        amax = np.float32(max(1e-5, float(np.abs(x).max())))
        s = np.float32(127.0) / amax
        q = np.clip(np.rint(x * s), -128, 127)
        return ((q.astype(np.float64) @ tern.T.astype(np.float64)) / float(s) * scale).astype(np.float32)
    return hr.np_bitlinear(x, tern, scale, v.get("quantize", True))


def _rms(x: np.ndarray, w: np.ndarray, eps: float, v: dict) -> np.ndarray:
    if v.get("eps_outside"):
        # Wrong variant: x / (sqrt(mean(x²)) + eps).
        r = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=-1, keepdims=True)) + eps
        return (x / r).astype(np.float32) * w
    return hr.np_rmsnorm(x, w, eps)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return (0.5 * x64 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x64 + 0.044715 * x64**3)))).astype(np.float32)


def _silu(x: np.ndarray) -> np.ndarray:
    return (x / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def np_embed(w: EWeights, tokens: list[int], variant: dict | None = None) -> np.ndarray:
    """The pooled, L2-normalised embedding of `tokens` (one sequence, causal attention)."""
    v = variant or {}
    hp = w.hp
    eps = hp.rms_eps
    gemma = hp.arch == "gemma3"
    T, hd = len(tokens), hp.head_dim
    rep = hp.n_head // hp.n_head_kv
    pos = np.arange(T)

    def norm_weight(wt):
        # Gemma: the runtime multiplies by the stored value; the mutant reads it as HF's raw w.
        return wt - np.float32(1.0) if (gemma and v.get("gemma_norm_unshifted")) else wt

    def proj(x, L, key):
        if v.get("no_norm_in"):
            return _bitlinear(x, L[key], v)
        return _bitlinear(_rms(x, L[key + "_norm_in"], eps, v), L[key], v)

    x = w.embd[np.asarray(tokens)].astype(np.float32)
    if gemma and not v.get("no_embd_scale"):
        x = x * np.float32(np.sqrt(hp.n_embd))
    dist = pos[:, None] - pos[None, :]
    mask = np.where(dist < 0, -np.inf, 0.0)
    window = v.get("window")
    for li, L in enumerate(w.layers):
        h = _rms(x, norm_weight(L["attn_norm"]), eps, v)
        q = proj(h, L, "attn_q").reshape(T, hp.n_head, hd)
        k = proj(h, L, "attn_k").reshape(T, hp.n_head_kv, hd)
        val = proj(h, L, "attn_v").reshape(T, hp.n_head_kv, hd)
        q = _rms(q, norm_weight(L["attn_q_norm"]), eps, v)
        k = _rms(k, norm_weight(L["attn_k_norm"]), eps, v)
        base = hp.rope_base
        lmask = mask
        if window is not None and (li + 1) % 6 != 0:
            # HF stock Gemma 3: 5 of 6 layers see only the last `window` positions, base 10000.
            lmask = np.where(dist >= window, -np.inf, mask)
        q, k = hr.np_rope(q, pos, base, v.get("interleaved", False)), hr.np_rope(k, pos, base, v.get("interleaved", False))
        if v.get("kv_f16"):  # keys/values stored as f16, as llama.cpp's and our engine's KV cache
            k, val = k.astype(np.float16).astype(np.float32), val.astype(np.float16).astype(np.float32)
        scale = 1.0 / np.sqrt(hd if v.get("scale_head_dim") else hp.attn_scalar)
        out = np.empty((T, hp.n_head, hd), dtype=np.float32)
        for head in range(hp.n_head):
            kvh = head // rep
            sc = (q[:, head, :].astype(np.float64) @ k[:, kvh, :].T.astype(np.float64)) * scale + lmask
            sc = np.exp(sc - sc.max(axis=-1, keepdims=True))
            sc /= sc.sum(axis=-1, keepdims=True)
            out[:, head, :] = (sc @ val[:, kvh, :].astype(np.float64)).astype(np.float32)
        o = proj(out.reshape(T, hp.n_head * hd), L, "attn_output")
        x = x + (_rms(o, norm_weight(L["post_attention_norm"]), eps, v) if gemma else o)
        h2 = _rms(x, norm_weight(L["ffn_norm"]), eps, v)
        g = proj(h2, L, "ffn_gate")
        u = proj(h2, L, "ffn_up")
        act = v.get("act", "gelu" if gemma else "silu")
        t = (_gelu_tanh(g) if act == "gelu" else _silu(g)) * u
        d = proj(t, L, "ffn_down")
        x = x + (_rms(d, norm_weight(L["post_ffw_norm"]), eps, v) if gemma else d)
    hn = _rms(x, norm_weight(w.out_norm), eps, v)
    if v.get("pooling") is not None:
        hp = EHparams(**{**hp.__dict__, "pooling": v["pooling"]})
    return pool(hp, hn)


# name -> (variant, arches it applies to, must fail the cosine check). The quantizer details
# (no quantization, rounding, eps placement, per-tensor absmax) are not required to fail: they move
# the embedding by about as much as f16 keys/values do in a correct engine (README).
MUTANTS = {
    "no_norm_in": ({"no_norm_in": True}, ARCHES, True),
    "no_activation_quant": ({"quantize": False}, ARCHES, False),
    "round_half_away": ({"round": "half_away"}, ARCHES, False),
    "per_tensor_absmax": ({"per_tensor_absmax": True}, ARCHES, False),
    "eps_outside_sqrt": ({"eps_outside": True}, ARCHES, False),
    "interleaved_rope": ({"interleaved": True}, ARCHES, True),
    "mean_pooling": ({"pooling": 1}, ARCHES, True),
    "qwen3_gelu": ({"act": "gelu"}, ("qwen3",), True),
    "gemma3_silu": ({"act": "silu"}, ("gemma3",), True),
    "gemma3_norm_unshifted": ({"gemma_norm_unshifted": True}, ("gemma3",), True),
    "gemma3_no_embd_scale": ({"no_embd_scale": True}, ("gemma3",), True),
    "gemma3_scale_head_dim": ({"scale_head_dim": True}, ("gemma3",), False),
    "hf_stock_gemma3_window": ({"window": HF_STOCK_GEMMA3_WINDOW}, ("gemma3",), False),
}


# ----------------------------------------------------------------------------------------------
# Inputs, reference run, fixtures
# ----------------------------------------------------------------------------------------------


def make_inputs(hp: EHparams, lengths: list[int], seed: int) -> list[list[int]]:
    """Per length: a sequence of exactly that many ids, as the tokenizer would produce it — BOS
    first if the file adds one, EOS last if it adds one, ordinary ids (no special ids) between."""
    rng = np.random.default_rng(seed)
    special = {t for t in (hp.bos, hp.eos) if t is not None}
    out = []
    for n in lengths:
        head = [hp.bos] if hp.add_bos and hp.bos is not None else []
        tail = [hp.eos] if hp.add_eos and hp.eos is not None else []
        m = n - len(head) - len(tail)
        if m < 0:
            head, tail, m = (head or tail)[:1], [], n - 1
            if m < 0:
                raise RefError("lengths must be at least 1")
        ids = []
        while len(ids) < m:
            t = int(rng.integers(0, hp.n_vocab))
            if t not in special:
                ids.append(t)
        seq = head + ids + tail
        if len(seq) != n:
            raise RefError(f"internal: built {len(seq)} ids for length {n}")
        out.append(seq)
    return out


def run_reference(
    path: Path,
    out_json: Path,
    lengths: list[int],
    seed: int,
    allow_other: bool,
    gen_model: dict | None = None,
    beyond_context: bool = False,
    run_mutants: bool = True,
    agreement_threshold: float = CI_COSINE,
) -> dict:
    versions = hr.check_versions(allow_other)
    g = hr.read_gguf(path)
    w = load_embed_weights(g)
    hp = w.hp
    n_ctx_override = None
    if max(lengths) > hp.n_ctx:
        if not beyond_context:
            raise RefError(
                f"an input of {max(lengths)} tokens exceeds context_length {hp.n_ctx}; pass "
                "--beyond-context to run it anyway (the engine must then be loaded with a larger n_ctx)"
            )
        # RoPE without scaling does not depend on the context length; only the engine's limit does.
        n_ctx_override = max(lengths)
    file_hp = dict(hp.as_dict())
    if n_ctx_override is not None:
        hp.n_ctx = n_ctx_override  # transformers' max_position_embeddings
    inputs = make_inputs(hp, lengths, seed)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="hf-embed-ref-") as tmp:
        model = build_hf_model(w, Path(tmp))
        t_load = time.time() - t0
        ref = [hf_embed(model, hp, ids) for ids in inputs]
        t_hf = time.time() - t0 - t_load
        stock = None
        if hp.arch == "gemma3":
            # What transformers' stock Gemma 3 layer pattern (sliding window of 512 in 5 of 6 layers)
            # would give instead: identical up to 512 tokens, different past it.
            smodel = build_hf_model(w, Path(tmp), HF_STOCK_GEMMA3_WINDOW)
            cos = [hr.cosine(r, hf_embed(smodel, hp, ids)) for r, ids in zip(ref, inputs)]
            stock = {"window": HF_STOCK_GEMMA3_WINDOW, "layer_types": list(smodel.config.layer_types), "cosines": cos}
            print(f"  transformers stock Gemma 3 window: cosines {['%.6f' % c for c in cos]}", file=sys.stderr)
            for ids, c in zip(inputs, cos):
                if len(ids) <= HF_STOCK_GEMMA3_WINDOW and c < 1 - 1e-6:
                    raise RefError(f"stock window changed a {len(ids)}-token input (cosine {c}); it should not act below {HF_STOCK_GEMMA3_WINDOW}")
    mine = [np_embed(w, ids) for ids in inputs]
    agree = [hr.cosine(a, b) for a, b in zip(ref, mine)]
    print(f"{path.name}: numpy vs transformers cosines {['%.7f' % c for c in agree]}", file=sys.stderr)
    if min(agree) < agreement_threshold:
        raise RefError(f"the numpy implementation disagrees with transformers: cosines {agree}")
    # Another correct engine: f16 keys/values (as our engine's cache) must stay within the check.
    kv16 = [hr.cosine(r, np_embed(w, ids, {"kv_f16": True})) for r, ids in zip(ref, inputs)]
    print(f"  numpy with f16 KV: cosines {['%.7f' % c for c in kv16]}", file=sys.stderr)
    if min(kv16) < agreement_threshold:
        raise RefError(f"f16 keys/values alone move the embedding below {CI_COSINE}: {kv16}")
    mutants = {}
    for name, (var, arches, required) in MUTANTS.items():
        if not run_mutants or hp.arch not in arches:
            continue
        if name == "gemma3_scale_head_dim" and hp.attn_scalar == hp.head_dim:
            continue  # the same model when query_pre_attn_scalar equals head_dim (as in the 270m)
        cos = [hr.cosine(r, np_embed(w, ids, var)) for r, ids in zip(ref, inputs)]
        mutants[name] = {"cosines": cos, "min_cosine": min(cos), "must_fail": required}
        print(f"  mutant {name}: min cosine {min(cos):.6f}", file=sys.stderr)
        if required and min(cos) >= CI_COSINE:
            raise RefError(f"mutant {name} passes the cosine check (min {min(cos)}); the check would not catch it")
    doc = {
        "format": FORMAT_ID,
        "generator": {
            "script": "xtask/py/hf_embed_reference.py",
            "versions": versions,
            "model_class": "Qwen3Model" if hp.arch == "qwen3" else "Gemma3TextModel",
            "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                    "quantization_mode": "offline", "use_rms_norm": True, "rms_norm_eps": hp.rms_eps},
            "attention": "eager, causal, full attention in every layer",
            "dtype": "float32",
            "device": "cpu",
        },
        "gguf": {
            "sha256": hr.sha256_file(path),
            "size": path.stat().st_size,
            "tensor_data_sha256": hr.tensor_data_sha256(g),
            "gen_model": gen_model,
        },
        "model": file_hp,
        # Set when an input is longer than the file's context_length: the context the engine
        # must be loaded with.
        "n_ctx_override": n_ctx_override,
        "input_seed": seed,
        "cases": [
            {"len": len(ids), "input_ids": ids, "embedding": [float(x) for x in e], "numpy_cosine": c}
            for ids, e, c in zip(inputs, ref, agree)
        ],
        "ci_cosine": CI_COSINE,
        "agreement": {"threshold": agreement_threshold, "numpy_min_cosine": min(agree), "numpy_kv_f16_cosines": kv16},
        "mutants": mutants,
        "hf_stock_gemma3_window": stock,
        "timings_s": {"hf_load": round(t_load, 2), "hf_forward": round(t_hf, 2)},
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {out_json}", file=sys.stderr)
    return doc


# name, gen-model preset, seed, input lengths, input seed. gemma3 gets one input longer than the
# stock HF sliding window (512) to pin full attention; the tiny preset declares a 512-token
# context, so that case records n_ctx_override.
FIXTURE_CASES = [
    ("qwen3-embed-tiny", "qwen3-embed-tiny", 1, [1, 7, 33, 300], 21),
    ("gemma3-embed-tiny", "gemma3-embed-tiny", 1, [1, 7, 33, 300, 600], 22),
]


def make_fixtures(out_dir: Path, workspace: Path, allow_other: bool) -> None:
    hr.check_versions(allow_other)
    with tempfile.TemporaryDirectory(prefix="hf-embed-models-") as tmp:
        for name, preset, seed, lengths, input_seed in FIXTURE_CASES:
            path = Path(tmp) / f"{preset}-s{seed}.gguf"
            cmd = ["cargo", "xtask", "gen-model", "--preset", preset, "--format", "i2_s", "--seed", str(seed),
                   "--out", str(path)]
            print("+ " + " ".join(cmd), file=sys.stderr)
            subprocess.run(cmd, cwd=workspace, check=True)
            run_reference(path, out_dir / f"{name}.json", lengths, input_seed, allow_other,
                          {"preset": preset, "format": "i2_s", "seed": seed}, beyond_context=True)


def main(argv: list[str]) -> int:
    workspace = Path(__file__).resolve().parents[2]
    if argv[:1] == ["make-fixtures"]:
        ap = argparse.ArgumentParser(prog="hf_embed_reference.py make-fixtures")
        ap.add_argument("--out-dir", type=Path, default=workspace / "crates/model/tests/data/reference/embed")
        ap.add_argument("--allow-other-versions", action="store_true")
        a = ap.parse_args(argv[1:])
        make_fixtures(a.out_dir, workspace, a.allow_other_versions)
        return 0
    ap = argparse.ArgumentParser(prog="hf_embed_reference.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out_json", type=Path)
    ap.add_argument("--lengths", default="1,7,33,300")
    ap.add_argument("--input-seed", type=int, default=21)
    ap.add_argument("--allow-other-versions", action="store_true")
    ap.add_argument("--beyond-context", action="store_true", help="allow inputs longer than context_length")
    ap.add_argument("--no-mutants", action="store_true", help="skip the mutant runs (slow on full-size models)")
    ap.add_argument(
        "--agreement-threshold", type=float, default=CI_COSINE,
        help="lowest numpy-vs-transformers cosine accepted (full-size random models need less than 0.999: README)",
    )
    a = ap.parse_args(argv)
    try:
        lengths = [int(t) for t in a.lengths.split(",") if t.strip()]
    except ValueError:
        raise RefError(f"--lengths must be comma-separated integers, got {a.lengths!r}") from None
    if not lengths or min(lengths) < 1:
        raise RefError("--lengths must list positive lengths")
    run_reference(a.gguf, a.out_json, lengths, a.input_seed, a.allow_other_versions,
                  beyond_context=a.beyond_context, run_mutants=not a.no_mutants,
                  agreement_threshold=a.agreement_threshold)
    return 0


if __name__ == "__main__":
    hr.run_cli(main, "hf_embed_reference")
