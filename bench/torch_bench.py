#!/usr/bin/env python3
"""PyTorch side of `cifar-bench` (issue #4): the project's three networks, defined as in
crates/trainer/src/models/, trained and run for inference on the CPU with a fixed thread count.

    torch_bench.py child --model vgg6 --batch 64 --threads 2 --time 3
        one configuration: prints one JSON line (train/infer images per second, peak RSS)
    torch_bench.py epoch --model lenet --batch 20 --threads 2 --cache data/cifar-10-batches-bin
        one real-data epoch read from the project's cache (official binary layout), timed end
        to end (reading the files, the 80/20 split, batching, normalisation, training)

Training step = forward, cross-entropy, backward, SGD (lr 0.01, no momentum) and the loss and
correct-count read back, like `trainer::train::train_step`. Inference = eval mode under
`torch.inference_mode()`, then argmax.

On a GPU (`--device cuda:0`) the step keeps the loss and correct count on the device (as the
trainer does there) and the clock stops once the device is idle. `--precision`: fp32 (TF32
off for cuDNN convolutions and matrix products), tf32 (on for both), bf16 (autocast to
bfloat16, TF32 off).
"""

import argparse
import json
import os
import resource
import sys
import time


def peak_rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def build(arch, dropout=0.0):
    import torch.nn as nn

    if arch == "lenet":
        return nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )
    if arch == "cnn3":
        return nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 64), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(64, 10),
        )
    if arch == "vgg6":
        def block(ci, cm, co):
            return [
                nn.Conv2d(ci, cm, 3, padding=1), nn.BatchNorm2d(cm), nn.ReLU(),
                nn.Conv2d(cm, co, 3, padding=1), nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        return nn.Sequential(
            *block(3, 32, 64),
            *block(64, 128, 128),
            nn.Dropout2d(0.05),
            *block(128, 256, 256),
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(4096, 1024), nn.ReLU(),
            nn.Linear(1024, 512), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(512, 10),
        )
    raise SystemExit(f"unknown model {arch}")


def setup(threads):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    torch.manual_seed(0)
    return torch


def set_precision(torch, device, precision):
    """The TF32 switches for `precision`, and the autocast context its forward passes run in."""
    import contextlib

    if precision not in ("fp32", "tf32", "bf16"):
        raise SystemExit(f"unknown precision {precision} (fp32, tf32, bf16)")
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if precision == "bf16":
        return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def make_step(torch, model, opt, autocast=None, deferred=False):
    """One training step. `deferred`: returns the loss and correct count as device tensors
    instead of reading them back."""
    import contextlib
    import torch.nn.functional as F

    autocast = autocast or contextlib.nullcontext

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with autocast():
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        loss.backward()
        opt.step()
        correct = (logits.argmax(1) == y).sum()
        if deferred:
            return loss.detach(), correct
        return loss.item(), int(correct.item())

    return step


def cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed(secs, fn, sync=lambda: None):
    """Calls per wall second, calls, and process CPU seconds per call; `sync` waits for the
    device before the clock starts and before it stops (and every 16 calls)."""
    fn()
    sync()
    t0, c0 = time.perf_counter(), cpu_s()
    n = 0
    while n < 3 or time.perf_counter() - t0 < secs:
        fn()
        n += 1
        if n % 16 == 0:
            sync()
    sync()
    return n / (time.perf_counter() - t0), n, (cpu_s() - c0) / n


def device_of(torch, name):
    dev = torch.device(name)
    if dev.type == "cuda":
        return dev, (lambda: torch.cuda.synchronize(dev))
    return dev, (lambda: None)


def child(a):
    torch = setup(a.threads)
    dev, sync = device_of(torch, a.device)
    autocast = set_precision(torch, dev, a.precision)
    model = build(a.model).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(a.batch, 3, 32, 32, generator=g) * 4 - 2).to(dev)
    y = torch.randint(0, 10, (a.batch,), generator=g).to(dev)
    step = make_step(torch, model, opt, autocast, deferred=dev.type != "cpu")
    model.train()
    started = time.time()
    train_rate, train_steps, train_cpu = timed(a.time, lambda: step(x, y), sync)
    model.eval()

    def infer():
        with torch.inference_mode(), autocast():
            pred = model(x).argmax(1)
        if dev.type == "cpu":
            pred.tolist()

    infer_rate, infer_steps, infer_cpu = timed(a.time / 2, infer, sync)
    print(json.dumps({
        "train_img_s": train_rate * a.batch,
        "infer_img_s": infer_rate * a.batch,
        "train_steps": train_steps,
        "infer_steps": infer_steps,
        "train_cpu_s_per_img": train_cpu / a.batch,
        "infer_cpu_s_per_img": infer_cpu / a.batch,
        "peak_rss_kib": peak_rss_kib(),
        "started_unix_s": started,
        "ended_unix_s": time.time(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def epoch(a):
    import numpy as np

    # Importing torch is interpreter start-up, not data loading: not timed.
    torch = setup(a.threads)
    t0 = time.perf_counter()
    records = []
    for i in range(1, 6):
        raw = np.fromfile(os.path.join(a.cache, f"data_batch_{i}.bin"), dtype=np.uint8)
        records.append(raw.reshape(-1, 3073))
    rec = np.concatenate(records)
    labels = rec[:, 0].astype(np.int64)
    images = rec[:, 1:].reshape(-1, 3, 32, 32)
    # Stratified 80/20 split, then a shuffled epoch order (the project's own permutation
    # differs; the work is the same).
    rng = np.random.default_rng(0)
    train_idx = []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        train_idx.append(idx[: len(idx) - round(len(idx) * 0.2)])
    order = np.concatenate(train_idx)
    rng.shuffle(order)
    mean = np.array(MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.array(STD, dtype=np.float32).reshape(1, 3, 1, 1)
    load_s = time.perf_counter() - t0

    dev, sync = device_of(torch, a.device)
    autocast = set_precision(torch, dev, a.precision)
    deferred = dev.type != "cpu"
    model = build(a.model).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    step = make_step(torch, model, opt, autocast, deferred)
    model.train()
    t1 = time.perf_counter()
    loss_sum, correct = 0.0, 0
    for s in range(0, len(order), a.batch):
        idx = order[s : s + a.batch]
        x = (images[idx].astype(np.float32) / 255.0 - mean) / std
        x = torch.from_numpy(x).to(dev, non_blocking=True)
        y = torch.from_numpy(labels[idx]).to(dev, non_blocking=True)
        loss, c = step(x, y)
        # On a GPU the sums stay on the device until the end of the epoch.
        loss_sum = loss_sum + loss * len(idx)
        correct = correct + c
    if deferred:
        loss_sum, correct = float(loss_sum.item()), int(correct.item())
    sync()
    train_s = time.perf_counter() - t1
    print(json.dumps({
        "images": int(len(order)),
        "load_s": load_s,
        "train_s": train_s,
        "epoch_s": time.perf_counter() - t0,
        "loss": loss_sum / len(order),
        "acc": correct / len(order),
        "peak_rss_kib": peak_rss_kib(),
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("child")
    c.add_argument("--model", default="lenet")
    c.add_argument("--batch", type=int, default=20)
    c.add_argument("--threads", type=int, default=2)
    c.add_argument("--time", type=float, default=3.0)
    c.add_argument("--device", default="cpu")
    c.add_argument("--precision", default="fp32")
    e = sub.add_parser("epoch")
    e.add_argument("--model", default="lenet")
    e.add_argument("--batch", type=int, default=20)
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--cache", required=True)
    e.add_argument("--device", default="cpu")
    e.add_argument("--precision", default="fp32")
    a = p.parse_args()
    {"child": child, "epoch": epoch}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
