#!/usr/bin/env python3
"""The PyTorch anchor for issue 16: airbench94's recipe (Keller Jordan, arXiv 2404.00498) in
plain PyTorch fp32 on the CPU, reading the project's data cache, so that `cifar-sweep run
sweeps/airnet.toml` has a figure from the reference framework on the same machine and the
same (JPEG) copy of CIFAR-10.

    airbench_torch.py --cache data/cifar-10-batches-bin --threads 2 --seed 0
        the full run: prints one JSON line (test accuracy with and without TTA, times)
    airbench_torch.py --cache ... --train-subset 2048 --epochs 1
        a quick check of the script

What it follows from the paper (the numbers are the paper's): a fixed 2x2 patch-whitening
convolution (3 -> 24, eigenvectors of the patch second moments of the first 5,000 training
images over sqrt(eigenvalue + 5e-4), and their negatives; its bias trained for the first 3
epochs only), GELU, three blocks 64/256/256 of conv3x3-maxpool2-BN-GELU-conv3x3-BN-GELU
(convolutions without bias, partial identity init; batch norm without a learnable scale,
eps 1e-12, running = 0.6 running + 0.4 batch), max pool over the 3x3 map, linear 256 -> 10
without bias times 1/9; summed label-smoothed (0.2) cross-entropy; Nesterov SGD, momentum
0.85, lr 11.5 and decoupled weight decay 0.0153 per 1024 examples, batch-norm biases at 64x
the learning rate; a triangular schedule (0.2 -> 1 at 23% of the steps -> 0.07); lookahead
every 5 steps with decay 0.95^5 (step/steps)^3; alternating flip and 2-pixel reflected
translation; 9.9 epochs of batch 1024 on all 50,000 training images; test-time augmentation
by mirror and +-1 pixel translation. fp32 throughout (the paper runs fp16 on a GPU).
"""

import argparse
import json
import math
import os
import resource
import sys
import time

import numpy as np

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def load(cache, name_list):
    recs = [np.fromfile(os.path.join(cache, n), dtype=np.uint8).reshape(-1, 3073) for n in name_list]
    rec = np.concatenate(recs)
    return rec[:, 1:].reshape(-1, 3, 32, 32), rec[:, 0].astype(np.int64)


def load_cifar(cache, train_subset=0):
    """The 50,000 training and 10,000 test images (u8 NCHW) and labels; with `train_subset`,
    the first N training images only."""
    train_u8, train_y = load(cache, [f"data_batch_{i}.bin" for i in range(1, 6)])
    test_u8, test_y = load(cache, ["test_batch.bin"])
    if train_subset:
        train_u8, train_y = train_u8[:train_subset], train_y[:train_subset]
    return train_u8, train_y, test_u8, test_y


def build(torch, nn, widths=(64, 256, 256)):
    class BN(nn.BatchNorm2d):
        def __init__(self, c):
            super().__init__(c, eps=1e-12, momentum=0.4)
            self.weight.requires_grad = False

    def conv(ci, co):
        c = nn.Conv2d(ci, co, 3, padding=1, bias=False)
        with torch.no_grad():
            w = c.weight
            for i in range(min(ci, co)):
                w[i].zero_()
                w[i, i, 1, 1] = 1.0
        return c

    class Block(nn.Module):
        def __init__(self, ci, co):
            super().__init__()
            self.conv1, self.pool, self.norm1 = conv(ci, co), nn.MaxPool2d(2), BN(co)
            self.conv2, self.norm2, self.act = conv(co, co), BN(co), nn.GELU()

        def forward(self, x):
            x = self.act(self.norm1(self.pool(self.conv1(x))))
            return self.act(self.norm2(self.conv2(x)))

    class Head(nn.Module):
        def forward(self, x):
            return x.amax(dim=(2, 3))

    class Scale(nn.Module):
        def forward(self, x):
            return x / 9.0

    whiten = nn.Conv2d(3, 24, 2, padding=0, bias=True)
    whiten.weight.requires_grad = False
    return nn.Sequential(
        whiten, nn.GELU(),
        Block(24, widths[0]), Block(widths[0], widths[1]), Block(widths[1], widths[2]),
        Head(), nn.Linear(widths[2], 10, bias=False), Scale(),
    )


def init_whitening(torch, layer, x, eps=5e-4):
    c, k = x.shape[1], layer.weight.shape[-1]
    patches = x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
    cov = patches.T @ patches / len(patches)
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0), vecs.T.flip(0)
    w = (vecs / torch.sqrt(vals + eps)[:, None]).reshape(-1, c, k, k)
    with torch.no_grad():
        layer.weight.copy_(torch.cat([w, -w]))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", required=True, help="the official binary layout (data_batch_*.bin, test_batch.bin)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=float, default=9.9)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--train-subset", type=int, default=0, help="first N training images only (a quick check)")
    a = p.parse_args()

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    t_start = time.perf_counter()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed)

    train_u8, train_y, test_u8, test_y = load_cifar(a.cache, a.train_subset)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    norm = lambda u8: (torch.from_numpy(u8).float() / 255.0 - mean) / std
    train_x, test_x = norm(train_u8), norm(test_u8)
    train_y, test_y = torch.from_numpy(train_y), torch.from_numpy(test_y)
    n = len(train_x)

    model = build(torch, nn).to(memory_format=torch.channels_last)
    init_whitening(torch, model[0], train_x[:5000])

    momentum, bs = 0.85, a.batch
    kilostep = 1024 * (1 + 1 / (1 - momentum))
    lr = 11.5 / kilostep
    wd = 0.0153 * bs / kilostep
    lr_bias = lr * 64.0
    norm_biases = [p for k, p in model.named_parameters() if "norm" in k and p.requires_grad]
    others = [p for k, p in model.named_parameters() if "norm" not in k and p.requires_grad]
    opt = torch.optim.SGD(
        [dict(params=norm_biases, lr=lr_bias, weight_decay=wd / lr_bias),
         dict(params=others, lr=lr, weight_decay=wd / lr)],
        momentum=momentum, nesterov=True)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    steps_per_epoch = math.ceil(n / bs)
    total = math.ceil(steps_per_epoch * a.epochs)
    sched = np.interp(np.arange(total + 1), [0, int(0.23 * total), total], [0.2, 1.0, 0.07])
    alpha = 0.95 ** 5 * (np.arange(total + 1) / total) ** 3
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def lookahead(decay):
        with torch.no_grad():
            for k, v in model.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].lerp_(v, 1 - decay)
                    v.copy_(ema[k])

    # Alternating flip: a random half mirrored on even epochs, the other half on odd ones.
    flip_mask = torch.rand(n, generator=gen) < 0.5
    padded = F.pad(torch.where(flip_mask.view(-1, 1, 1, 1), train_x.flip(-1), train_x), (2,) * 4, mode="reflect")
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")
    step, epoch_log, t_train = 0, [], time.perf_counter()
    for epoch in range(math.ceil(a.epochs)):
        model[0].bias.requires_grad = epoch < 3
        model.train()
        t_epoch = time.perf_counter()
        shifts = torch.randint(-2, 3, (n, 2), generator=gen)
        order = torch.randperm(n, generator=gen)
        seen = loss_sum = 0.0
        for s in range(0, n, bs):
            idx = order[s : s + bs]
            xs = torch.empty(len(idx), 3, 32, 32)
            for j, i in enumerate(idx.tolist()):
                dy, dx = shifts[i].tolist()
                xs[j] = padded[i, :, 2 + dy : 34 + dy, 2 + dx : 34 + dx]
            if epoch % 2 == 1:
                xs = xs.flip(-1)
            xs = xs.contiguous(memory_format=torch.channels_last)
            for g in opt.param_groups:
                g["lr"] = g["initial_lr"] * sched[step]
            out = model(xs)
            loss = loss_fn(out, train_y[idx]).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item()
            seen += len(idx)
            if step % 5 == 0:
                lookahead(alpha[step])
            if step >= total:
                lookahead(1.0)
                break
        epoch_log.append({"epoch": epoch + 1, "loss": loss_sum / seen, "seconds": time.perf_counter() - t_epoch})
        print(json.dumps(epoch_log[-1]), file=sys.stderr, flush=True)
        if step >= total:
            break
    train_s = time.perf_counter() - t_train

    model.eval()
    t_eval = time.perf_counter()

    def logits(x):
        with torch.inference_mode():
            out = []
            for s in range(0, len(x), 1000):
                out.append(model(x[s : s + 1000].contiguous(memory_format=torch.channels_last)))
            return torch.cat(out)

    plain = logits(test_x)
    mirror = lambda x: 0.5 * (logits(x) + logits(x.flip(-1)))
    padded_test = F.pad(test_x, (1,) * 4, mode="reflect")
    translated = 0.5 * (mirror(padded_test[:, :, 0:32, 0:32]) + mirror(padded_test[:, :, 2:34, 2:34]))
    tta = 0.5 * mirror(test_x) + 0.5 * translated
    acc = lambda z: float((z.argmax(1) == test_y).float().mean())
    print(json.dumps({
        "seed": a.seed,
        "train_images": n,
        "epochs": a.epochs,
        "steps": step,
        "test_acc": acc(plain),
        "test_acc_tta": acc(tta),
        "train_s": train_s,
        "eval_s": time.perf_counter() - t_eval,
        "wall_s": time.perf_counter() - t_start,
        "images_per_s": step * bs / train_s,
        "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    sys.exit(main())
