#!/usr/bin/env python3
"""Re-export a model directory with another storage dtype (e.g. the trainer's F32 export to the
F16 that is shipped), keeping config.json, tokenizer.json and tokenizer_config.json.

    python train/convert.py train/runs/plt2-shakespeare models/plt2-shakespeare --dtype f16
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--dtype", default="f16", choices=["f16", "f32"])
    args = ap.parse_args()
    from safetensors.numpy import load_file, save_file

    w = load_file(os.path.join(args.src, "model.safetensors"))
    t = {"f16": np.float16, "f32": np.float32}[args.dtype]
    os.makedirs(args.dst, exist_ok=True)
    save_file({k: np.ascontiguousarray(v.astype(t)) for k, v in sorted(w.items())},
              os.path.join(args.dst, "model.safetensors"), metadata={"format": "pt"})
    cfg = json.load(open(os.path.join(args.src, "config.json")))
    cfg["torch_dtype"] = {"f16": "float16", "f32": "float32"}[args.dtype]
    json.dump(cfg, open(os.path.join(args.dst, "config.json"), "w"), indent=2)
    import plt_model as M

    tmp = os.path.join(args.dst, ".tokenizer.src.json")
    shutil.copy(os.path.join(args.src, "tokenizer.json"), tmp)
    M.write_tokenizer(args.dst, tmp, cfg)
    os.remove(tmp)


if __name__ == "__main__":
    main()
