#!/usr/bin/env python3
"""The PyTorch figure for `sweeps/tutorial.toml` (issue 16, item 3): one of the tutorial's
networks trained the tutorial's way in plain PyTorch on the CPU, reading the project's data
cache, so that cifar-sweep's tutorial run has a reference-framework number on the same
(JPEG) copy of CIFAR-10 and the same machine.

    torch_tutorial.py --cache data/cifar-10-batches-bin --model vgg6 --lr 0.001 --batch 20 \
        --dropout 0.1 --epochs 30 --threads 2
        the tutorial's vgg6: one JSON line per epoch, then one with the test result
    torch_tutorial.py --cache ... --model lenet --train-subset 2000 --epochs 1
        a quick check of the script

The recipe is the tutorial's and the trainer's defaults for it: plain SGD (no momentum, no
weight decay) at a constant rate, no augmentation, inputs scaled to [0, 1] and normalised
with CIFAR-10's channel mean and std (as `trainer::data::Normalize::cifar10`), a stratified
20% validation split (each class gives a fifth of its images, chosen by a seeded
permutation), a fresh shuffle each epoch, and the weights of the epoch with the lowest
validation loss evaluated on the 10,000 test images. The networks are `torch_bench.build`'s,
which mirror crates/trainer/src/models/. The split and the shuffles are numpy's, not the
trainer's generator, so the runs are the same recipe, not the same random draws.
"""

import argparse
import copy
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from airbench_torch import MEAN, STD, load_cifar  # noqa: E402
from torch_bench import build  # noqa: E402

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def stratified_split(labels, valid_fraction, rng):
    """Each class gives `valid_fraction` of its images to validation."""
    train, valid = [], []
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        k = int(round(len(idx) * valid_fraction))
        valid.append(idx[:k])
        train.append(idx[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(valid))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="the official binary layout (data_batch_*.bin, test_batch.bin)")
    p.add_argument("--model", choices=["lenet", "cnn3", "vgg6"], required=True)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--valid-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-subset", type=int, default=0, help="first N training images only (a quick check)")
    a = p.parse_args()

    import torch
    import torch.nn.functional as F

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    t_start = time.perf_counter()

    all_u8, all_y, test_u8, test_y = load_cifar(a.cache, a.train_subset)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)

    def norm(u8):
        return (torch.from_numpy(np.ascontiguousarray(u8)).float() / 255.0 - mean) / std

    tr, va = stratified_split(all_y, a.valid_fraction, rng)
    train_x, train_y = norm(all_u8[tr]), torch.from_numpy(all_y[tr])
    valid_x, valid_y = norm(all_u8[va]), torch.from_numpy(all_y[va])
    test_x, test_y = norm(test_u8), torch.from_numpy(test_y)

    model = build(a.model, a.dropout)
    opt = torch.optim.SGD(model.parameters(), lr=a.lr)

    def evaluate(x, y, bs=500):
        model.eval()
        loss, correct = 0.0, 0
        per_class = np.zeros((10, 2), dtype=np.int64)
        with torch.inference_mode():
            for i in range(0, len(x), bs):
                out = model(x[i : i + bs])
                loss += F.cross_entropy(out, y[i : i + bs], reduction="sum").item()
                pred = out.argmax(1)
                hit = (pred == y[i : i + bs]).numpy()
                correct += int(hit.sum())
                np.add.at(per_class, (y[i : i + bs].numpy(), 0), hit)
                np.add.at(per_class, (y[i : i + bs].numpy(), 1), 1)
        return loss / len(x), correct / len(x), per_class

    best = (float("inf"), 0, None)
    for epoch in range(1, a.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(train_x)))
        loss_sum, correct, seen = 0.0, 0, 0
        for i in range(0, len(order), a.batch):
            idx = order[i : i + a.batch]
            x, y = train_x[idx], train_y[idx]
            out = model(x)
            loss = F.cross_entropy(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == y).sum())
            seen += len(idx)
        t_train = time.perf_counter() - t0
        v_loss, v_acc, _ = evaluate(valid_x, valid_y)
        secs = time.perf_counter() - t0
        if v_loss < best[0]:
            best = (v_loss, epoch, copy.deepcopy(model.state_dict()))
        print(json.dumps(dict(epoch=epoch, train_loss=round(loss_sum / seen, 4), train_acc=round(correct / seen, 4),
                              valid_loss=round(v_loss, 4), valid_acc=round(v_acc, 4), secs=round(secs, 1),
                              train_img_s=round(seen / t_train, 1))), flush=True)

    model.load_state_dict(best[2])
    t_loss, t_acc, per_class = evaluate(test_x, test_y)
    print(json.dumps(dict(
        model=a.model, lr=a.lr, batch=a.batch, dropout=a.dropout, epochs=a.epochs, seed=a.seed,
        threads=a.threads, torch=torch.__version__, best_epoch=best[1], best_valid_loss=round(best[0], 4),
        test_loss=round(t_loss, 4), test_acc=round(t_acc, 4),
        per_class={c: round(h / n, 4) for c, (h, n) in zip(CLASSES, per_class)},
        wall_s=round(time.perf_counter() - t_start, 1))), flush=True)


if __name__ == "__main__":
    main()
