"""Compiled training (ADNTNLinear backend="tvm"): gradients equal torch autograd's; training matches."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.errors import ConfigError  # noqa: E402
from tests.corpus import generators, library_examples  # noqa: E402


@settings(max_examples=library_examples(25))
@given(gen=generators(conv=False), batch=st.sampled_from([1, 3]), seed=st.integers(0, 99), input_grad=st.booleans())
def test_compiled_gradients_equal_torch_autograd(gen, batch, seed, input_grad):
    """With and without a gradient for x (without one, the compiled backward program leaves grad.x out)."""
    torch.manual_seed(seed)
    ref = adntn.ADNTNLinear(gen, bias=True)
    tvm_layer = adntn.ADNTNLinear(gen, bias=True, backend="tvm")
    tvm_layer.load_state_dict(ref.state_dict())
    x = torch.randn(batch, gen.I)
    w = torch.randn(batch, gen.O)
    grads = []
    for m in (ref, tvm_layer):
        xi = x.clone().requires_grad_(input_grad)
        y = m(xi)
        (y * w).sum().backward()
        grads.append((y.detach(), xi.grad, {k: p.grad for k, p in m.named_parameters()}))
    (y0, gx0, g0), (y1, gx1, g1) = grads
    tol = lambda t: 1e-4 * max(1.0, float(t.abs().max()))  # noqa: E731
    assert (y0 - y1).abs().max() <= tol(y0)
    if input_grad:
        assert (gx0 - gx1).abs().max() <= tol(gx0)
    else:
        assert gx0 is None and gx1 is None
    (prog,) = tvm_layer._compiled.values()
    assert ("grad.x" in prog.grads) == input_grad
    for k in g0:
        assert (g0[k] - g1[k]).abs().max() <= tol(g0[k]), k


@settings(max_examples=library_examples(15))
@given(gen=generators(conv=True), seed=st.integers(0, 99))
def test_compiled_conv_gradients_equal_torch_autograd(gen, seed):
    """ADNTNConv2d(backend="tvm"): the weight and its core gradients from compiled programs, the conv in torch."""
    torch.manual_seed(seed)
    ref = adntn.ADNTNConv2d(gen, padding=1)
    comp = adntn.ADNTNConv2d(gen, padding=1, backend="tvm")
    comp.load_state_dict(ref.state_dict())
    x = torch.randn(2, gen.shape[1], 5, 5)
    outs = []
    for m in (ref, comp):
        xi = x.clone().requires_grad_()
        y = m(xi)
        (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
        outs.append((y.detach(), xi.grad, {k: p.grad for k, p in m.named_parameters()}))
    (y0, gx0, g0), (y1, gx1, g1) = outs
    tol = lambda t: 1e-4 * max(1.0, float(t.abs().max()))  # noqa: E731
    assert (y0 - y1).abs().max() <= tol(y0)
    assert (gx0 - gx1).abs().max() <= tol(gx0)
    for k in g0:
        assert (g0[k] - g1[k]).abs().max() <= tol(g0[k]), k
    assert [k[0] for k in comp._compiled] == ["weight"]


def test_saved_values_survive_a_second_forward():
    """Two forward calls before the backward: the first one's saved values are copied out, not overwritten."""
    gen = adntn.ttn((24, 40), rank=3, seed=0)
    a = adntn.ADNTNLinear(gen)
    b = adntn.ADNTNLinear(gen, backend="tvm")
    b.load_state_dict(a.state_dict())
    x1, x2 = torch.randn(5, 40), torch.randn(5, 40)
    for m in (a, b):
        (m(x1).sin().sum() + m(x2).cos().sum()).backward()
    for (k, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert (p.grad - q.grad).abs().max() <= 1e-4 * max(1.0, float(p.grad.abs().max())), k


def test_tvm_backend_needs_float32():
    with pytest.raises(ConfigError, match="float32"):
        adntn.ADNTNLinear(adntn.ttn((8, 8), rank=2), backend="tvm", dtype=torch.float64)
    with pytest.raises(ConfigError, match="unknown backend 'jax'"):
        adntn.ADNTNLinear(adntn.ttn((8, 8), rank=2), backend="jax")


def train_digits(model: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 4, batch: int = 128) -> list:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=g)
        total = 0.0
        for i in range(0, len(X), batch):  # the last batch is smaller: a second compiled batch size
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / len(X))
    return losses


def test_digits_training_tvm_matches_torch():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    torch.manual_seed(0)
    gen = adntn.ttn((64, 64), rank=4, layout="interleaved", activation="tanh", seed=0)
    ref = nn.Sequential(adntn.ADNTNLinear(gen), nn.ReLU(), nn.Linear(64, 10))
    comp = copy.deepcopy(ref)
    comp[0] = adntn.ADNTNLinear(gen, backend="tvm")
    comp[0].load_state_dict(ref[0].state_dict())
    l_ref = train_digits(ref, X, y)
    l_tvm = train_digits(comp, X, y)
    assert l_ref[-1] < 0.5 * l_ref[0]  # it learns
    np.testing.assert_allclose(l_tvm, l_ref, rtol=2e-3)
