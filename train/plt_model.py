"""The PLT model of PLT-SPEC sections 1-3 and 6 in JAX: parameters keyed by the spec's tensor
names, the sequence forward pass (training / prefill semantics), and model-directory export/import.

Variants (all share the same physical weights):
  L = 1                          a standard (non-looped) transformer
  L > 1, loop_mode "parallel"    PLT (section 3): cross-loop shift, shared loop-0 KV, gated
                                 sliding-window attention (G-SWA)
  L > 1, loop_mode "vanilla"     the vanilla looped baseline (section 6)
  L > 1, gate "global"           ablation: PLT with shared KV only (no local branch, g = 1). It is
                                 exported as a parallel model whose gate is saturated
                                 (weight 0, bias GLOBAL_BIAS), so the runtime computes the same
                                 function.
"""
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np

GLOBAL_BIAS = 30.0  # sigmoid(30) == 1.0 in f32


def default_config(**kw):
    c = {
        "vocab_size": 4096, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 256,
        "tie_word_embeddings": True, "bos_token_id": 0, "eos_token_id": 0,
        "plt_num_loops": 2, "plt_window_size": [32, 0], "plt_normalize_per_loop": True,
        "plt_emb_scale": 1.0, "plt_hidden_scale": 1.0, "plt_gate_use_hidden_states": False,
        "plt_loop_mode": "parallel",
    }
    c.update(kw)
    return c


def has_gate(cfg):
    return cfg["plt_num_loops"] > 1 and cfg.get("plt_loop_mode", "parallel") == "parallel"


def init_params(cfg, seed):
    D, F, N = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    H, Hkv, Dh, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"], cfg["vocab_size"]
    rng = np.random.default_rng(seed)
    std = 0.02
    out_std = std / math.sqrt(2 * N)

    def nrm(shape, s):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    p = {"model.embed_tokens.weight": nrm((V, D), std), "model.norm.weight": np.ones(D, np.float32)}
    if not cfg["tie_word_embeddings"]:
        p["lm_head.weight"] = nrm((V, D), std)
    for i in range(N):
        a = f"model.layers.{i}."
        p[a + "input_layernorm.weight"] = np.ones(D, np.float32)
        p[a + "post_attention_layernorm.weight"] = np.ones(D, np.float32)
        p[a + "self_attn.q_proj.weight"] = nrm((H * Dh, D), std)
        p[a + "self_attn.k_proj.weight"] = nrm((Hkv * Dh, D), std)
        p[a + "self_attn.v_proj.weight"] = nrm((Hkv * Dh, D), std)
        p[a + "self_attn.o_proj.weight"] = nrm((D, H * Dh), out_std)
        p[a + "mlp.gate_proj.weight"] = nrm((F, D), std)
        p[a + "mlp.up_proj.weight"] = nrm((F, D), std)
        p[a + "mlp.down_proj.weight"] = nrm((D, F), out_std)
        if has_gate(cfg):
            if cfg["plt_gate_use_hidden_states"]:
                p[a + "self_attn.plt_gate.weight"] = nrm((H, D), std)
                p[a + "self_attn.plt_gate.gate_norm.weight"] = np.ones(D, np.float32)
            else:
                p[a + "self_attn.plt_gate.weight"] = nrm((H, Dh), std)
            p[a + "self_attn.plt_gate.bias"] = np.zeros(H, np.float32)
    return {k: jnp.asarray(v) for k, v in p.items()}


def count_params(params):
    return int(sum(int(np.prod(v.shape)) for v in params.values()))


def rmsnorm(x, w, eps):
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rope(x, theta):
    # x [B, T, H, Dh]; rotate_half convention; position = index along T
    T, Dh = x.shape[1], x.shape[3]
    half = Dh // 2
    inv = theta ** (-(2.0 * jnp.arange(half, dtype=x.dtype)) / Dh)
    ang = jnp.arange(T, dtype=x.dtype)[:, None] * inv[None, :]
    cos = jnp.cos(ang)[None, :, None, :]
    sin = jnp.sin(ang)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def attention(q, k, v, mask):
    # q [B,T,H,Dh]; k, v [B,T,Hkv,Dh]; mask [T,T] (query, key) -> [B,T,H,Dh]
    B, T, H, Dh = q.shape
    Hkv = k.shape[2]
    qg = q.reshape(B, T, Hkv, H // Hkv, Dh)
    s = jnp.einsum("btgrd,bsgd->bgrts", qg, k) / math.sqrt(Dh)
    s = jnp.where(mask, s, jnp.asarray(-1e30, s.dtype))
    pr = jax.nn.softmax(s, axis=-1)
    o = jnp.einsum("bgrts,bsgd->btgrd", pr, v)
    return o.reshape(B, T, H, Dh)


def masks(T, left):
    t = jnp.arange(T)
    causal = t[None, :] <= t[:, None]
    window = causal & (t[None, :] >= t[:, None] - left)
    return causal, window


def layer(cfg, p, i, h, loop, kv0, gate_kind, causal, window):
    """One physical layer. loop 0 (or vanilla): full causal attention over its own K/V.
    loop > 0 of PLT: global branch over loop 0's K/V (kv0) + local sliding window over its own."""
    a = f"model.layers.{i}."
    eps = cfg["rms_norm_eps"]
    B, T, D = h.shape
    H, Hkv, Dh = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    u = rmsnorm(h, p[a + "input_layernorm.weight"], eps)
    q = (u @ p[a + "self_attn.q_proj.weight"].T)
    k = (u @ p[a + "self_attn.k_proj.weight"].T)
    v = (u @ p[a + "self_attn.v_proj.weight"].T)
    for nm, t in (("q", q), ("k", k), ("v", v)):
        b = p.get(a + f"self_attn.{nm}_proj.bias")
        if b is not None:
            if nm == "q":
                q = q + b
            elif nm == "k":
                k = k + b
            else:
                v = v + b
    q = rope(q.reshape(B, T, H, Dh), cfg["rope_theta"])
    k = rope(k.reshape(B, T, Hkv, Dh), cfg["rope_theta"])
    v = v.reshape(B, T, Hkv, Dh)
    if kv0 is None:
        o = attention(q, k, v, causal)
    else:
        G = attention(q, kv0[0], kv0[1], causal)
        if gate_kind == "global":
            o = G
        else:
            S = attention(q, k, v, window)
            if gate_kind == "hidden":
                x = rmsnorm(h, p[a + "self_attn.plt_gate.gate_norm.weight"], eps)
                z = x @ p[a + "self_attn.plt_gate.weight"].T  # [B,T,H]
            else:
                z = jnp.einsum("bthd,hd->bth", q, p[a + "self_attn.plt_gate.weight"])
            g = jax.nn.sigmoid(z + p[a + "self_attn.plt_gate.bias"])[..., None]
            o = g * G + (1.0 - g) * S
    h = h + o.reshape(B, T, H * Dh) @ p[a + "self_attn.o_proj.weight"].T
    x = rmsnorm(h, p[a + "post_attention_layernorm.weight"], eps)
    m = jax.nn.silu(x @ p[a + "mlp.gate_proj.weight"].T) * (x @ p[a + "mlp.up_proj.weight"].T)
    h = h + m @ p[a + "mlp.down_proj.weight"].T
    return h, (k, v)


def forward(cfg, p, tokens, gate_kind=None):
    """tokens [B, T] int -> logits [B, T, V] of the last loop (PLT-SPEC section 3 / 6)."""
    L, N = cfg["plt_num_loops"], cfg["num_hidden_layers"]
    mode = cfg.get("plt_loop_mode", "parallel")
    if gate_kind is None:
        gate_kind = "hidden" if cfg["plt_gate_use_hidden_states"] else "query"
    eps = cfg["rms_norm_eps"]
    T = tokens.shape[1]
    causal, window = masks(T, cfg["plt_window_size"][0])
    E = p["model.embed_tokens.weight"][tokens]
    nw = p["model.norm.weight"]
    a_ = cfg.get("plt_emb_scale") or 1.0
    b_ = cfg.get("plt_hidden_scale") or 1.0
    h = E
    kv0 = [None] * N
    for loop in range(L):
        if loop > 0 and mode == "parallel":
            prev = rmsnorm(h, nw, eps) if cfg["plt_normalize_per_loop"] else h
            C = jnp.pad(prev[:, :-1], ((0, 0), (1, 0), (0, 0)))  # C_t = Norm(H_{t-1}), C_0 = 0
            h = a_ * E + b_ * C
        # vanilla: the next loop's input is the previous loop's output
        for i in range(N):
            shared = kv0[i] if (loop > 0 and mode == "parallel") else None
            h, kv = layer(cfg, p, i, h, loop, shared, gate_kind, causal, window)
            if loop == 0:
                kv0[i] = kv
    head = p["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else p["lm_head.weight"]
    return rmsnorm(h, nw, eps) @ head.T


# ---------------------------------------------------------------- model directory (section 1)

def export(cfg, params, out_dir, tokenizer_path, dtype="f16", gate_kind=None):
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    np_dtype = {"f16": np.float16, "f32": np.float32}[dtype]
    tensors = {k: np.asarray(v, dtype=np.float32) for k, v in params.items()}
    cfg = dict(cfg)
    if gate_kind == "global":
        # shared-KV-only ablation: a saturated gate (g == 1) computes exactly o = G
        for i in range(cfg["num_hidden_layers"]):
            a = f"model.layers.{i}.self_attn.plt_gate."
            tensors[a + "weight"] = np.zeros_like(tensors[a + "weight"])
            tensors[a + "bias"] = np.full_like(tensors[a + "bias"], GLOBAL_BIAS)
    save_file({k: np.ascontiguousarray(v.astype(np_dtype)) for k, v in tensors.items()},
              os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump({"architectures": ["PLTForCausalLM"], "model_type": "plt", **cfg,
                   "torch_dtype": {"f16": "float16", "f32": "float32"}[dtype]}, f, indent=2)
    if tokenizer_path:
        write_tokenizer(out_dir, tokenizer_path, cfg)


def write_tokenizer(out_dir, tokenizer_path, cfg):
    """tokenizer.json, plus tokenizer_config.json: every training window starts with
    <|endoftext|> (id 0, the BOS), so prompts must too (add_bos_token)."""
    with open(tokenizer_path) as src:
        text = src.read()
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as dst:
        dst.write(text)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True,
                   "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                   "model_max_length": cfg["max_position_embeddings"]}, f, indent=2)


def load_dir(model_dir, dtype=np.float32):
    from safetensors.numpy import load_file

    cfg = default_config()
    cfg.update(json.load(open(os.path.join(model_dir, "config.json"))))
    w = load_file(os.path.join(model_dir, "model.safetensors"))
    return cfg, {k: jnp.asarray(v.astype(dtype)) for k, v in w.items()}
