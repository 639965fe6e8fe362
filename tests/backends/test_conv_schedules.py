"""Convolutions without im2col (`lower.find_convs`): implicit-GEMM convs and depthwise convs in NHWC, with the bias,
a residual and elementwise steps (ReLU, ReLU6) fused into the write-back, over random strides, paddings,
dilations, depthwise groups, odd spatial sizes and channel counts that the register tile does not divide. Each
case is checked against torch and the float64 reference on the CPU, and a smaller draw on arm64 and cortex-m7
(qemu) and OpenCL (pocl)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("tvm", reason="apache-tvm is not installed")

import adntn_compiler as adntn  # noqa: E402
from adntn_compiler.backends.tvm.lower import find_convs, lower  # noqa: E402
from adntn_compiler.backends.tvm.policy import default_policy  # noqa: E402
from adntn_compiler.targets import resolve  # noqa: E402
from tests.corpus import library_examples  # noqa: E402

SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Block(nn.Module):
    """conv (-> batch norm) (-> + residual) (-> ReLU / ReLU6): the patterns a conv's write-back absorbs."""

    def __init__(self, c: dict):
        super().__init__()
        groups = c["cin"] if c["depthwise"] else 1
        cout = c["cin"] if c["depthwise"] else c["cout"]
        self.conv = nn.Conv2d(c["cin"], cout, (c["kh"], c["kw"]), (c["sh"], c["sw"]), (c["ph"], c["pw"]),
                              (c["dh"], c["dw"]), groups, bias=c["bias"])
        self.bn = nn.BatchNorm2d(cout) if c["bn"] else nn.Identity()
        if c["bn"]:
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)
        self.residual, self.act = c["residual"], c["act"]

    def forward(self, x, r=None):
        y = self.bn(self.conv(x))
        if r is not None:
            y = y + r
        return {"none": lambda v: v, "relu": torch.relu, "relu6": nn.functional.relu6}[self.act](y)


cases = st.fixed_dictionaries(dict(
    n=st.integers(1, 2), cin=st.sampled_from([1, 3, 5, 8, 13, 16]), cout=st.sampled_from([1, 4, 7, 16, 24, 40]),
    h=st.integers(3, 11), w=st.integers(3, 13), kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 2), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
    dh=st.integers(1, 2), dw=st.integers(1, 2), depthwise=st.booleans(), bias=st.booleans(), bn=st.booleans(),
    residual=st.booleans(), act=st.sampled_from(["none", "relu", "relu6"])))


def _model(c: dict, seed: int):
    """The block and its inputs; None when the drawn window does not fit the padded input."""
    if (c["h"] + 2 * c["ph"] < c["dh"] * (c["kh"] - 1) + 1) or (c["w"] + 2 * c["pw"] < c["dw"] * (c["kw"] - 1) + 1):
        return None
    torch.manual_seed(seed)
    m = Block(c).eval()
    x = torch.randn(c["n"], c["cin"], c["h"], c["w"])
    with torch.no_grad():
        y = m.conv(x)
    xs = (x, torch.randn(y.shape)) if c["residual"] else (x,)
    return m, xs


def _check(c: dict, target: str, seed: int = 0, policy=None) -> None:
    built = _model(c, seed)
    if built is None:
        return
    m, xs = built
    exe = adntn.compile(m, target=target, example_inputs=xs, policy=policy)
    arrays = [x.numpy() for x in xs]
    got = exe(*arrays)
    with torch.no_grad():
        want = m(*xs).numpy()
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got, exe.reference(*arrays), rtol=1e-4, atol=1e-4 * scale)


def _kernels(c: dict, target: str = "cpu", **policy) -> list[str]:
    """The kinds of kernel the block's call program runs on `target`, in order (k_conv3 -> conv)."""
    m, xs = _model(c, 0)
    planned = adntn.capture(m, example_inputs=xs).plan(target)
    prog, _ = lower(planned.graphs.call, "k", planned.target,
                    dataclasses.replace(default_policy(planned.target), **policy))
    return [call["kernel"][2:].rstrip("0123456789") for call in prog.calls]


@settings(max_examples=library_examples(25), **SETTINGS)
@given(cases)
def test_convs_without_im2col_equal_torch_and_the_reference(c):
    _check(c, "cpu")


def test_the_conv_chain_is_one_kernel_and_writes_no_patches():
    """A ResNet-style block: conv + batch norm + residual + ReLU is one kernel after the padding copy (the
    residual, an NCHW input here, is transposed to NHWC, and the NHWC result back for the output); a depthwise
    conv with ReLU6 is one kernel; the im2col path stays for other grouped convs."""
    base = dict(n=1, cin=8, cout=16, h=9, w=9, kh=3, kw=3, sh=1, sw=1, ph=1, pw=1, dh=1, dw=1, depthwise=False,
                bias=False, bn=True, residual=True, act="relu")
    assert _kernels(base) == ["conv_input", "transpose", "conv", "transpose"]
    dw = {**base, "depthwise": True, "residual": False, "act": "relu6"}
    assert _kernels(dw) == ["conv_input", "depthwise", "transpose"]
    for gpu in ("opencl", "cuda:sm_80"):  # the GPU module's implicit GEMM and depthwise schedule: no patches either
        assert _kernels(base, gpu) == ["conv_input", "transpose", "conv", "transpose"]
        assert _kernels(dw, gpu) == ["conv_input", "depthwise", "transpose"]
    m = nn.Sequential(nn.Conv2d(8, 8, 3, groups=2), nn.ReLU()).eval()
    planned = adntn.capture(m, example_inputs=(torch.randn(1, 8, 6, 6),)).plan("cpu")
    assert find_convs(planned.graphs.call, depthwise=True) == []
    policy = dataclasses.replace(default_policy(planned.target), implicit_conv=False)
    prog, _ = lower(adntn.capture(Block(base).eval(), example_inputs=(torch.randn(1, 8, 9, 9),
                                                                       torch.randn(1, 16, 9, 9))).plan("cpu")
                    .graphs.call, "k", planned.target, policy)
    assert any("im2col" in call["kernel"] for call in prog.calls)


def test_avx2_register_tiles_fit_sixteen_registers():
    """AVX2 has 16 vector registers: the conv's tile is 6 pixels x 2 vectors (12 accumulators), AVX-512's 8 x 2."""
    t = resolve("cpu")
    avx2 = default_policy(dataclasses.replace(t, lanes=8, isa=("avx2", "fma")))
    avx512 = default_policy(dataclasses.replace(t, lanes=16, isa=("avx512f",)))
    assert avx2.conv_rows(64) * 2 <= 12 and avx2.conv_rows(64) == 6
    assert avx512.conv_rows(64) == 8


winograd_cases = cases.map(lambda c: {**c, "kh": 3, "kw": 3, "sh": 1, "sw": 1, "dh": 1, "dw": 1, "depthwise": False})


@settings(max_examples=library_examples(15), **SETTINGS)
@given(winograd_cases)
def test_winograd_equals_torch_and_the_reference(c):
    """Winograd F(2x2, 3x3) (forced), odd and even sizes, any padding, with the conv's epilogue: within 1e-4 of
    torch and of the float64 reference (measured errors are ~1e-6 relative)."""
    if _model(c, 0) is not None:  # (a conv of one channel in and out may reach the lowering as im2col + GEMM)
        kernels = _kernels(c, winograd=True)
        assert ("winograd_input" in kernels) == ("im2col" not in kernels)
    _check(c, "cpu", policy=dataclasses.replace(default_policy(resolve("cpu")), winograd=True))


def test_winograd_where_the_cost_model_says_it_wins():
    """VGG's and ResNet's 3 x 3 convs go to Winograd (1.4-1.8x faster measured here), a conv of few channels does
    not, nor a strided one; winograd=False turns it off."""
    big = dict(n=1, cin=64, cout=64, h=14, w=14, kh=3, kw=3, sh=1, sw=1, ph=1, pw=1, dh=1, dw=1, depthwise=False,
               bias=True, bn=False, residual=False, act="relu")
    assert _kernels(big) == ["conv_input", "winograd_input", "gemm", "winograd_output", "transpose"]
    assert "winograd_input" not in _kernels({**big, "cin": 4, "cout": 8})
    assert "winograd_input" not in _kernels({**big, "sh": 2})
    assert "winograd_input" not in _kernels(big, winograd=False)


@pytest.mark.qemu
@pytest.mark.slow
@pytest.mark.parametrize("target", ["arm64", "cortex-m7"])
@settings(max_examples=3, **SETTINGS)
@given(c=cases)
def test_convs_on_the_emulators(target, c):
    _check({**c, "n": 1, "h": min(c["h"], 7), "w": min(c["w"], 7)}, target)


@pytest.mark.qemu
@pytest.mark.slow
@settings(max_examples=2, **SETTINGS)
@given(c=winograd_cases)
def test_winograd_on_arm64(c):
    _check({**c, "n": 1, "h": min(c["h"], 7), "w": min(c["w"], 7)}, "arm64",
           policy=dataclasses.replace(default_policy(resolve("arm64")), winograd=True))


@pytest.mark.opencl
@settings(max_examples=library_examples(6), **SETTINGS)
@given(c=cases)
def test_convs_on_opencl(c):
    _check(c, "opencl")


@pytest.mark.opencl
@settings(max_examples=library_examples(3), **SETTINGS)
@given(c=cases.map(lambda c: {**c, "depthwise": True}))
def test_depthwise_convs_on_opencl(c):
    _check(c, "opencl")


def test_padding_copies_never_read_outside_their_input():
    """pad, concat and a conv's input copy guard their reads with if_then_else: a Select evaluates both sides, and
    TVM's simplifier drops an index clamp under the Select's condition, so a Select read before the input (this
    crashed MobileNetV2 at 224 x 224)."""
    from adntn_compiler.backends.tvm import compute as C

    for f in (C.pad("k", (4, 5), ((1, 1), (2, 0))), C.concat("k", [(4, 5), (4, 3)], 1),
              C.conv_input("k", (1, 6, 6, 8), True, (1, 1)), C.conv_input("k", (1, 8, 6, 6), False, (2, 1))):
        script = f.script()
        assert "if_then_else" in script and "Select" not in script


def test_the_conv_arena_benchmark_reports_both_lowerings(tmp_path):
    """benchmarks/conv_arena.py --quick: the call arena of ResNet-18 shrinks without im2col's patch matrices."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import conv_arena

    (row,) = conv_arena.main(["--quick", "--out", str(tmp_path / "a.json")])
    assert row["implicit + Winograd"]["arena_bytes"] < row["im2col (before)"]["arena_bytes"]
    assert (tmp_path / "a.txt").read_text().count("resnet18") == 2


def test_tune_covers_a_models_convs(tmp_path, monkeypatch):
    """`adntn.tune` of a dense conv net (no ADNTN layer) times each distinct conv: Winograd on and off where it
    applies, then its GEMM's register tiles; compile() then lowers each conv with the recorded choice, and the
    result still equals torch."""
    from adntn_compiler.tuning import Records, applied

    monkeypatch.setenv("ADNTN_TUNING", str(tmp_path / "tuning"))
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 16, 1, stride=2)).eval()
    x = torch.randn(1, 16, 12, 12)
    recs = adntn.tune(net, example_inputs=(x,), budget_s=15.0, progress=False)
    assert len(recs.convs) == 3 and Records.for_device("cpu").convs == recs.convs
    threes = [r for k, r in recs.convs.items() if " k3x3 " in k]
    assert len(threes) == 2 and all(r["winograd"] in (True, False) for r in threes)
    for r in recs.convs.values():
        assert r["tuned_s"] <= r["default_s"] * 1.0001 and r["candidates"] >= 2, recs.convs
    planned = adntn.capture(net, example_inputs=(x,)).plan("cpu")
    policy = planned.tuned.policy(default_policy(planned.target))
    assert policy.conv_winograd == {k: r["winograd"] for k, r in recs.convs.items() if r["winograd"] is not None}
    assert applied(recs, planned.target, "auto", None).policy(default_policy(planned.target)) == policy
    exe = planned.build()
    with torch.no_grad():
        np.testing.assert_allclose(exe(x.numpy()), net(x).numpy(), rtol=1e-4, atol=1e-4)


def test_a_program_with_a_bad_winograd_constant_is_refused():
    """A loaded program's Winograd constant is checked: an (O, C, 3, 3) weight, no permutation, a buffer that holds
    the 16 / 9 larger transform, and only the one transform name."""
    from adntn_compiler.backends.tvm.program import Program, prepare_const

    good = {"buffers": {"c0": 16 * 4 * 2, "in0": 1, "v": 1}, "inputs": [["x", "in0", [1]]], "outputs": [],
            "calls": [], "consts": [{"buffer": "c0", "tensor": "w", "shape": [2, 4, 3, 3], "perm": None,
                                     "pack": [16, 4, 2, 2], "transform": "winograd"}]}
    Program.from_dict(good)
    for edit, msg in ((dict(shape=[2, 4, 9]), "Winograd transform takes"), (dict(transform="fft"), "consts/0"),
                      (dict(buffer="v"), "does not fit"), (dict(pack=[16, 4, 2, 3]), "pack")):
        bad = {**good, "consts": [{**good["consts"][0], **edit}]}
        with pytest.raises(ValueError, match=msg):
            Program.from_dict(bad)
    w = np.random.default_rng(0).standard_normal((2, 4, 3, 3))
    u = prepare_const(w, {**good["consts"][0], "pack": None}).reshape(4, 4, 4, 2)
    np.testing.assert_allclose(u[0, 0], w[:, :, 0, 0].T, rtol=1e-6)  # G's first row picks g[0, 0]
