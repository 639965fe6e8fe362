"""Model files: exact shapes, checked against the description before any layer is allocated; a digest of the
tensors; tidy saving."""
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import adntn_compiler as adntn
from adntn_compiler.errors import SerializationError
from adntn_compiler.training import modelio


def _write(path, spec: dict, tensors: dict) -> str:
    doc = dict(format=modelio.FORMAT, version=modelio.VERSION, model=spec,
               tensors_sha256=modelio._digest({k: v.numpy() for k, v in tensors.items()}))
    save_file(tensors, str(path), metadata={"adntn_model": json.dumps(doc)})
    return path


LINEAR = dict(type="Linear", in_features=64, out_features=10, bias=True)


@pytest.mark.parametrize("tensors,msg", [
    ({"weight": torch.zeros(10, 64), "bias": torch.zeros(1)}, r"'bias': the described layers need shape \(10,\)"),
    ({"weight": torch.zeros(1, 64), "bias": torch.zeros(10)}, r"'weight': the described layers need shape \(10, 64\)"),
    ({"weight": torch.zeros(10, 64)}, r"'bias'.*holds None"),
    ({"weight": torch.zeros(10, 64), "bias": torch.zeros(10), "extra": torch.zeros(3)}, "'extra'"),
])
def test_shapes_must_match_exactly(tmp_path, tensors, msg):
    with pytest.raises(SerializationError, match=msg):
        adntn.load_model(_write(tmp_path / "m.safetensors", LINEAR, tensors))


def test_a_large_described_layer_is_refused_before_allocation(tmp_path, monkeypatch):
    spec = dict(type="Linear", in_features=20000, out_features=20000, bias=False)
    allocated = []
    monkeypatch.setattr(nn.Linear, "__init__", lambda *a, **k: allocated.append(a))
    with pytest.raises(SerializationError, match=r"'weight': the described layers need shape \(20000, 20000\)"):
        adntn.load_model(_write(tmp_path / "big.safetensors", spec, {"weight": torch.zeros(1)}))
    assert allocated == []


def test_modified_tensors_are_refused(tmp_path):
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    p = adntn.save_model(model, tmp_path / "sub" / "m.safetensors")  # the folder is created
    assert adntn.load_model(p)[0].weight.shape == (4, 8)
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(p), "pt") as f:
        meta = f.metadata()
    t = load_file(str(p))
    t["0.bias"] = t["0.bias"] + 1
    save_file(t, str(tmp_path / "x.safetensors"), metadata=meta)
    with pytest.raises(SerializationError, match="do not match the sha256"):
        adntn.load_model(tmp_path / "x.safetensors")


def test_save_model_leaves_no_temporary_file_on_error(tmp_path, monkeypatch):
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        adntn.save_model(nn.Linear(2, 2), tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("layer, msg", [
    (dict(type="LeakyReLU", negative_slope=float("nan")), "negative_slope = nan is not valid|NaN is not a finite"),
    (dict(type="Dropout", p=float("nan")), "p = nan is not valid|NaN is not a finite"),
    (dict(type="Dropout", p=1.5), r"\(Dropout\): p = 1.5 is not valid"),
    (dict(type="GELU", approximate="evil"), r"\(GELU\): approximate = 'evil' is not valid"),
    (dict(type="Flatten", start_dim="x", end_dim=-1), r"\(Flatten\): start_dim = 'x' is not valid"),
    (dict(type="Conv2d", in_channels=3, out_channels=4, kernel_size=[3, 3], stride=[0, 0], padding=[-5, -5],
          dilation=[1, 1], groups=1, bias=False), r"\(Conv2d\): stride = \[0, 0\] is not valid"),
    (dict(type="Conv2d", in_channels=3, out_channels=4, kernel_size=[3, 3], stride=[1, 1], padding=[-5, -5],
          dilation=[1, 1], groups=1, bias=False), r"\(Conv2d\): padding = \[-5, -5\] is not valid"),
    (dict(type="Bogus"), "unknown layer type 'Bogus'"),
    (dict(type="Linear", in_features=True, out_features=10, bias=True), "in_features = True is not valid"),
    (dict(type="ADNTNLinear", arch="ttn", shape=[2**61 - 1, 48], config=dict(rank=2), bias=False),
     r"shape = \[2305843009213693951, 48\] is not valid"),
])
def test_layer_arguments_are_validated_before_any_module_is_built(tmp_path, layer, msg):
    """They loaded, then failed or gave NaN at the first forward (the prime shape hung in trial division)."""
    import time

    t = time.perf_counter()
    with pytest.raises(SerializationError, match=msg):
        adntn.load_model(_write(tmp_path / "m.safetensors", dict(type="Sequential", children=[["0", layer]]), {}))
    assert time.perf_counter() - t < 1.0


def test_deep_nesting_and_non_object_descriptions_are_refused_with_one_line(tmp_path):
    deep = '{"type": "Sequential", "children": [["0", ' * 900 + '{"type": "ReLU"}' + "]]}" * 900  # RecursionError
    doc = f'{{"format": "{modelio.FORMAT}", "version": {modelio.VERSION}, "model": {deep}, "tensors_sha256": ""}}'
    save_file({}, str(tmp_path / "d.safetensors"), metadata={"adntn_model": doc})
    with pytest.raises(SerializationError, match="nested more than"):
        adntn.load_model(tmp_path / "d.safetensors")
    p = tmp_path / "l.safetensors"
    save_file({}, str(p), metadata={"adntn_model": json.dumps([1, 2])})
    with pytest.raises(SerializationError, match="must be an object, got list"):
        adntn.load_model(p)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    import os

    os.mkfifo(tmp_path / "f.safetensors")
    with pytest.raises(SerializationError, match="not a regular file"):
        adntn.load_model(tmp_path / "f.safetensors")
