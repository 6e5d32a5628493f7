#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets into fuzz/seeds/<target>/ (committed, small).

  python3 fuzz/make_seeds.py [path/to/plt]      # default: target/release/plt

- load_model: `plt init` models (tiny, every option that changes the tensor set or dtype) as
  (u16 config length, config.json, model.safetensors), the layout of harness::load_model.
  The first ones match harness::FIXED_CONFIG exactly, so their safetensors part loads fully.
- gguf: tiny llama GGUF files written here (the layout of llama.cpp's gguf-py, as in
  tests/gguf.rs's writer): F32/F16/BF16 and every block type the loader dequantises, tied and
  untied, biases, v2 and v3, the gpt2 tokenizer with several pre-tokenizers, and none.
- tokenizer: mode byte + data (see harness::tokenizer): init's WordLevel tokenizer.json,
  a byte-level BPE, a BPE with merges and a Split regex; texts; ids.
"""
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
PLT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "plt")
rng = random.Random(5)


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------------------------------------
# load_model
# ---------------------------------------------------------------------------------------------

SHAPE = ["--vocab", "16", "--hidden", "8", "--intermediate", "16", "--heads", "2", "--kv-heads", "1",
         "--head-dim", "4", "--max-positions", "32"]
FIXED = SHAPE + ["--layers", "1", "--loops", "2", "--window", "2"]
MODELS = {
    "fixed-f32": FIXED,
    "fixed-f16-bias": FIXED + ["--dtype", "f16", "--qkv-bias"],
    "fixed-bf16-tied": FIXED + ["--dtype", "bf16", "--tie-embeddings"],
    "hidden-gate": FIXED + ["--gate", "hidden", "--seed", "3"],
    "vanilla-3loops": SHAPE + ["--layers", "1", "--loops", "3", "--loop-mode", "vanilla"],
    "one-loop-2layers": SHAPE + ["--layers", "2", "--loops", "1", "--window", "0", "--no-normalize-per-loop",
                                 "--emb-scale", "0.5", "--hidden-scale", "2"],
}


def load_model_seeds():
    tmp = tempfile.mkdtemp()
    try:
        for name, args in MODELS.items():
            d = os.path.join(tmp, name)
            subprocess.run([PLT, "init", d] + args, check=True, stdout=subprocess.DEVNULL)
            cfg = open(os.path.join(d, "config.json"), "rb").read()
            # Compact JSON keeps the seeds small; the same fields.
            cfg = json.dumps(json.loads(cfg), separators=(",", ":")).encode()
            st = open(os.path.join(d, "model.safetensors"), "rb").read()
            write("load_model", name, struct.pack("<H", len(cfg)) + cfg + st)
            if name == "fixed-f32":
                # The tokenizer of a real model directory also seeds the tokenizer target.
                write("tokenizer", "init-wordlevel", b"\x00" + open(os.path.join(d, "tokenizer.json"), "rb").read())
        # A config alone, and a safetensors file with one tiny tensor.
        hdr = json.dumps({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"k": "v"}}).encode()
        st = struct.pack("<Q", len(hdr)) + hdr + struct.pack("<2f", 1.0, 2.0)
        write("load_model", "tiny-safetensors", struct.pack("<H", 0) + st)
        cfg = json.dumps({"vocab_size": 10, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                          "num_attention_heads": 2, "max_position_embeddings": 32, "eos_token_id": [1, 2],
                          "bos_token_id": 0, "plt_emb_scale": None, "rope_theta": 1e6}, separators=(",", ":")).encode()
        write("load_model", "config-only", struct.pack("<H", len(cfg)) + cfg)
    finally:
        shutil.rmtree(tmp)


# ---------------------------------------------------------------------------------------------
# gguf
# ---------------------------------------------------------------------------------------------

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
# ggml type: (values per block, bytes per block)
GT = {"F32": (0, 1, 4), "F16": (1, 1, 2), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22),
      "Q5_1": (7, 32, 24), "Q8_0": (8, 32, 34), "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176),
      "Q6_K": (14, 256, 210), "BF16": (30, 1, 2)}


def gstr(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def val(t, v):
    """(type, payload) of a metadata value."""
    fmt = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
           U64: "<Q", I64: "<q", F64: "<d"}
    if t == STR:
        return t, gstr(v)
    if t == ARR:
        et, items = v
        body = b"".join(val(et, x)[1] for x in items)
        return t, struct.pack("<IQ", et, len(items)) + body
    return t, struct.pack(fmt[t], v)


def tensor_data(ty, n):
    _, block, size = GT[ty]
    assert n % block == 0, (ty, n)
    if ty == "F32":
        return b"".join(struct.pack("<f", rng.gauss(0, 0.5)) for _ in range(n))
    out = bytearray(rng.getrandbits(8) for _ in range(n // block * size))
    if ty in ("F16", "BF16"):
        # Finite values only (the loader rejects NaN and infinities): a value whose exponent
        # bits are all ones gets its lowest exponent bit cleared.
        exp, low = (0x7C00, 0x0400) if ty == "F16" else (0x7F80, 0x0080)
        for i in range(0, len(out), 2):
            v = out[i] | out[i + 1] << 8
            if v & exp == exp:
                v ^= low
                out[i], out[i + 1] = v & 0xFF, v >> 8
        return bytes(out)
    # Keep the f16 scales small and finite (the rest is random quantised data).
    for b in range(n // block):
        o = b * size + (208 if ty == "Q6_K" else 0)
        out[o:o + 2] = struct.pack("<e", 0.01)
        if ty in ("Q4_1", "Q5_1", "Q4_K", "Q5_K"):
            out[o + 2:o + 4] = struct.pack("<e", 0.005)
    return bytes(out)


def gguf(kv, tensors, version=3, alignment=32):
    """kv: [(key, (type, payload))]; tensors: [(name, dims fastest-first, type name, data)]."""
    b = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kv))
    for k, (t, payload) in kv:
        b += gstr(k) + struct.pack("<I", t) + payload
    offsets, at = [], 0
    for _, _, _, data in tensors:
        offsets.append(at)
        at = (at + len(data) + alignment - 1) // alignment * alignment
    for (name, dims, ty, _), off in zip(tensors, offsets):
        b += gstr(name) + struct.pack("<I", len(dims)) + b"".join(struct.pack("<Q", d) for d in dims)
        b += struct.pack("<IQ", GT[ty][0], off)
    b += b"\0" * (-len(b) % alignment)
    start = len(b)
    for (_, _, _, data), off in zip(tensors, offsets):
        b += b"\0" * (start + off - len(b)) + data
    return b


def byte_chars():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    out = [""] * 256
    for b, c in zip(bs, cs):
        out[b] = chr(c)
    return out


def llama(d, h, hkv, f, n, types, tied=True, bias=False, pre="smollm", tokenizer=True, version=3, full_bytes=False):
    """A tiny llama GGUF. types: (embed, q, k, v, o, gate, up, down, output)."""
    dh = d // h
    if full_bytes:
        toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + byte_chars() + ["he", "ll", "hell", "hello", "Ġw"]
    else:
        toks = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] + list("abcdehlorw12 Ġ") + ["he", "ll", "hell", "hello", "Ġw"]
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w"]
    ttypes = [3, 3, 3] + [1] * (len(toks) - 3)
    if not full_bytes:
        ttypes[-1] = 4
    v = len(toks)
    kv = [("general.architecture", val(STR, "llama")), ("general.name", val(STR, "fuzz seed")),
          ("general.alignment", val(U32, 32)),
          ("llama.block_count", val(U32, n)), ("llama.context_length", val(U32, 64)),
          ("llama.embedding_length", val(U32, d)), ("llama.feed_forward_length", val(U32, f)),
          ("llama.attention.head_count", val(U32, h)), ("llama.attention.head_count_kv", val(U32, hkv)),
          ("llama.rope.freq_base", val(F32, 10000.0)), ("llama.attention.layer_norm_rms_epsilon", val(F32, 1e-5)),
          ("llama.rope.dimension_count", val(U32, dh))]
    if tokenizer:
        kv += [("tokenizer.ggml.model", val(STR, "gpt2")), ("tokenizer.ggml.pre", val(STR, pre)),
               ("tokenizer.ggml.tokens", val(ARR, (STR, toks))),
               ("tokenizer.ggml.token_type", val(ARR, (I32, ttypes))),
               ("tokenizer.ggml.merges", val(ARR, (STR, merges))),
               ("tokenizer.ggml.bos_token_id", val(U32, 1)), ("tokenizer.ggml.eos_token_id", val(U32, 2)),
               ("tokenizer.ggml.add_bos_token", val(BOOL, True)),
               ("tokenizer.chat_template", val(STR, "{% for m in messages %}{{ m['content'] }}{% endfor %}"))]
    else:
        kv += [("llama.vocab_size", val(U32, v))]
    emb, q, k, vv, o, g, up, dn, out = types
    ts = []

    def mat(name, ty, rows, cols):
        ts.append((name, [cols, rows], ty, tensor_data(ty, rows * cols)))

    def vec(name, m):
        ts.append((name, [m], "F32", tensor_data("F32", m)))

    mat("token_embd.weight", emb, v, d)
    for i in range(n):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", d)
        mat(p + "attn_q.weight", q, h * dh, d)
        mat(p + "attn_k.weight", k, hkv * dh, d)
        mat(p + "attn_v.weight", vv, hkv * dh, d)
        if bias:
            vec(p + "attn_q.bias", h * dh)
            vec(p + "attn_k.bias", hkv * dh)
            vec(p + "attn_v.bias", hkv * dh)
        mat(p + "attn_output.weight", o, d, h * dh)
        vec(p + "ffn_norm.weight", d)
        mat(p + "ffn_gate.weight", g, f, d)
        mat(p + "ffn_up.weight", up, f, d)
        mat(p + "ffn_down.weight", dn, d, f)
    vec("output_norm.weight", d)
    if not tied:
        mat("output.weight", out, v, d)
    return gguf(kv, ts, version=version)


def gguf_seeds():
    f32 = ("F32",) * 9
    write("gguf", "f32-tied", llama(8, 2, 1, 16, 1, f32))
    write("gguf", "f16-untied-bias-v2", llama(8, 2, 1, 16, 1, ("F16",) * 9, tied=False, bias=True, version=2, pre="llama3"))
    write("gguf", "bf16-qwen2-2layers", llama(8, 2, 2, 8, 2, ("BF16",) * 9, pre="qwen2"))
    write("gguf", "no-tokenizer", llama(8, 2, 1, 16, 1, f32, tokenizer=False))
    write("gguf", "quant-32", llama(32, 2, 1, 32, 1, ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_1", "F16", "Q4_0"),
                                    tied=False, pre="gpt-2"))
    write("gguf", "kquant-256", llama(32, 2, 1, 256, 1, ("F16", "F16", "F16", "F16", "F16", "Q8_0", "Q4_0", "Q4_K", "F16")))
    # The other K-quant block types, as bare tensors (no model).
    write("gguf", "kquant-blocks", gguf([("general.architecture", val(STR, "llama"))],
                                        [("a", [256], "Q5_K", tensor_data("Q5_K", 256)),
                                         ("b", [256, 1], "Q6_K", tensor_data("Q6_K", 256)),
                                         ("c", [256], "Q4_K", tensor_data("Q4_K", 256))]))
    write("gguf", "byte-vocab", llama(8, 2, 1, 16, 1, f32, full_bytes=True, pre="llama-bpe"))
    # Every metadata value type, nested arrays, and nothing else.
    kv = [("u8", val(U8, 7)), ("i8", val(I8, -7)), ("u16", val(U16, 700)), ("i16", val(I16, -700)), ("u32", val(U32, 7)),
          ("i32", val(I32, -7)), ("f32", val(F32, 0.5)), ("bool", val(BOOL, True)), ("str", val(STR, "héllo")),
          ("u64", val(U64, 1 << 40)), ("i64", val(I64, -(1 << 40))), ("f64", val(F64, 0.25)),
          ("arr", val(ARR, (ARR, [(U8, [1, 2]), (STR, ["x"])]))), ("empty", val(ARR, (F64, [])))]
    # Nested arrays need their element payload written by hand.
    nested = struct.pack("<IQ", ARR, 2) + struct.pack("<IQ", U8, 2) + b"\x01\x02" + struct.pack("<IQ", STR, 1) + gstr("x")
    kv[12] = ("arr", (ARR, nested))
    write("gguf", "all-value-types", gguf(kv, []))


# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------

def byte_tokenizer_json():
    vocab = {c: i for i, c in enumerate(byte_chars())}
    vocab["<|end|>"] = 256
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 256, "content": "<|end|>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def bpe_with_merges_json():
    """What src/gguf.rs builds from GGUF metadata: Split regex + ByteLevel, BPE with merges,
    a TemplateProcessing post-processor adding BOS, an added special token."""
    toks = ["<s>", "</s>"] + list("abcdehlorwĠ") + ["he", "ll", "hell", "hello", "Ġw"]
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r"\p{N}"}, "behavior": "Isolated", "invert": False},
            {"type": "Split", "pattern": {"Regex": r"'s|'t| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"},
             "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {t: i for i, t in enumerate(toks)}, "merges": [["h", "e"], ["l", "l"], ["he", "ll"], ["hell", "o"], ["Ġ", "w"]]},
    }


def tokenizer_seeds():
    write("tokenizer", "byte-bpe", b"\x00" + json.dumps(byte_tokenizer_json()).encode())
    write("tokenizer", "bpe-merges", b"\x00" + json.dumps(bpe_with_merges_json()).encode())
    wp = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": {"type": "Lowercase"},
          "pre_tokenizer": {"type": "BertPreTokenizer"}, "post_processor": None,
          "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
          "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                    "max_input_chars_per_word": 100, "vocab": {"[UNK]": 0, "a": 1, "##b": 2, "c": 3}}}
    write("tokenizer", "wordpiece", b"\x00" + json.dumps(wp).encode())
    texts = ["a b c zz q", "hello world", "héllo wörld — 世界 🎉 ok", "<s> a </s> <unk>", "", "\t\n  x  ", "12 345 'll"]
    for i, t in enumerate(texts):
        write("tokenizer", f"word-text-{i}", b"\x01" + t.encode())
        write("tokenizer", f"byte-text-{i}", b"\x02" + t.encode())
    write("tokenizer", "byte-text-invalid-utf8", b"\x02" + bytes([0xE2, 0x82, 0x41, 0xF0, 0x9F, 0x8E, 0xFF, 0xC3]))
    write("tokenizer", "ids", b"\x03" + b"".join(struct.pack("<H", i) for i in [0, 1, 2, 3, 63, 64, 226, 130, 172, 256, 257, 65535]))


if __name__ == "__main__":
    if os.path.isdir(SEEDS):
        shutil.rmtree(SEEDS)
    load_model_seeds()
    gguf_seeds()
    tokenizer_seeds()
    for t in sorted(os.listdir(SEEDS)):
        files = os.listdir(os.path.join(SEEDS, t))
        size = sum(os.path.getsize(os.path.join(SEEDS, t, f)) for f in files)
        print(f"{t}: {len(files)} seeds, {size} bytes")
