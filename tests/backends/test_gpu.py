"""GPU targets. The GPU schedules built for OpenCL run on an OpenCL device (pocl's CPU device in CI) and equal the
reference interpreter; the same scheduled kernels built for CUDA compile ahead of time with nvcc, and ptxas
reports no spills and registers / shared memory within the launch bounds. Real-GPU runs are marked `gpu`."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import tvm  # noqa: E402

import adntn_compiler as adntn  # noqa: E402
import adntn_compiler.apps.models  # noqa: E402,F401
from adntn_compiler.backends import get_backend, reference  # noqa: E402
from adntn_compiler.backends.tvm import build  # noqa: E402
from adntn_compiler.backends.tvm.gpu import check_ptxas, parse_ptxas  # noqa: E402
from adntn_compiler.backends.tvm.lower import lower  # noqa: E402
from adntn_compiler.backends.tvm.policy import default_policy  # noqa: E402
from adntn_compiler.errors import ConfigError, SerializationError  # noqa: E402
from adntn_compiler.generators.trace import trace  # noqa: E402
from adntn_compiler.ir.builder import Builder  # noqa: E402
from adntn_compiler.ir.graph import AdaptivePoolAttrs, AxisAttrs, BinaryAttrs, NormAttrs, Op  # noqa: E402
from adntn_compiler.passes.autodiff import autodiff  # noqa: E402
from adntn_compiler.targets import resolve  # noqa: E402
from tests.backends.test_model_ops import _conv_case, _conv_ref, _graph, _pool_attrs, conv_cases, pool_cases  # noqa: E402
from tests.backends.test_tvm import close, drawn_plan, run_plan_on_tvm  # noqa: E402
from tests.corpus import generators, largest_intermediate, library_examples  # noqa: E402

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])
opencl = pytest.mark.opencl
nvcc = pytest.mark.nvcc


# ---------------------------------------------------------------- OpenCL on pocl: numerics


@opencl
@settings(max_examples=library_examples(30), **SETTINGS)
@given(gen=generators(conv=False), batch=st.sampled_from([1, 3, 8]),
       schedule=st.sampled_from(["materialize", "factored", "stream", "auto"]), seed=st.integers(0, 99))
def test_plan_on_opencl_equals_reference(gen, batch, schedule, seed):
    p = drawn_plan(gen, batch, schedule)
    x = np.random.default_rng(seed).standard_normal((batch, gen.I))
    close(run_plan_on_tvm(p, "opencl")(x.astype(np.float32))["y"], p.run(x))


@opencl
@settings(max_examples=library_examples(15), **SETTINGS)
@given(gen=generators(), seed=st.integers(0, 99))
def test_weight_and_backward_graphs_on_opencl(gen, seed):
    """Every op the passes emit (derivative maps, pads, slices, broadcasts, non-GEMM einsums)."""
    g = autodiff(trace(gen, "layer", batch_size=2))
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(v.shape) for v in g.inputs]
    ref = reference.run(g, args)
    got = get_backend("tvm").compile(g, "opencl")(*[a.astype(np.float32) for a in args])
    floor = 10 * np.finfo(np.float32).eps * largest_intermediate(g, args)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=max(2e-4 * max(1.0, float(np.abs(b).max())), floor))


@opencl
@settings(max_examples=library_examples(8), **SETTINGS)
@given(conv_cases)
def test_conv_on_opencl(c):
    a, x, w = _conv_case(c, seed=1)
    g = _conv_ref(x, w, a)
    got = get_backend("tvm").compile(g, "opencl")(x.astype(np.float32), w.astype(np.float32))[0]
    np.testing.assert_allclose(got, reference.run(g, [x, w])[0], rtol=1e-4, atol=1e-4)


@opencl
@settings(max_examples=library_examples(8), **SETTINGS)
@given(pool_cases)
def test_pool_on_opencl(c):
    a = _pool_attrs(c)
    x = np.random.default_rng(0).standard_normal((2, 3, c["h"], c["w"]))
    try:
        g, _ = _graph(Op.POOL, a, x.shape, rng=np.random.default_rng(0))
    except adntn.ShapeError:  # a window larger than the input
        return
    got = get_backend("tvm").compile(g, "opencl")(x.astype(np.float32))[0]
    np.testing.assert_allclose(got, reference.run(g, [x])[0], rtol=1e-5, atol=1e-5)


@opencl
@settings(max_examples=library_examples(6), **SETTINGS)
@given(st.integers(1, 9), st.integers(1, 9), st.integers(0, 99))
def test_causal_softmax_on_opencl(q, k, seed):
    """The GPU schedule of the softmax kernel with its index mask stage (is_causal)."""
    b = Builder()
    x = b.input("x", (2, q, k))
    b.output(b.node(Op.SOFTMAX, (x,), AxisAttrs(2, causal=True), "attn"))
    g = b.build()
    xs = np.random.default_rng(seed).standard_normal((2, q, k)) * 3
    got = get_backend("tvm").compile(g, "opencl")(xs.astype(np.float32))[0]
    np.testing.assert_allclose(got, reference.run(g, [xs])[0], rtol=1e-5, atol=1e-6)


def _shape_graph():
    """Pad, slice, concat and transpose (the autodiff of a layer emits these)."""
    b = Builder()
    x = b.input("x", (3, 5, 7))
    p = b.pad(x, [(0, 0), (1, 2), (0, 3)])
    s = b.slice(p, (1, 0, 2), (3, 8, 10))
    t = b.transpose(s, (2, 0, 1))
    b.output(b.concat([t, b.transpose(b.slice(p, (0, 0, 0), (2, 8, 7)), (2, 0, 1))], axis=0))
    return b.build(), [np.random.default_rng(0).standard_normal((3, 5, 7))]


def _model_op_graphs(rng):
    """One graph per remaining whole-model op (adaptive pool, layer norm, softmax, broadcasting binary), and the
    shape ops."""
    yield _shape_graph()
    yield _graph(Op.ADAPTIVE_POOL, AdaptivePoolAttrs("avg", (3, 2)), (2, 3, 7, 5), rng=rng)
    yield _graph(Op.LAYER_NORM, NormAttrs(1, 1e-5), (2, 5, 96), (96,), (96,), rng=rng)
    yield _graph(Op.SOFTMAX, AxisAttrs(2), (2, 3, 300), rng=rng)
    yield _graph(Op.BINARY, BinaryAttrs("max"), (3, 1, 4), (1, 5, 4), rng=rng)


@opencl
def test_norm_softmax_pool_binary_shape_ops_on_opencl():
    for g, args in _model_op_graphs(np.random.default_rng(0)):
        got = get_backend("tvm").compile(g, "opencl")(*(a.astype(np.float32) for a in args))[0]
        np.testing.assert_allclose(got, reference.run(g, args)[0], rtol=1e-4, atol=1e-5, err_msg=g.nodes[-2].op.value)


def _models():
    """Whole models: a compressed conv net (conv, ReLU, max pooling) and a ViT block (layer norm, softmax, GELU)."""
    torch.manual_seed(0)
    gen = adntn.ttn((6, 3, 3, 3), rank=2, seed=1)
    conv = nn.Sequential(adntn.ADNTNConv2d(gen, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 4, 2),
                         nn.Flatten(), nn.Linear(4 * 3 * 3, 5)).eval()
    vit = adntn.models.compressed_vit_block(ratio=20, dim=48, heads=4).eval()
    return [(conv, np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)),
            (vit, np.random.default_rng(1).standard_normal((2, 5, 48)).astype(np.float32))]


@opencl
def test_compiled_models_on_opencl():
    for model, x in _models():
        exe = adntn.compile(model, target="opencl", example_inputs=(torch.tensor(x),))
        with torch.no_grad():
            close(exe(x), model(torch.tensor(x)).numpy())


@opencl
def test_opencl_artifact_runs_in_a_fresh_process(tmp_path):
    gen = adntn.mera((48, 64), rank=3, activation="tanh", seed=2)
    exe = adntn.compile(gen, target="opencl", batch_size=3)
    x = np.random.default_rng(0).standard_normal(exe.input_shape).astype(np.float32)
    close(exe(x), exe.reference(x))
    exe.save(tmp_path / "m.adntn")
    np.save(tmp_path / "x.npy", x)
    code = ("import numpy as np, adntn_compiler as a, sys; e = a.load(sys.argv[1]); "
            "np.save(sys.argv[3], e(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.adntn"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), exe(x))
    info = adntn.artifact.inspect(tmp_path / "m.adntn")
    assert info["gpu"]["api"] == "opencl" and info["target"]["name"] == "opencl"


def test_torch_compile_refuses_gpu_targets():
    from adntn_compiler.dynamo import Options

    with pytest.raises(ConfigError, match="runs its partitions on this CPU"):
        Options.parse({"target": "opencl"})


def test_malformed_opencl_library_is_refused():
    from adntn_compiler.backends.tvm.gpu import OpenCLModule

    bad = json.dumps({"format": "adntn-opencl", "source": "", "launches": {"k": [{"kernel": "k", "args": [-1],
                                                                                   "grid": [1, 1, 1],
                                                                                   "block": [1, 1, 1]}]}})
    with pytest.raises(SerializationError, match="malformed launch of k"):
        OpenCLModule.from_bytes(bad.encode())
    with pytest.raises(SerializationError, match="OpenCL library is malformed"):
        OpenCLModule.from_bytes(b"\x7fELF")


# ---------------------------------------------------------------- CUDA ahead of time: ptxas


def _kind_graphs():
    """Graphs whose kernels cover every kernel kind: GEMMs (packed constant B, dynamic B, A read in place),
    maps, adds, pads, slices, non-GEMM einsums (the backward graph), im2col, convs without im2col (an implicit GEMM
    with its input copy, a depthwise conv), pooling, norms, softmax, binaries."""
    rng = np.random.default_rng(0)
    gs = {"bwd": autodiff(trace(adntn.ttn((24, 36), rank=3, activation="gelu", seed=0), "layer", batch_size=4)),
          "mera": trace(adntn.mera((64, 64), rank=4, activation="silu", seed=0), "layer", batch_size=8)}
    a, x, w = _conv_case(dict(n=2, g=2, cg=3, og=2, h=9, w=8, kh=3, kw=2, sh=2, sw=1, ph=1, pw=0, dh=1, dw=2), 0)
    gs["conv"] = _conv_ref(x, w, a)
    net = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1, groups=16),
                        nn.ReLU6()).eval()
    gs["convs"] = adntn.capture(net, example_inputs=(torch.randn(1, 8, 9, 9),)).plan("cpu").graphs.call
    gs["pool"] = _graph(Op.POOL, _pool_attrs(dict(kind="max", h=9, w=9, kh=3, kw=3, sh=2, sw=2, ph=1, pw=1,
                                                  ceil=True, cip=False, dil=1)), (2, 3, 9, 9), rng=rng)[0]
    for k, (g, _) in enumerate(_model_op_graphs(rng)):
        gs[f"op{k}"] = g
    return gs


KINDS = ("gemm", "map", "add", "pad", "slice", "concat", "transpose", "einsum", "im2col", "conv_input", "conv",
         "depthwise", "pool", "adaptive_pool", "layer_norm", "softmax", "binary")


@nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_every_kernel_kind_builds_for_cuda_without_spills(arch):
    lib = build(_kind_graphs(), f"cuda:{arch}")
    m = lib.module
    names = set(m.launches)
    assert all(any(f"_{k}" in n for n in names) for k in KINDS), sorted(names)
    kernels = {ln["kernel"] for ls in m.launches.values() for ln in ls}
    assert kernels <= set(m.ptxas), sorted(kernels - set(m.ptxas))  # ptxas reported on every kernel
    assert check_ptxas(m.ptxas, m.launches) == []
    gemms = [k for k in kernels if "_gemm" in k]
    assert max(m.ptxas[k]["smem"] for k in gemms) > 0  # the B slab is staged in shared memory
    assert all(r["spill_stores"] == r["spill_loads"] == 0 for r in m.ptxas.values())
    assert lib.gpu_record()["arch"] == arch and lib.to_bytes()[:4] == b"\x7fELF"
    # whole models: compile() refuses a build whose ptxas report breaks the bounds (on the older arch only: its
    # kernels are the same, its limits no looser, and each arch's model builds take a minute of CI)
    for model, x in _models() if arch == "sm_80" else ():
        exe = adntn.compile(model, target=f"cuda:{arch}", example_inputs=(torch.tensor(x),))
        assert exe.manifest["gpu"]["arch"] == arch and exe.manifest["gpu"]["ptxas"]


def test_ptxas_report_is_parsed_and_checked():
    text = """ptxas info    : Compiling entry function 'k_kernel' for 'sm_90'
ptxas info    : Function properties for k_kernel
    8 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 50000 bytes smem, 400 bytes cmem[0]"""
    r = parse_ptxas(text)
    assert r == {"k_kernel": {"registers": 255, "smem": 50000, "stack": 8, "spill_stores": 8, "spill_loads": 4}}
    problems = check_ptxas(r, {"k": [{"kernel": "k_kernel", "args": [], "grid": [1, 1, 1], "block": [512, 1, 1]}]})
    assert len(problems) == 3 and "spill" in problems[0] and "255 registers x 512 threads" in problems[1]


@nvcc
def test_cuda_artifact_is_built_here_and_refused_here(tmp_path, capsys):
    from adntn_compiler.cli import main as cli
    from adntn_compiler.targets import local_cuda_archs

    gen = adntn.ttn((64, 96), rank=3, activation="tanh", seed=0)
    exe = adntn.compile(gen, target="cuda:sm_90", batch_size=4)
    exe.save(tmp_path / "fc.adntn")
    assert cli(["info", str(tmp_path / "fc.adntn")]) == 0
    out = capsys.readouterr().out
    assert "target cuda:sm_90" in out and "GPU: CUDA sm_90 cubin (nvcc 13" in out and "0 bytes spilled" in out
    m = adntn.artifact.inspect(tmp_path / "fc.adntn")["gpu"]
    assert m["arch"] == "sm_90" and m["cuda_version"].startswith("13")
    if "sm_90" not in local_cuda_archs():
        with pytest.raises(SerializationError, match="built for|no NVIDIA GPU"):
            adntn.load(tmp_path / "fc.adntn")
        with pytest.raises(ConfigError, match="cannot run on this machine"):
            exe(np.zeros(exe.input_shape, np.float32))


@nvcc
def test_opencl_and_cuda_come_from_the_same_scheduled_kernels():
    """The TIR both code generators start from is the same, and so are the launches (grid, block, arguments)
    read from TVM's host/device split: what OpenCL checks on pocl is what CUDA runs."""
    graphs = _kind_graphs()
    funcs = {}
    for name in ("opencl", "cuda:sm_90"):
        t = resolve(name)
        funcs[name] = {k: f for n, g in graphs.items() for k, f in lower(g, n, t, default_policy(t))[1].items()}
    assert funcs["opencl"].keys() == funcs["cuda:sm_90"].keys()
    for k in funcs["opencl"]:
        tvm.ir.assert_structural_equal(funcs["opencl"][k], funcs["cuda:sm_90"][k])
    ocl, cu = build(graphs, "opencl").module, build(graphs, "cuda:sm_90").module
    assert ocl.launches == cu.launches
