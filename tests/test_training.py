"""The default initialisation trains: no ADNTN architecture or seed is stuck at chance."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adntn_compiler as adntn
from adntn_compiler.training.train import train_classifier


@pytest.fixture(scope="module")
def data():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 2000
    d = make_dataset(args)
    f = lambda a, dt=torch.float32: torch.as_tensor(a, dtype=dt)  # noqa: E731
    return f(d["x"]), f(d["y"], torch.long), f(d["x_test"]), f(d["y_test"], torch.long)


CASES = [(arch, seed, "default") for arch in ("ttn", "attn", "mera", "brickwall") for seed in (0, 1, 2)] + \
    [("ttn", 0, act) for act in ("relu", "gelu", "sigmoid")]  # non-default activations (centred)


@pytest.mark.slow
@pytest.mark.parametrize("arch,seed,activation", CASES)
def test_default_init_trains_at_2000x(data, arch, seed, activation):
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # small layers: threads only add contention
    model = nn.Sequential(nn.Linear(40, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    act = {} if activation == "default" else dict(activation=activation)
    adntn.compress(model, {"2": dict(arch=arch, ratio=2000, seed=seed, **act)})
    assert model[2].gen.compression_ratio >= 2000
    with torch.no_grad():
        first = F.cross_entropy(model(xtr), ytr).item()
    train_classifier(model, xtr, ytr, epochs=3, lr=1e-3, batch_size=64, seed=seed)
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
        last = F.cross_entropy(model(xtr), ytr).item()
    # 400 test samples: chance is 10% +- 1.5%; a stuck network stays there and its loss at ln(10)
    assert acc > 0.18, f"{arch} seed {seed}: test accuracy {acc:.2f} (chance 0.10)"
    assert last < 0.9 * first, f"{arch} seed {seed}: training loss {first:.3f} -> {last:.3f}"
    grads = [p.grad for p in model[2].cores.values()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
