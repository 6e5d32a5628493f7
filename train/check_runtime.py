#!/usr/bin/env python3
"""Cross-implementation check of an exported model directory against the Rust runtime:
`plt score` (the CPU reference with --cpu, else the GPU: prefill + fused decode) must reproduce the
trainer's golden.json (tokenisation of every text, and per-token log-probabilities).

    python train/check_runtime.py models/plt2-shakespeare --plt target/release/plt [--cpu] [--tol 2e-3]
"""
import argparse
import json
import os
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("--plt", default="target/release/plt")
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--tol", type=float, default=2e-3)
    args = ap.parse_args()
    golden = json.load(open(os.path.join(args.model_dir, "golden.json")))
    worst = 0.0
    for t in golden["texts"]:
        cmd = [args.plt, "score", "--model", args.model_dir, "--text", t["text"], "--backend", "reference" if args.cpu else "gpu"]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        assert out["tokens"] == t["tokens"], f"tokenizer mismatch for {t['text']!r}: {out['tokens']} vs {t['tokens']}"
        d = max(abs(a - b) for a, b in zip(out["logprobs"], t["logprobs"]))
        assert len(out["logprobs"]) == len(t["logprobs"])
        worst = max(worst, d)
        print(f"{len(t['tokens']):3d} tokens  max |dlogprob| {d:.2e}  ({out['adapter']}, {out['mode']})")
    assert worst < args.tol, f"max |dlogprob| {worst:.3e} >= {args.tol}"
    print(f"ok: {args.model_dir} matches its golden.json (max |dlogprob| {worst:.2e} < {args.tol})")


if __name__ == "__main__":
    sys.exit(main())
