"""The TVM CPU backend against the numpy reference interpreter (float32 tolerance)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.backends import (
    get_backend,  # noqa: E402
    reference,  # noqa: E402
)
from adntn_compiler.backends.tvm import build  # noqa: E402
from adntn_compiler.backends.tvm.policy import default_policy  # noqa: E402
from adntn_compiler.errors import ConfigError, MemoryEstimateError  # noqa: E402
from adntn_compiler.generators.trace import trace  # noqa: E402
from adntn_compiler.ir.builder import Builder  # noqa: E402
from adntn_compiler.passes.autodiff import autodiff  # noqa: E402
from adntn_compiler.targets import resolve  # noqa: E402
from tests.corpus import generators, largest_intermediate, library_examples  # noqa: E402


def close(y, ref, rtol=1e-4):
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(y, ref, atol=rtol * scale, rtol=rtol)


def run_plan_on_tvm(p, target="cpu"):
    lib = build({"load": p.program.load, "call": p.program.call}, target)
    loaded = lib.runner("load", {**p.program.load.tensors, **p.gen.cores})()
    return lib.runner("call", {**p.program.call.tensors, **loaded})


def drawn_plan(gen, batch, schedule):
    """The plan of a drawn case; a small budget makes stream tile (untiled where the resident cores exceed it)."""
    try:
        return adntn.plan(gen, batch_size=batch, schedule=schedule,
                          memory_budget=1 << 16 if schedule == "stream" else None)
    except MemoryEstimateError:
        return adntn.plan(gen, batch_size=batch, schedule=schedule)


@settings(max_examples=library_examples(40))
@given(gen=generators(conv=False), batch=st.sampled_from([1, 3, 8]),
       schedule=st.sampled_from(["materialize", "factored", "stream", "auto"]), seed=st.integers(0, 99))
def test_plan_on_tvm_equals_reference(gen, batch, schedule, seed):
    p = drawn_plan(gen, batch, schedule)
    x = np.random.default_rng(seed).standard_normal((batch, gen.I))
    close(run_plan_on_tvm(p)(x.astype(np.float32))["y"], p.run(x))


@settings(max_examples=library_examples(25))
@given(gen=generators(), seed=st.integers(0, 99))
def test_weight_and_backward_graphs_on_tvm(gen, seed):
    """Graphs with every op the passes emit (autodiff: derivative maps, pads, slices, broadcasts)."""
    g = autodiff(trace(gen, "layer", batch_size=2))
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(v.shape) for v in g.inputs]
    ref = reference.run(g, args)
    got = get_backend("tvm").compile(g)(*[a.astype(np.float32) for a in args])
    floor = 10 * np.finfo(np.float32).eps * largest_intermediate(g, args)  # float32 rounding of the largest term
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=max(2e-4 * max(1.0, float(np.abs(b).max())), floor))


@pytest.mark.parametrize("fn", ["identity", "tanh", "relu", "leaky_relu", "gelu", "sigmoid", "silu", "hardswish",
                                "hardsigmoid", "d:tanh", "d:relu", "d:leaky_relu", "d:gelu", "d:sigmoid", "d:silu",
                                "d:identity", "d:hardswish", "d:hardsigmoid", "gelu_tanh", "d:gelu_tanh"])
def test_activation_kernels(fn):
    b = Builder()
    x = b.input("x", (4, 64))
    b.output(b.map(fn, x) if fn != "identity" else b.node(adntn.ir.Op.MAP, (x,), adntn.ir.graph.MapAttrs(fn), ""))
    g = b.build()
    xs = np.linspace(-6, 6, 256).reshape(4, 64)
    close(get_backend("tvm").compile(g)(xs.astype(np.float32))[0], reference.run(g, [xs])[0], 1e-5)


@pytest.mark.parametrize("fn", ["sqrt", "rsqrt", "d:sqrt", "d:rsqrt"])
def test_model_only_elementwise_kernels(fn):
    """RMSNorm's square roots (positive inputs; never a generator's activation)."""
    b = Builder()
    x = b.input("x", (4, 64))
    b.output(b.map(fn, x))
    g = b.build()
    xs = np.geomspace(1e-3, 1e3, 256).reshape(4, 64)
    close(get_backend("tvm").compile(g)(xs.astype(np.float32))[0], reference.run(g, [xs])[0], 1e-5)
    with pytest.raises(adntn.errors.ConfigError, match="an op of whole models, not a generator's activation"):
        adntn.ttn((8, 8), rank=2, activation=fn.removeprefix("d:"))


@pytest.mark.parametrize("I,J,K", [(16, 256, 3584), (7, 48, 5), (1, 16, 3), (33, 64, 28), (5, 3, 2)])
def test_gemm_kernel_shapes(I, J, K):
    """The GEMM template on awkward sizes (non-divisible rows, tiny vectors) and the FC6 shapes."""
    b = Builder()
    x = b.input("x", (I, K))
    w = b.param("w", np.random.default_rng(0).standard_normal((K, J)), const=True)
    s = b.param("s", np.array(0.5), const=True)
    b.output(b.contract([(x, "ik"), (w, "kj"), (s, "")], "ij", epilogue="tanh"))
    g = b.build()
    xs = np.random.default_rng(1).standard_normal((I, K))
    close(get_backend("tvm").compile(g)(xs.astype(np.float32))[0], reference.run(g, [xs])[0])


@pytest.mark.parametrize("also", ["", "output", "transpose"])
def test_permuted_gemm_result_is_read_in_place(also):
    """A GEMM result in another label order than the graph's stays in GEMM order: a map and the next einsum
    read it as stored (no transpose call); an output gets it in graph order, and a transpose op goes from the
    stored order to its own in one copy."""
    rng = np.random.default_rng(0)
    b = Builder()
    x = b.input("x", (5, 6, 32))
    w = b.param("w", rng.standard_normal((32, 48)), const=True)
    v = b.param("v", rng.standard_normal((48, 7)), const=True)
    h = b.contract([(x, "pbk"), (w, "kj")], "jpb")  # stored in GEMM order (p b) x j
    t = b.map("tanh", h)
    b.output(b.contract([(t, "jpb"), (v, "jo")], "bpo"), "y")
    if also == "output":
        b.output(t, "t")
    elif also == "transpose":
        b.output(b.transpose(t, (2, 0, 1)), "tt")
    g = b.build()
    lib = build({"main": g})
    progs = lib.programs
    calls = [c["kernel"] for c in progs["main"].calls]
    assert sum("transpose" in c for c in calls) == (1 if also else 0), calls
    xs = rng.standard_normal((5, 6, 32))
    got = lib.runner("main", dict(g.tensors))(xs.astype(np.float32))
    for (name, _, _), ref in zip(progs["main"].outputs, reference.run(g, [xs])):
        close(got[name], ref)


def test_gemm_tiles_divide():
    for i, j, k in [(4096, 256, 3584), (229376, 64, 28), (7, 12, 5), (1, 1, 1)]:
        t = default_policy(resolve("cpu")).gemm_tiles(i, j, k)
        assert j % t.jt == 0 and t.jt % t.vec == 0 and k % t.kt == 0


def test_unknown_target_is_refused():
    gen = adntn.ttn((8, 8), rank=2, seed=0)
    with pytest.raises(ConfigError, match="unknown target 'tpu'"):
        adntn.compile(gen, target="tpu")
    with pytest.raises(ConfigError, match="'sm_52' is not a CUDA arch"):
        adntn.compile(gen, target="cuda:sm_52")


@settings(max_examples=library_examples(12), deadline=None)
@given(st.lists(st.integers(1, 3), min_size=0, max_size=2), st.integers(1, 9), st.integers(1, 9), st.integers(0, 99))
def test_causal_softmax_on_every_backend(lead, q, k, seed):
    """Entry k of row q takes part only if k <= q (torch's is_causal, any q and k): TVM's kernel (masked from the
    indices) and the torch backend against the reference; and against torch's own masked softmax."""
    import torch

    from adntn_compiler.backends.torch import run as torch_run
    from adntn_compiler.ir.graph import AxisAttrs, Op

    b = Builder()
    x = b.input("x", (*lead, q, k))
    b.output(b.node(Op.SOFTMAX, (x,), AxisAttrs(len(lead) + 1, causal=True), "attn"))
    g = b.build()
    xs = np.random.default_rng(seed).standard_normal((*lead, q, k)) * 3
    ref = reference.run(g, [xs])[0]
    later = np.arange(k)[None, :] > np.arange(q)[:, None]
    want = torch.softmax(torch.tensor(xs).masked_fill(torch.tensor(later), float("-inf")), -1).numpy()
    np.testing.assert_allclose(ref, want, rtol=1e-12, atol=1e-15)
    close(get_backend("tvm").compile(g)(xs.astype(np.float32))[0], ref, 1e-5)
    np.testing.assert_allclose(torch_run(g, [torch.tensor(xs)], {})[0].numpy(), ref, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make, msg", [
    (lambda b, x: b.node(adntn.ir.Op.SOFTMAX, (x,), adntn.ir.graph.AxisAttrs(0, causal=True), ""), "last axis"),
    (lambda b, x: b.node(adntn.ir.Op.CONCAT, (x, x), adntn.ir.graph.AxisAttrs(0, causal=True), ""), "not of concat"),
])
def test_causal_is_a_last_axis_softmax_attribute(make, msg):
    b = Builder()
    with pytest.raises(Exception, match=msg):
        make(b, b.input("x", (3, 4)))
