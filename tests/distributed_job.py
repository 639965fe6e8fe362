"""A small training job run by tests/test_distributed.py, once as one process and once under torchrun: distill,
train_classifier and fit_outputs on a compressed MLP; rank 0 writes the losses and final cores as JSON."""
import json
import sys

import numpy as np
import torch

import adntn_compiler as adntn
from adntn_compiler.training.distributed import world
from adntn_compiler.training.train import distill, fit_outputs, train_classifier


def student() -> torch.nn.Module:
    torch.manual_seed(1)
    return torch.nn.Sequential(adntn.ADNTNLinear(adntn.ttn((32, 24), rank=2, seed=0)), torch.nn.ReLU(),
                               torch.nn.Linear(32, 5))


def cores(m: torch.nn.Module) -> dict:
    return {k: v.detach().numpy().ravel().tolist() for k, v in m.state_dict().items()}


def main(out: str) -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(24, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5)).eval()
    x = torch.randn(100, 24)  # 100 = 3 x 32 + 4: the last global batch is uneven across 2 ranks
    y = teacher(x).argmax(1).detach()
    s1 = student()
    seen = []  # rows of every forward this rank ran (its shards)
    s1.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    r1 = distill(s1, teacher, (x, y), epochs=2, batch_size=32, progress=False)
    s2 = student()
    r2 = distill(s2, teacher, x, epochs=1, batch_size=30, loss="mse", progress=False)
    s3 = student()
    r3 = train_classifier(s3, x, y, epochs=2, batch_size=32)
    gen = adntn.ttn((32, 24), rank=2, seed=3)
    W = teacher[0].weight.detach().numpy()
    r4 = fit_outputs(gen, W, x.numpy(), steps=15, batch_size=30, progress=False)
    acc = lambda m: {"acc": float((m(x).argmax(1) == y).float().mean())}  # noqa: E731
    sens = adntn.sensitivity(teacher, ["0", "2"], ratios=(3,), archs=("ttn", "tt"), data=x[:32], metric=acc, steps=3,
                             fit_steps=10, progress=False, batch_size=8)
    table = [{k: v for k, v in row.items() if k != "seconds"} for row in sens.rows]
    w = world()
    with open(f"{out}.rank{w.rank}", "w") as f:
        json.dump(seen, f)
    if w.rank == 0:
        with open(out, "w") as f:
            json.dump(dict(size=w.size, kl=r1.step_losses, mse=r2.step_losses, ce=r3.step_losses, fit=r4.losses,
                           kl_cores=cores(s1), mse_cores=cores(s2), ce_cores=cores(s3),
                           fit_cores={k: np.asarray(v).ravel().tolist() for k, v in gen.cores.items()},
                           sensitivity=table), f)


if __name__ == "__main__":
    main(sys.argv[1])
