"""Bundled example models (random weights; shapes of the real classifier heads) and reference layer shapes."""
from __future__ import annotations

# (name, weight shape) of the large layers of AlexNet and VGG-16
LAYER_SHAPES: dict[str, tuple[int, ...]] = {
    "alexnet.fc6": (4096, 9216),
    "alexnet.fc7": (4096, 4096),
    "alexnet.fc8": (1000, 4096),
    "vgg16.fc6": (4096, 25088),
    "vgg16.fc7": (4096, 4096),
    "vgg16.fc8": (1000, 4096),
    "vgg16.conv5_3": (512, 512, 3, 3),
}

# The compression the demo applies to the VGG-16 head.
VGG16_HEAD_SPECS = {
    "0": dict(arch="ttn", rank=4, layout="interleaved", activation="tanh"),
    "3": dict(arch="attn", rank=4, layout="binary", activation="tanh"),
    "6": dict(arch="mera", ratio=2000, activation="tanh"),  # configuration chosen by target ratio
}


def vgg16_head(num_classes: int = 1000):
    """The VGG-16 classifier head: 25088 -> 4096 -> 4096 -> classes (dropout omitted: inference)."""
    from torch import nn

    return nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(), nn.Identity(), nn.Linear(4096, 4096), nn.ReLU(),
                         nn.Identity(), nn.Linear(4096, num_classes))


def compressed_vgg16_head(seed: int = 0):
    from .nn import compress

    return compress(vgg16_head(), {k: dict(v, seed=seed + i) for i, (k, v) in enumerate(VGG16_HEAD_SPECS.items())})
