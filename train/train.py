#!/usr/bin/env python3
"""Train a PLT / looped / non-looped model (PLT-SPEC sections 3 and 6) with next-token
cross-entropy on the last loop, then export the model directory of PLT-SPEC section 1.

    python train/train.py --data train/data --out train/runs/plt2 --variant plt \
        --loops 2 --hidden 256 --layers 4 --tokens 2000000 --seed 0

--variant: plt (PLT with G-SWA, query gate; --gate hidden for the hidden-state gate),
           vanilla (the vanilla looped baseline of section 6), shared-kv (PLT ablation: shared
           loop-0 KV only, no local branch), or base (forces L = 1).
Uses whatever device JAX finds (a GPU when jax[cuda] is installed, else the CPU).
Writes in --out: config.json, model.safetensors, tokenizer.json, train_log.jsonl, result.json.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plt_model as M  # noqa: E402


def batches(data, B, T, rng):
    # windows of T tokens starting with <|endoftext|> (BOS, id 0) then T text tokens; target = next
    while True:
        off = rng.integers(0, len(data) - T - 1, size=B)
        x = np.stack([data[o:o + T] for o in off]).astype(np.int32)
        win = np.concatenate([np.zeros((B, 1), np.int32), x], axis=1)  # [B, T+1]
        yield win[:, :T], win[:, 1:]


def val_windows(data, T, limit):
    n = min((len(data) - 1) // T, limit) if limit else (len(data) - 1) // T
    x = np.stack([data[i * T:(i + 1) * T] for i in range(n)]).astype(np.int32)
    win = np.concatenate([np.zeros((n, 1), np.int32), x], axis=1)
    return win[:, :T], win[:, 1:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="train/data")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", default="plt", choices=["plt", "vanilla", "shared-kv", "base"])
    ap.add_argument("--gate", default="query", choices=["query", "hidden"])
    ap.add_argument("--loops", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=0, help="MLP width (default: 8/3 * hidden, rounded to 16)")
    ap.add_argument("--window", type=int, default=32, help="plt_window_size left")
    ap.add_argument("--emb-scale", type=float, default=1.0,
                    help="plt_emb_scale a (loops >= 1 take a*E + b*C); 0 means sqrt(hidden)")
    ap.add_argument("--hidden-scale", type=float, default=1.0, help="plt_hidden_scale b")
    ap.add_argument("--ctx", type=int, default=128, help="training sequence length T")
    ap.add_argument("--max-pos", type=int, default=0, help="max_position_embeddings (default 2*ctx)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--tokens", type=float, default=1e6, help="training tokens (B*T per step)")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-every", type=int, default=0, help="steps between validation checks")
    ap.add_argument("--eval-windows", type=int, default=0, help="validation windows (0: all)")
    ap.add_argument("--time-limit", type=float, default=0, help="stop after this many minutes")
    ap.add_argument("--schedule", default="tokens", choices=["tokens", "time"],
                    help="cosine decay over --tokens, or over --time-limit (ends on time, tokens vary)")
    ap.add_argument("--save-every", type=float, default=0, help="minutes between interim exports")
    ap.add_argument("--dtype", default="f32", choices=["f16", "f32"], help="exported weights")
    args = ap.parse_args()

    t_start = time.time()
    L = 1 if args.variant == "base" else args.loops
    ffn = args.ffn or int(round(args.hidden * 8 / 3 / 16)) * 16
    meta = json.load(open(os.path.join(args.data, "meta.json")))
    cfg = M.default_config(
        vocab_size=meta["vocab_size"], hidden_size=args.hidden, intermediate_size=ffn,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads, head_dim=args.hidden // args.heads,
        max_position_embeddings=args.max_pos or 2 * args.ctx, plt_num_loops=L,
        plt_window_size=[args.window, 0], plt_gate_use_hidden_states=args.gate == "hidden",
        plt_loop_mode="vanilla" if args.variant == "vanilla" else "parallel",
        bos_token_id=meta["eot_id"], eos_token_id=meta["eot_id"],
        plt_emb_scale=args.emb_scale or math.sqrt(args.hidden), plt_hidden_scale=args.hidden_scale)
    gate_kind = {"plt": args.gate, "shared-kv": "global"}.get(args.variant, args.gate)

    train = np.fromfile(os.path.join(args.data, "train.bin"), dtype=np.uint16)
    val = np.fromfile(os.path.join(args.data, "val.bin"), dtype=np.uint16)
    B, T = args.batch, args.ctx
    steps = max(1, int(args.tokens // (B * T)))
    params = M.init_params(cfg, args.seed)
    n_params = M.count_params(params)
    print(f"device {jax.devices()[0]}  variant {args.variant} L={L}  params {n_params:,}  "
          f"steps {steps} x {B}x{T} = {steps * B * T:,} tokens", flush=True)

    warm = min(args.warmup, max(1, steps // 10))

    def sched(i, progress):
        # linear warmup over `warm` steps, then cosine from lr to lr*min_lr_frac as progress -> 1
        if i < warm:
            return args.lr * (i + 1) / warm
        c = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * c)

    def decay_mask(p):  # no weight decay on norms and biases
        return {k: v.ndim == 2 for k, v in p.items()}

    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(1.0, b1=0.9, b2=0.95, weight_decay=args.wd, mask=decay_mask))
    opt_state = opt.init(params)

    def loss_fn(p, x, y):
        logits = M.forward(cfg, p, x, gate_kind)
        lp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.mean(jnp.take_along_axis(lp, y[..., None], axis=-1))

    @jax.jit
    def step(p, s, x, y, lr):
        loss, g = jax.value_and_grad(loss_fn)(p, x, y)
        upd, s = opt.update(g, s, p)
        upd = jax.tree.map(lambda u: u * lr, upd)
        return optax.apply_updates(p, upd), s, loss

    @jax.jit
    def eval_loss(p, x, y):
        logits = M.forward(cfg, p, x, gate_kind)
        lp = jax.nn.log_softmax(logits, axis=-1)
        return -jnp.sum(jnp.take_along_axis(lp, y[..., None], axis=-1))

    vx, vy = val_windows(val, T, args.eval_windows)

    def evaluate(p, limit=None):
        xs, ys = (vx, vy) if limit is None else (vx[:limit], vy[:limit])
        tot, n = 0.0, 0
        for i in range(0, len(xs), B):
            xb, yb = xs[i:i + B], ys[i:i + B]
            tot += float(eval_loss(p, xb, yb))
            n += yb.size
        return tot / n

    os.makedirs(args.out, exist_ok=True)
    log = open(os.path.join(args.out, "train_log.jsonl"), "w")
    rng = np.random.default_rng(args.seed + 1000)
    it = batches(train, B, T, rng)
    t0 = time.time()
    run_loss, done, stopped_early = None, 0, False
    last_save = time.time()
    for s_i in range(steps):
        x, y = next(it)
        if args.schedule == "time":
            progress = (time.time() - t0) / (args.time_limit * 60)
        else:
            progress = s_i / steps
        lr = sched(s_i, progress)
        params, opt_state, loss = step(params, opt_state, x, y, jnp.float32(lr))
        done = s_i + 1
        if s_i % 20 == 0 or done == steps:
            loss = float(loss)
            run_loss = loss if run_loss is None else 0.9 * run_loss + 0.1 * loss
            el = time.time() - t0
            rec = {"step": done, "tokens": done * B * T, "loss": loss, "smooth": run_loss,
                   "lr": lr, "sec": round(el, 1), "tok_per_s": round(done * B * T / max(el, 1e-9))}
            if args.eval_every and done % args.eval_every < 20 and s_i % 20 == 0 and done > 20:
                rec["val_loss_subset"] = evaluate(params, 64)
            print(json.dumps(rec), flush=True)
            log.write(json.dumps(rec) + "\n")
            log.flush()
        if args.save_every and time.time() - last_save > args.save_every * 60:
            M.export(cfg, params, args.out, os.path.join(args.data, "tokenizer.json"), "f32", gate_kind)
            last_save = time.time()
        if args.time_limit and time.time() - t0 > args.time_limit * 60:
            stopped_early = args.schedule != "time"
            print(f"time limit reached after {done} of {steps} steps", flush=True)
            break
    train_sec = time.time() - t0
    vl = evaluate(params)
    result = {"variant": args.variant, "gate": gate_kind if L > 1 and args.variant != "vanilla" else None,
              "loops": L, "params": n_params, "steps": done, "planned_steps": steps,
              "train_tokens": done * B * T, "batch": B, "ctx": T, "seed": args.seed,
              "val_loss": vl, "val_ppl": math.exp(vl), "val_tokens": int(vy.size),
              "train_seconds": round(train_sec, 1), "total_seconds": round(time.time() - t_start, 1),
              "stopped_early": stopped_early, "config": cfg, "argv": sys.argv[1:]}
    print(json.dumps({k: v for k, v in result.items() if k != "config"}), flush=True)
    M.export(cfg, params, args.out, os.path.join(args.data, "tokenizer.json"), args.dtype, gate_kind)
    json.dump(result, open(os.path.join(args.out, "result.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
