"""`adntn.compile` of whole models against torch; save_model/load_model; the compile/run/info CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.cli import main as cli  # noqa: E402
from adntn_compiler.errors import ConfigError, SerializationError, ShapeError  # noqa: E402
from tests.corpus import generators, library_examples  # noqa: E402

ACTS = [nn.ReLU(), nn.Tanh(), nn.GELU(), nn.Sigmoid(), nn.SiLU(), nn.LeakyReLU(0.01), nn.Identity()]


def torch_out(model, x):
    with torch.no_grad():
        return model(torch.as_tensor(x)).numpy()


def close(y, ref):
    np.testing.assert_allclose(y, ref, atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=1e-4)


@settings(max_examples=library_examples(20))
@given(gen=generators(conv=False), act=st.sampled_from(ACTS), batch=st.sampled_from([1, 4]),
       bias=st.booleans(), seed=st.integers(0, 99))
def test_compiled_model_equals_torch(gen, act, batch, bias, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, gen.I), act, adntn.ADNTNLinear(gen, bias=bias), nn.Tanh(),
                          nn.Dropout(0.5), nn.Linear(gen.O, 3)).eval()
    x = np.random.default_rng(seed).standard_normal((batch, 5)).astype(np.float32)
    exe = adntn.compile(model, batch_size=batch)
    close(exe(x), torch_out(model, x))


def test_compiled_conv_model_equals_torch():
    torch.manual_seed(0)
    gen = adntn.ttn((6, 3, 3, 3), rank=2, seed=1)
    model = nn.Sequential(adntn.ADNTNConv2d(gen, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 2), nn.Flatten(),
                          nn.Linear(4 * 7 * 7, 5)).eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    exe = adntn.compile(model, batch_size=2, input_shape=(3, 8, 8))
    close(exe(x), torch_out(model, x))


@settings(max_examples=library_examples(10))
@given(gen=generators(conv=True), batch=st.integers(1, 3), hw=st.integers(3, 6))
def test_a_conv_generator_compiles_as_a_convolution(gen, batch, hw):
    """A Conv2d-shaped generator on its own is the convolution by its weight (stride 1, no padding, no bias)."""
    C, (kh, kw) = gen.shape[1], gen.shape[2:]
    x = np.random.default_rng(0).standard_normal((batch, C, hw + kh, hw + kw)).astype(np.float32)
    exe = adntn.compile(gen, batch_size=batch, input_shape=x.shape[1:])
    W = torch.as_tensor(adntn.materialize(gen), dtype=torch.float32)
    close(exe(x), torch.nn.functional.conv2d(torch.as_tensor(x), W).numpy())
    with pytest.raises(ConfigError, match=rf"compiles as a convolution: give input_shape=\({C}, H, W\)"):
        adntn.compile(gen)


def test_single_layer_and_errors():
    gen = adntn.ttn((12, 20), rank=2, seed=0)
    layer = adntn.ADNTNLinear(gen, bias=True)
    exe = adntn.compile(layer, batch_size=3)
    x = np.random.default_rng(0).standard_normal((3, 20)).astype(np.float32)
    close(exe(x), torch_out(layer, x))
    with pytest.raises(ConfigError, match=r"compiled for input shape \(3, 20\)"):
        exe(x[:2])
    with pytest.raises(ConfigError, match=r"cannot compile aten\.\w+\.\w+ at \w+\.py:\d+ \(1\)"):
        adntn.compile(nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4)))
    with pytest.raises(ShapeError, match="input has last dimension 7"):
        adntn.compile(nn.Sequential(nn.Linear(4, 7), layer))
    with pytest.raises(ConfigError, match="cannot tell the input shape of Sequential"):
        adntn.compile(nn.Sequential(nn.Conv2d(3, 4, 3, stride=2)))
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        adntn.compile(gen, batch_size=0)


def test_save_model_round_trip(tmp_path):
    model = nn.Sequential(adntn.ADNTNLinear(adntn.mera((16, 32), rank=2, seed=2)), nn.GELU(),
                          nn.Linear(16, 4)).eval()
    p = adntn.save_model(model, tmp_path / "m.safetensors")
    m2 = adntn.load_model(p)
    x = np.random.default_rng(0).standard_normal((2, 32)).astype(np.float32)
    np.testing.assert_array_equal(torch_out(model, x), torch_out(m2, x))
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(SerializationError, match="not a readable safetensors"):
        adntn.load_model(tmp_path / "bad.safetensors")


def test_cli_compile_run_info(tmp_path, capsys):
    model = nn.Sequential(adntn.ADNTNLinear(adntn.ttn((24, 40), rank=3, seed=0)), nn.ReLU(), nn.Linear(24, 6)).eval()
    src = adntn.save_model(model, tmp_path / "m.safetensors")
    art = tmp_path / "m.adntn"
    assert cli(["compile", str(src), "-o", str(art), "--target", "cpu", "--batch-size", "2"]) == 0
    x = np.random.default_rng(0).standard_normal((2, 40)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    capsys.readouterr()
    assert cli(["run", str(art), "--input", str(tmp_path / "x.npy"), "--output", str(tmp_path / "y.npy"),
                "--check", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["max_rel_error"] < 1e-5
    close(np.load(tmp_path / "y.npy"), torch_out(model, x))
    assert cli(["info", str(art)]) == 0
    assert "ttn((24, 40)" in capsys.readouterr().out
    assert cli(["compile", "adntn_compiler.apps.models:no_such_fn", "-o", str(art)]) == 2
    assert "cannot load model" in capsys.readouterr().err
    assert cli(["compile", str(src), "-o", str(art), "--target", "tpu"]) == 2
    assert "unknown target 'tpu'" in capsys.readouterr().err
    np.save(tmp_path / "bad.npy", np.zeros((3, 3)))
    assert cli(["run", str(art), "--input", str(tmp_path / "bad.npy")]) == 2
    assert "compiled for input shape (2, 40)" in capsys.readouterr().err
