#!/usr/bin/env python3
"""Golden outputs of an exported model directory, computed by the trainer's own forward pass
(plt_model.forward, PLT-SPEC section 3) in float64 on the stored (e.g. F16) weights.

    python train/golden.py models/plt2-shakespeare            # writes models/plt2-shakespeare/golden.json

golden.json:
  texts[i]:  text, tokens (tokenizer.json's encoding, BOS included),
             logprobs[j] = log p(tokens[j+1] | tokens[0..=j])   (len(tokens) - 1 values)
  greedy[i]: prompt, prompt_tokens, continuation (argmax tokens, one full forward per step),
             margins (top-1 minus top-2 logit at each step; the test needs them well above the
             runtime's rounding error for an exact token-for-token match)
"""
import argparse
import json
import os
import sys

import numpy as np

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plt_model as M  # noqa: E402

TEXTS = [
    "ROMEO.\nBut, soft! what light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n",
    "KING.\nWhat say you, my lord? Shall we to the court?\n",
    "The quick brown fox jumps over the lazy dog. 1234567890 {}[]()<>#@!?",
]
PROMPTS = [
    "First Citizen.\n",
    "HAMLET.\nO, that this too too solid flesh would melt,\n",
    "Enter the King and Queen.\n\nKING.\n",
    "My lord,",
    "Scene I.",
    "LADY MACBETH.\n",
    "What light is",
    "I will",
]
GREEDY_STEPS = 20
MIN_MARGIN = 0.02  # logits; the GPU's f32 math on f16 weights agrees to ~1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--out", default=None)
    ap.add_argument("--prompts", type=int, default=3, help="greedy prompts to keep")
    ap.add_argument("--min-margin", type=float, default=MIN_MARGIN)
    args = ap.parse_args()
    from tokenizers import Tokenizer

    cfg, p = M.load_dir(args.model_dir, np.float64)
    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    fwd = jax.jit(lambda toks: M.forward(cfg, p, toks))

    PAD = 64  # one compiled shape: causal, so padding after position t leaves logits[t] unchanged

    def logits_of(ids):
        assert len(ids) <= PAD
        x = np.zeros((1, PAD), np.int32)
        x[0, :len(ids)] = ids
        return np.asarray(fwd(jnp.asarray(x)))[0, :len(ids)]

    texts = []
    for text in TEXTS:
        ids = tok.encode(text).ids
        lg = logits_of(ids)
        lp = lg - np.max(lg, -1, keepdims=True)
        lp = lp - np.log(np.sum(np.exp(lp), -1, keepdims=True))
        lps = [float(lp[j, ids[j + 1]]) for j in range(len(ids) - 1)]
        texts.append({"text": text, "tokens": ids, "logprobs": lps})
        print(f"text {len(ids)} tokens, mean logprob {np.mean(lps):.4f}", file=sys.stderr)

    greedy = []
    for prompt in PROMPTS:
        ids = tok.encode(prompt).ids
        seq, margins = list(ids), []
        for _ in range(GREEDY_STEPS):
            lg = logits_of(seq)[-1]
            order = np.argsort(-lg)
            margins.append(float(lg[order[0]] - lg[order[1]]))
            seq.append(int(order[0]))
        cont = seq[len(ids):]
        ok = min(margins) >= args.min_margin
        print(f"prompt {prompt!r}: min margin {min(margins):.4f} {'ok' if ok else 'skipped'}: "
              f"{tok.decode(cont)!r}", file=sys.stderr)
        if ok and len(greedy) < args.prompts:
            greedy.append({"prompt": prompt, "prompt_tokens": ids, "continuation": cont,
                           "text": tok.decode(cont), "margins": margins})
    assert greedy, "no prompt with a safe greedy margin"
    out = args.out or os.path.join(args.model_dir, "golden.json")
    with open(out, "w") as f:
        json.dump({"about": "float64 JAX forward (train/plt_model.py) of the stored weights; "
                            "logprobs[j] = log p(tokens[j+1] | tokens[..=j])",
                   "texts": texts, "greedy": greedy}, f, indent=1)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
