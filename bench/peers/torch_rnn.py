#!/usr/bin/env python3
"""PyTorch peer of gpurnn-bench: the same model and the same training step, on the CPU.

Model: nn.RNN(nonlinearity="tanh" or "relu"), nn.GRU or nn.LSTM (--cell, with --layers
L) + nn.Linear(H, V) + cross-entropy, float32, with the same V, H, B, T as libgpurnn. One timed step is what a user's training loop does:

    optimizer.zero_grad(); out, h = rnn(x, h0); loss = cross_entropy(linear(out), y)
    loss.backward(); clip_grad_norm_(params, clip); optimizer.step(); h0 = h.detach()

(loss.item() is read every step, as libgpurnn returns the loss every step.) --loss sum|mean
is libgpurnn's reduction: the sum of the T*B per-token losses, or that sum / (T*B). TF32 is
turned off before any model is built (cudnn.allow_tf32, cuda.matmul.allow_tf32, float32
matmul precision "highest"), so that on a GPU too this would be FP32 against FP32.

Front ends (--frontend):
  onehot     x is the one-hot (T, B, V) float tensor, built once before timing, and
             nn.RNN(V, H) multiplies it by W_ih: the same model as libgpurnn's.
  embedding  nn.Embedding(V, H) of the int64 tokens, then nn.RNN(H, H): the usual way to
             feed tokens (it has an extra H x H input matrix).
gpurnn-bench runs each front end in its own process and takes the faster.

Output: one JSON object per line, with the field names of bench/README.md (the same
as gpurnn-bench's). When torch cannot be imported it prints one "skip" record saying why
and exits 0.
"""
import argparse
import json
import math
import os
import resource
import sys
import time


GATES = {"tanh": 1, "relu": 1, "gru": 3, "lstm": 4}


def model_flops(cell, L, V, H, B, T):
    # The same count as bench_model_flops() in bench/bench_record.c:
    # 6*T*B*(G*H^2 + (L-1)*2*G*H^2 + V*H), 6*T*B*(H^2 + V*H) for one tanh layer.
    G = GATES[cell]
    return 6.0 * T * B * (G * H * H + (L - 1) * 2 * G * H * H + V * H)


def cpu_model():
    name = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return "%s, %d CPUs" % (name, os.cpu_count() or 1)


def emit(rec):
    print(json.dumps({k: v for k, v in rec.items() if v is not None}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=65)
    ap.add_argument("--hidden", type=int, default=100)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", default="25", help="comma-separated sequence lengths")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--optimizer", choices=["sgd", "adagrad", "adam"], default="sgd")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--loss", choices=["sum", "mean"], default="sum")
    ap.add_argument("--frontend", default="onehot,embedding", help="onehot, embedding, or both (comma-separated)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--preset", default="custom")
    ap.add_argument("--cell", choices=sorted(GATES), default="tanh")
    ap.add_argument("--layers", type=int, default=1)
    args = ap.parse_args()

    V, H, B = args.vocab, args.hidden, args.batch
    seqs = [int(s) for s in args.seq.split(",") if s]
    fronts = [f for f in args.frontend.split(",") if f]
    base = dict(kind="step", impl="torch", backend="cpu", preset=args.preset, dtype="f32",
                optimizer=args.optimizer, reduction=args.loss, V=V, H=H, B=B, cell=args.cell, layers=args.layers,
                threads=args.threads, device=cpu_model())

    # The thread count must be in place before torch starts its pool.
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    try:
        import torch
        import torch.nn as nn
        import torch.nn.functional as F
    except Exception as e:  # ImportError, or a broken installation
        for T in seqs:
            emit(dict(base, kind="skip", status="skipped", T=T,
                      reason="%s has no usable torch (%s: %s); install python3-torch" %
                             (sys.executable, type(e).__name__, e)))
        return 0

    # FP32 against FP32: libgpurnn computes in float32, and on sm_80+ GPUs PyTorch may run
    # float32 convolutions/RNNs (cuDNN) and matmuls in TF32. Turn that off before any model
    # is built (on the CPU these flags change nothing).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    torch.set_num_threads(args.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    base["device"] = "%s; torch %s" % (base["device"], torch.__version__)

    for T in seqs:
        for front in fronts:
            rec = dict(base, T=T, variant=front, warmup=args.warmup)
            if front not in ("onehot", "embedding"):
                emit(dict(rec, kind="skip", status="error", reason="unknown front end %r" % front))
                continue
            try:
                rec.update(run_one(torch, nn, F, V, H, B, T, front, args))
                rec["status"] = "ok"
            except Exception as e:  # e.g. out of memory: report it, go on with the next
                rec.update(kind="skip", status="error", reason="%s: %s" % (type(e).__name__, e))
            emit(rec)
    return 0


def run_one(torch, nn, F, V, H, B, T, front, args):
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(0, V, (T, B), generator=g)
    targets = torch.randint(0, V, (T, B), generator=g)
    L = args.layers

    def recurrent(inputs):
        if args.cell == "gru":
            return nn.GRU(inputs, H, num_layers=L)
        if args.cell == "lstm":
            return nn.LSTM(inputs, H, num_layers=L)
        return nn.RNN(inputs, H, num_layers=L, nonlinearity=args.cell)

    if front == "onehot":
        rnn = recurrent(V)
        embed = None
        x = F.one_hot(tokens, V).to(torch.float32)  # built once, outside the timed step
    else:
        rnn = recurrent(H)
        embed = nn.Embedding(V, H)
        x = tokens
    head = nn.Linear(H, V)
    params = list(rnn.parameters()) + list(head.parameters()) + (list(embed.parameters()) if embed else [])
    if args.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=args.lr)
    elif args.optimizer == "adagrad":
        opt = torch.optim.Adagrad(params, lr=args.lr)
    else:
        opt = torch.optim.Adam(params, lr=args.lr)
    flat_targets = targets.reshape(-1)
    h0 = torch.zeros(L, B, H)
    if args.cell == "lstm":
        h0 = (h0, torch.zeros(L, B, H))

    def step(h0):
        opt.zero_grad(set_to_none=True)
        inp = embed(x) if embed is not None else x
        out, h = rnn(inp, h0)
        logits = head(out).reshape(T * B, V)
        # reduction "sum": the sum of the T*B per-token losses; "mean": that sum / (T*B),
        # libgpurnn's two reductions (gpurnn.h); the gradients are those of this loss
        loss = F.cross_entropy(logits, flat_targets, reduction=args.loss)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, args.clip)
        opt.step()
        h = tuple(t.detach() for t in h) if isinstance(h, tuple) else h.detach()
        return h, loss.item()

    loss = float("nan")
    for _ in range(args.warmup):
        h0, loss = step(h0)
    times = []
    total = 0.0
    for _ in range(args.steps):
        t0 = time.perf_counter()
        h0, loss = step(h0)
        dt = time.perf_counter() - t0
        times.append(dt)
        total += dt
        if total > args.max_time:
            break
    times.sort()
    n = len(times)
    median = times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])
    flops = model_flops(args.cell, L, V, H, B, T)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0  # Linux: kB
    return dict(repeats=n, median_s=median, min_s=times[0], max_s=times[-1],
                tokens_per_s=T * B / median, flops_per_step=flops, gflops=flops / median * 1e-9,
                loss=(loss / (T * B) if args.loss == "sum" else loss),  # per token, as gpurnn-bench's
                peak_rss_bytes=peak)


if __name__ == "__main__":
    sys.exit(main())
