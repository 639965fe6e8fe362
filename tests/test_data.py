"""The offline datasets: Fashion-MNIST's idx files (a small fixture when Debian's package is absent) and mnist1d."""
import gzip

import numpy as np
import pytest
import torch

from adntn_compiler.errors import ConfigError, SerializationError
from adntn_compiler.training.data import FASHION_MNIST, fashion_mnist, mnist1d


def _write(folder, n_train=6, n_test=4, magic=0x0803, side=28, label_max=9):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        y[0] = label_max
        head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in x.shape)
        (folder / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(head + x.tobytes()))
        lhead = (0x0801).to_bytes(4, "big") + n.to_bytes(4, "big")
        (folder / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(lhead + y.tobytes()))
    return x, y


def test_fashion_mnist_reads_idx_files(tmp_path, monkeypatch):
    x, y = _write(tmp_path)
    d = fashion_mnist(tmp_path)
    assert d.x_train.shape == (6, 1, 28, 28) and d.x_test.shape == (4, 1, 28, 28) and d.classes == 10
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    np.testing.assert_allclose(d.x_test[:, 0].numpy(), x / 255, rtol=1e-6)
    assert d.y_test.tolist() == y.tolist() == [9, 1, 2, 3]
    monkeypatch.setenv("ADNTN_FASHION_MNIST", str(tmp_path))
    assert torch.equal(fashion_mnist().x_train, d.x_train)


def test_fashion_mnist_absent_names_the_debian_package(tmp_path):
    with pytest.raises(ConfigError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist(tmp_path)


@pytest.mark.parametrize("kw,msg", [(dict(magic=0x0802), "idx magic"), (dict(label_max=11), "labels must be 0..9"),
                                    (dict(side=300), "do not match")])
def test_malformed_idx_files_are_refused(tmp_path, kw, msg):
    _write(tmp_path, **kw)
    with pytest.raises(SerializationError, match=msg):
        fashion_mnist(tmp_path)


def test_a_truncated_idx_file_is_refused(tmp_path):
    _write(tmp_path)
    f = tmp_path / "train-images-idx3-ubyte.gz"
    f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-5]))
    with pytest.raises(SerializationError, match="do not match"):
        fashion_mnist(tmp_path)


@pytest.mark.skipif(not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_the_debian_package_loads_whole():
    d = fashion_mnist()
    assert d.x_train.shape == (60000, 1, 28, 28) and d.x_test.shape == (10000, 1, 28, 28)
    assert d.y_train.bincount().tolist() == [6000] * 10 and float(d.x_train.max()) == 1.0


def test_mnist1d_generates_any_size_reproducibly():
    a, b, c = mnist1d(500, seed=1), mnist1d(500, seed=1), mnist1d(500, seed=2)
    assert a.x_train.shape == (400, 40) and a.x_test.shape == (100, 40) and a.classes == 10
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    calm = mnist1d(500, seed=1, shift=4, scale=0.05, noise=0.0)  # its augmentations, turned down
    assert calm.x_train.std(0).mean() < a.x_train.std(0).mean()
    with pytest.raises(ConfigError, match="num_samples"):
        mnist1d(3)


def test_augment_signals_shifts_scales_and_adds_noise_per_signal():
    from adntn_compiler.training.data import augment_signals

    x = torch.arange(40, dtype=torch.float32).repeat(64, 1)  # a ramp: a shift by s adds -s everywhere inside
    g = torch.Generator().manual_seed(0)
    shifted = augment_signals(shift=3, scale=0, noise=0)(x, g)
    offsets = (x - shifted)[:, 3:-3]  # away from the repeated edges
    assert (offsets == offsets[:, :1]).all(), "one translation per signal"
    assert set(offsets[:, 0].tolist()) == {-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0}
    gains = augment_signals(shift=0, scale=0.5, noise=0)(x + 1, g) / (x + 1)
    assert (gains - gains[:, :1]).abs().max() < 1e-5 and 0.5 <= gains.min() and gains.max() <= 1.5
    assert gains.std() > 0.1
    noisy = augment_signals(shift=0, scale=0, noise=0.1)(x, g) - x
    assert noisy.std().item() == pytest.approx(0.1 * x.std().item(), rel=0.1)
    a, b = (augment_signals()(x, torch.Generator().manual_seed(7)) for _ in range(2))
    assert torch.equal(a, b), "the draws come from the given generator only"
    with pytest.raises(ConfigError, match=r"signals must be \(N, L\), got shape \(64, 1, 40\)"):
        augment_signals()(x[:, None], g)
    with pytest.raises(ConfigError, match="option shift must be a number >= 0.*got 1.5"):
        augment_signals(shift=1.5)


def test_augment_images_translates_and_flips_flat_or_shaped_images():
    from adntn_compiler.training.data import augment_images

    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 3, 2] = 1.0  # one lit pixel: where it lands tells the translation and the flip
    x = img.repeat(200, 1, 1, 1)
    out = augment_images((1, 8, 8), shift=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), torch.ones(200))
    pos = out.flatten(1).argmax(1)
    rows, cols = (pos // 8).tolist(), (pos % 8).tolist()
    assert set(rows) == {1, 2, 3, 4, 5}
    assert {c for c in cols if c <= 4} == {0, 1, 2, 3, 4} and {c for c in cols if c >= 5} == {5, 6, 7}  # flips
    flat = augment_images((1, 8, 8), shift=2)(x.flatten(1), torch.Generator().manual_seed(0))
    assert torch.equal(flat, out.flatten(1))
    with pytest.raises(ConfigError, match=r"image of shape \(1, 28, 28\) has 784 values, the batch's have 64"):
        augment_images()(x, torch.Generator())
