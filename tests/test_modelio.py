"""Model files: exact shapes, checked against the description before any layer is allocated; a digest of the
tensors; tidy saving."""
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import adntn_compiler as adntn
from adntn_compiler import modelio
from adntn_compiler.errors import SerializationError


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
