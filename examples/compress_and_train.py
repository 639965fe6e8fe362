"""Compress a model by target ratio, train it end to end, report.

    python examples/compress_and_train.py [--ratio 2000] [--arch ttn] [--epochs 12] [--samples 12000]

The MLP 40-4096-4096-10 on mnist1d (generated offline by the `mnist1d` package); its 4096x4096 layer is
replaced by an ADNTN layer whose configuration is chosen to reach the ratio.
"""
import argparse

import torch
import torch.nn.functional as F
from torch import nn

import adntn_compiler as adntn


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="ttn")
    ap.add_argument("--ratio", type=float, default=2000)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--samples", type=int, default=12000)
    ap.add_argument("--lr", type=float, default=1e-3)
    a = ap.parse_args(argv)

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = a.samples
    d = make_dataset(args)
    xtr, ytr = torch.tensor(d["x"], dtype=torch.float32), torch.tensor(d["y"])
    xte, yte = torch.tensor(d["x_test"], dtype=torch.float32), torch.tensor(d["y_test"])

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))
    adntn.compress(model, {"2": dict(arch=a.arch, ratio=a.ratio)})
    print(adntn.report(model))

    opt = torch.optim.Adam(model.parameters(), lr=a.lr)  # the cores train like any other parameter
    for epoch in range(a.epochs):
        model.train()
        total = 0.0
        for idx in torch.randperm(len(xtr)).split(128):
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {epoch + 1:>2}: train loss {total / len(xtr):.3f}, test accuracy {100 * acc:.1f}%")
    return acc


if __name__ == "__main__":
    main()
