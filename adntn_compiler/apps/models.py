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


def compressed_vgg16_head(seed: int = 0, specs: dict | None = None):
    """The VGG-16 head (seeded) with FC6/FC7/FC8 compressed by `specs` (default: the demo's VGG16_HEAD_SPECS)."""
    import torch

    from ..training.compress import compress

    with torch.random.fork_rng():  # the biases, without touching the caller's random state
        torch.manual_seed(seed)
        head = vgg16_head()
    specs = VGG16_HEAD_SPECS if specs is None else specs
    return compress(head, {k: dict(v, seed=seed + i) for i, (k, v) in enumerate(specs.items())})



# ---------------------------------------------------------------- whole networks (torchvision's layouts)
# torchvision cannot be imported beside this torch build, so the definitions are written out here, with
# torchvision's module names, so that its state dicts load (`model.load_state_dict(torchvision_state)`).

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def alexnet(num_classes: int = 1000):
    from torch import nn

    class AlexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
                nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
                nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
            self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
            self.classifier = nn.Sequential(
                nn.Dropout(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
                nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return AlexNet()


def vgg16_layers(batch_norm: bool, inplace: bool = True) -> list:
    """torchvision's VGG-16 `features` stack as a list of modules (indices as in its state dict)."""
    from torch import nn

    layers, c = [], 3
    for v in VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), *([nn.BatchNorm2d(v)] if batch_norm else []),
                       nn.ReLU(inplace=inplace)]
            c = v
    return layers


def _vgg(batch_norm: bool, num_classes: int):
    from torch import nn

    layers = vgg16_layers(batch_norm)

    class VGG(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
                nn.Dropout(), nn.Linear(4096, num_classes))

        def forward(self, x):
            return self.classifier(self.avgpool(self.features(x)).flatten(1))

    return VGG()


def vgg16(num_classes: int = 1000):
    return _vgg(False, num_classes)


def vgg16_bn(num_classes: int = 1000):
    return _vgg(True, num_classes)


def resnet18(num_classes: int = 1000):
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.downsample = None
            if stride != 1 or cin != cout:
                self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + idt)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            chans, c = (64, 128, 256, 512), 64
            for i, cout in enumerate(chans):
                stride = 1 if i == 0 else 2
                setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c, cout, stride), BasicBlock(cout, cout, 1)))
                c = cout
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


def vit_block(dim: int = 768, heads: int = 12, mlp_ratio: int = 4):
    """A pre-norm ViT encoder block on (N, T, dim): x + attn(ln1(x)), then + mlp(ln2(x)) (timm's layout: `attn.qkv`,
    `attn.proj`, `mlp.fc1`, `mlp.fc2`)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(dim, 3 * dim)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            N, T, D = x.shape
            qkv = self.qkv(x).reshape(N, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            y = F.scaled_dot_product_attention(q, k, v)
            return self.proj(y.transpose(1, 2).reshape(N, T, D))

    class Mlp(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(dim, mlp_ratio * dim)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(mlp_ratio * dim, dim)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    return Block()


# The big layers each bundled network's compressed_* helper replaces by ADNTN layers.
BIG_LAYERS = {
    "alexnet": ("classifier.1", "classifier.4", "classifier.6"),
    "vgg16": ("classifier.0", "classifier.3", "classifier.6"),
    "vgg16_bn": ("classifier.0", "classifier.3", "classifier.6"),
    "resnet18": ("fc",),
    "vit_block": ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"),
}
BUILDERS = {"alexnet": alexnet, "vgg16": vgg16, "vgg16_bn": vgg16_bn, "resnet18": resnet18, "vit_block": vit_block}


def compressed(name: str, ratio: float = 2000, arch: str = "ttn", seed: int = 0, **model_kw):
    """Bundled network `name` (random weights, seeded) with its big layers (BIG_LAYERS) replaced by `arch`
    generators at about `ratio`x each; the rest stays dense."""
    import torch

    from ..training.compress import compress

    if name not in BUILDERS:
        from ..errors import ConfigError

        raise ConfigError(f"unknown bundled model {name!r}; known: {', '.join(BUILDERS)}")
    torch.manual_seed(seed)
    model = BUILDERS[name](**model_kw)
    return compress(model, {k: dict(arch=arch, ratio=ratio, seed=seed + i) for i, k in enumerate(BIG_LAYERS[name])})


def compressed_alexnet(ratio: float = 2000, **kw):
    return compressed("alexnet", ratio, **kw)


def compressed_vgg16(ratio: float = 2000, **kw):
    return compressed("vgg16", ratio, **kw)


def compressed_vgg16_bn(ratio: float | None = 2000, seed: int = 0, **kw):
    """VGG-16-BN with FC6/FC7/FC8 compressed; ratio=None: the demo's head configurations (VGG16_HEAD_SPECS)."""
    if ratio is not None:
        return compressed("vgg16_bn", ratio, seed=seed, **kw)
    import torch

    from ..training.compress import compress

    torch.manual_seed(seed)
    return compress(vgg16_bn(**kw), {f"classifier.{k}": dict(v, seed=seed + i)
                                     for i, (k, v) in enumerate(VGG16_HEAD_SPECS.items())})


def compressed_resnet18(ratio: float = 100, **kw):
    return compressed("resnet18", ratio, **kw)


def compressed_vit_block(ratio: float = 200, **kw):
    return compressed("vit_block", ratio, **kw)
