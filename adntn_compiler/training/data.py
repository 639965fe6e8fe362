"""Real data, offline: Fashion-MNIST from Debian's `dataset-fashion-mnist` package, and mnist1d generated at any
size. Each returns a `Dataset` of torch tensors (float32 inputs, int64 labels), train and test.

    d = fashion_mnist()                  # 60,000 / 10,000 images (N, 1, 28, 28) in [0, 1]
    d = mnist1d(50_000, seed=0)          # 40-sample signals, 80 / 20 split, any count
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError, SerializationError

if TYPE_CHECKING:
    import torch

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")  # where `apt-get install dataset-fashion-mnist` puts it
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_MAX_ITEMS = 1 << 20  # images in one idx file (Fashion-MNIST has 60,000)
_MAX_SIDE = 256
_MAX_BYTES = 1 << 28  # of one inflated idx file (Fashion-MNIST's training images: 47 MB)


@dataclass(frozen=True)
class Dataset:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


def _idx(path: Path, ndim: int, what: str) -> np.ndarray:
    """An idx file (gzip): big-endian magic 0x0000_08_<ndim> (unsigned bytes), then ndim uint32 sizes, then the
    data; sizes bounded and checked against the bytes before any array is made."""
    limit = _MAX_BYTES
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, EOFError) as e:
        raise SerializationError(f"{path}: not a readable gzip idx file ({e})") from None
    head = 4 + 4 * ndim
    if len(data) > limit or len(data) < head:
        raise SerializationError(f"{path}: {len(data):,} bytes is not a {what} idx file")
    magic = int.from_bytes(data[:4], "big")
    dims = [int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
    if magic != 0x0800 + ndim:
        raise SerializationError(f"{path}: idx magic {magic:#010x}, expected {0x0800 + ndim:#010x} ({what})")
    if dims[0] > _MAX_ITEMS or any(not 0 < d <= _MAX_SIDE for d in dims[1:]) or \
            len(data) != head + int(np.prod(dims)):
        raise SerializationError(f"{path}: idx sizes {dims} do not match its {len(data) - head:,} bytes of data")
    return np.frombuffer(data, np.uint8, offset=head).reshape(dims)


def fashion_mnist(path: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST (Zalando, MIT licence) from `path`, else $ADNTN_FASHION_MNIST, else the Debian package's
    folder: images (N, 1, 28, 28) float32 in [0, 1], labels int64 in 0..9."""
    import torch

    root = Path(path or os.environ.get("ADNTN_FASHION_MNIST") or FASHION_MNIST)
    missing = [n for pair in _FILES.values() for n in pair if not (root / n).is_file()]
    if missing:
        raise ConfigError(f"Fashion-MNIST is not in {root} (missing {', '.join(missing)}): install it with "
                          f"`apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or give path= or "
                          f"$ADNTN_FASHION_MNIST a folder holding the four idx .gz files")
    out = []
    for split, (images, labels) in _FILES.items():
        x, y = _idx(root / images, 3, f"{split} images"), _idx(root / labels, 1, f"{split} labels")
        if len(x) != len(y) or (len(y) and int(y.max()) > 9):
            raise SerializationError(f"{root}: {split} has {len(x)} images and {len(y)} labels (labels must be "
                                     f"0..9)")
        out += [torch.from_numpy(x.astype(np.float32) / 255).unsqueeze(1), torch.from_numpy(y.astype(np.int64))]
    return Dataset(*out, classes=10)


def mnist1d(num_samples: int = 5000, seed: int = 0, shift: int | None = None, scale: float | None = None,
            noise: float | None = None) -> Dataset:
    """mnist1d (Greydanus 2020) generated offline at any size: `num_samples` signals of 40 samples, 10 classes,
    split 80 / 20. Its augmentations, applied as the signals are generated: `shift` (max translation, default
    48), `scale` (scale coefficient, 0.4) and `noise` (correlated noise scale, 0.25). Needs `pip install mnist1d`
    (never its download: the data is generated from its templates)."""
    import torch

    if not isinstance(num_samples, int) or num_samples < 10:
        raise ConfigError(f"num_samples must be an integer >= 10, got {num_samples!r}")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise ConfigError("mnist1d needs the mnist1d package: pip install mnist1d") from None
    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    for name, value in (("max_translation", shift), ("scale_coeff", scale), ("corr_noise_scale", noise)):
        if value is not None:
            setattr(args, name, value)
    d = make_dataset(args)
    f32 = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    i64 = lambda a: torch.from_numpy(np.asarray(a, np.int64))  # noqa: E731
    return Dataset(f32(d["x"]), i64(d["y"]), f32(d["x_test"]), i64(d["y_test"]), classes=10)


# ---------------------------------------------------------------- batch augmentations, `train_classifier(augment=)`
# Each is aug(x, generator) -> x', new random draws per batch from the training loop's seeded generator, so that
# every data-parallel rank augments its global batch the same way.
def augment_signals(shift: int = 2, scale: float = 0.1, noise: float = 0.05):
    """For 1-D signals (N, L): a random translation of up to `shift` samples (edges repeated), a gain in
    [1 - scale, 1 + scale] and Gaussian noise of std `noise` times the batch's std, per signal."""
    import torch

    _check_aug(shift=shift, scale=scale, noise=noise)

    def aug(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x.ndim != 2:
            raise ConfigError(f"augment_signals: signals must be (N, L), got shape {tuple(x.shape)}")
        n, length = x.shape
        s = torch.randint(-shift, shift + 1, (n, 1), generator=g)
        x = x.gather(1, (torch.arange(length) - s).clamp(0, length - 1))
        x = x * (1 + scale * (2 * torch.rand(n, 1, generator=g) - 1))
        return x + noise * x.std() * torch.randn(x.shape, generator=g)

    return aug


def augment_images(shape: tuple[int, int, int] = (1, 28, 28), shift: int = 2, flip: bool = True):
    """For images (N, C, H, W), or flat (N, C*H*W) of that `shape`: a random translation of up to `shift`
    pixels (zero padding) and, with `flip`, a horizontal flip of half the images."""
    import torch
    import torch.nn.functional as F

    _check_aug(shift=shift)
    c, h, w = shape

    def aug(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if x[0].numel() != c * h * w:
            raise ConfigError(f"augment_images: an image of shape {shape} has {c * h * w} values, the batch's have "
                              f"{x[0].numel()} (shape {tuple(x.shape)})")
        n = len(x)
        padded = F.pad(x.reshape(n, c, h, w), (shift,) * 4)
        rows = torch.randint(0, 2 * shift + 1, (n, 1), generator=g) + torch.arange(h)
        cols = torch.randint(0, 2 * shift + 1, (n, 1), generator=g) + torch.arange(w)
        if flip:
            cols = torch.where(torch.rand(n, 1, generator=g) < 0.5, cols.flip(1), cols)
        out = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None],
                     rows[:, None, :, None], cols[:, None, None, :]]
        return out.reshape(x.shape)

    return aug


def _check_aug(**values) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or (name == "shift" and v != int(v)):
            raise ConfigError(f"augmentation option {name} must be a number >= 0 (an integer for shift), got {v!r}")
