#!/usr/bin/env python3
"""PyTorch side of bench/compare.sh: train the benchmark models with the same
protocol as `gradflow train` and print one JSON object per line.

Protocol (identical to the gradflow side): MNIST normalized with mean 0.1307,
std 0.3081; cross-entropy; Adam lr 1e-3 (torch defaults otherwise); a fresh
shuffle each epoch; the last partial batch dropped; `--threads` intra-op
threads. Epoch 1 is a warm-up; epochs 2..E are timed (the training loop only:
batch gather, forward, loss, backward, step, and per-step loss.item() and
accuracy, which gradflow's loop also computes). The caller takes the median.

    python3 bench/torch_bench.py train --model mlp-800 --batch 128 --epochs 4
    python3 bench/torch_bench.py peak            # single-precision GEMM GFLOP/s, 2048^3
    python3 bench/torch_bench.py default-run     # `gradflow train`'s default run, RSS per epoch
"""

import argparse
import gzip
import json
import os
import resource
import struct
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.1307, 0.3081


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_mnist(data_dir, split="train"):
    prefix = "train" if split == "train" else "t10k"
    x = read_idx(Path(data_dir) / f"{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = read_idx(Path(data_dir) / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    x = (x - MEAN) / STD
    return torch.from_numpy(x.reshape(-1, 1, 28, 28).copy()), torch.from_numpy(y.copy())


def mlp(*widths):
    layers = [nn.Flatten()]
    for i in range(len(widths) - 1):
        layers.append(nn.Linear(widths[i], widths[i + 1]))
        if i + 2 < len(widths):
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def lenet5():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


class Residual(nn.Module):
    """gradflow's Residual block: y = x + body(x)."""

    def __init__(self, *body):
        super().__init__()
        self.body = nn.Sequential(*body)

    def forward(self, x):
        return x + self.body(x)


def resmlp(width, blocks):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, width),
        nn.ReLU(),
        *[Residual(nn.Linear(width, width), nn.ReLU()) for _ in range(blocks)],
        nn.Linear(width, 10),
    )


class Rows(nn.Module):
    """Reads a [N, 1, 28, 28] image as 28 steps of 28 pixels, as the sequence presets do."""

    def forward(self, x):
        return x.view(x.shape[0], 28, 28)


class PositionEmbedding(nn.Module):
    """gradflow's PositionEmbedding: a learned [T, E] table added to every sample."""

    def __init__(self, steps, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(steps, dim) * 0.02)

    def forward(self, x):
        return x + self.weight


class MeanOverTime(nn.Module):
    def forward(self, x):
        return x.mean(dim=1)


def vit():
    """The `vit` preset: rows as tokens, Linear(28, 64), learned positions, two
    pre-norm encoder layers (4 heads, feed-forward 128, no dropout), LayerNorm,
    mean over time, Linear(64, 10)."""
    layer = lambda: nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True, norm_first=True)
    return nn.Sequential(
        Rows(), nn.Linear(28, 64), PositionEmbedding(28, 64), layer(), layer(),
        nn.LayerNorm(64), MeanOverTime(), nn.Linear(64, 10),
    )


class LastStep(nn.Module):
    """An LSTM's last hidden state (gradflow's output = "last")."""

    def __init__(self, lstm):
        super().__init__()
        self.lstm = lstm

    def forward(self, x):
        _, (h, _) = self.lstm(x)
        return h[-1]


def lstm():
    """The `lstm` preset: 28 rows of 28 pixels, LSTM(28, 128), Linear(128, 10) on the last step."""
    return nn.Sequential(Rows(), LastStep(nn.LSTM(28, 128, batch_first=True)), nn.Linear(128, 10))


MODELS = {
    "resmlp-256x8": lambda: resmlp(256, 8),
    "vit": vit,
    "lstm": lstm,
    "mlp-128": lambda: mlp(784, 128, 10),
    "mlp-800": lambda: mlp(784, 800, 10),
    "mlp-1024x2": lambda: mlp(784, 1024, 1024, 10),
    "lenet5": lenet5,
}


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def train(args):
    torch.manual_seed(args.seed)
    x_all, y_all = load_mnist(args.data)
    if args.limit_train:
        x_all, y_all = x_all[: args.limit_train], y_all[: args.limit_train]
    model = MODELS[args.model]()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    n = x_all.shape[0]
    steps = n // args.batch  # drop_last
    for epoch in range(1, args.epochs + 1):
        model.train()
        perm = torch.randperm(n)
        correct = seen = 0
        total_loss = 0.0
        t0 = time.perf_counter()
        for s in range(steps):
            idx = perm[s * args.batch : (s + 1) * args.batch]
            x, y = x_all[idx], y_all[idx]
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item()
            correct += (out.argmax(1) == y).sum().item()
            seen += y.shape[0]
        secs = time.perf_counter() - t0
        print(
            json.dumps(
                {
                    "framework": "torch",
                    "model": args.model,
                    "batch": args.batch,
                    "epoch": epoch,
                    "seconds": secs,
                    "samples_per_second": seen / secs,
                    "train_loss": total_loss / steps,
                    "train_accuracy": correct / seen,
                    "rss_mib": rss_mib(),
                }
            ),
            flush=True,
        )
    return model


def default_run(args):
    """The PyTorch equivalent of a bare `gradflow train`: 784-800-10, batch 128, Adam 1e-3,
    cosine schedule over 5 epochs, then a test evaluation; RSS after every epoch."""
    torch.manual_seed(args.seed)
    x_all, y_all = load_mnist(args.data)
    x_test, y_test = load_mnist(args.data, "test")
    model = MODELS["mlp-800"]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.epochs)
    n, batch = x_all.shape[0], 128
    for epoch in range(1, args.epochs + 1):
        perm = torch.randperm(n)
        t0 = time.perf_counter()
        for s in range(0, n, batch):
            idx = perm[s : s + batch]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
        sched.step()
        print(
            json.dumps({"framework": "torch", "epoch": epoch, "seconds": time.perf_counter() - t0, "rss_mib": rss_mib()}),
            flush=True,
        )
    with torch.no_grad():
        acc = sum((model(x_test[i : i + 1000]).argmax(1) == y_test[i : i + 1000]).sum().item() for i in range(0, 10000, 1000))
    print(
        json.dumps(
            {
                "framework": "torch",
                "test_accuracy": acc / 10000,
                "rss_mib": rss_mib(),
                "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            }
        ),
        flush=True,
    )


def best_gflops(fn, n, reps):
    fn()  # warm-up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def peak(args):
    n = args.n
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    torch_gf = best_gflops(lambda: torch.matmul(a, b, out=c), n, args.reps)
    an, bn = a.numpy(), b.numpy()
    cn = np.empty((n, n), dtype=np.float32)
    numpy_gf = best_gflops(lambda: np.matmul(an, bn, out=cn), n, args.reps)
    print(json.dumps({"n": n, "torch_gflops": torch_gf, "numpy_gflops": numpy_gf}), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=os.environ.get("GRADFLOW_DATA", str(ROOT / "data" / "mnist")))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", choices=sorted(MODELS), required=True)
    t.add_argument("--batch", type=int, required=True)
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--limit-train", type=int, default=0, help="train on the first N images (0: all)")
    d = sub.add_parser("default-run")
    d.add_argument("--epochs", type=int, default=5)
    k = sub.add_parser("peak")
    k.add_argument("--n", type=int, default=2048)
    k.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    {"train": train, "default-run": default_run, "peak": peak}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
