"""The torch.export frontend on whole networks: the bundled AlexNet, VGG-16-BN, ResNet-18 and ViT block with
their big layers compressed compile for cpu; the artifact, run in a fresh process where `import torch` fails,
equals torch eager (eval mode) within 1e-4 relative, at batch 1 and 3."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import adntn_compiler as adntn
from adntn_compiler.apps import models
from adntn_compiler.errors import ConfigError
from tests.corpus import library_examples

RATIOS = {"alexnet": 2000, "vgg16_bn": 2000, "resnet18": 100, "vit_block": 200, "mobilenet_v2": 100}


def _randomise_norms(m: nn.Module) -> nn.Module:
    """Batch norms with non-trivial statistics, so that folding them is really tested."""
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            with torch.no_grad():
                mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) - 0.5)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.rand(mod.num_features, generator=g) * 0.4 - 0.2)
    return m


def _input(name: str, batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(batch)
    return torch.randn(batch, 9, 96, generator=g) if name == "vit_block" else torch.randn(batch, 3, 64, 64, generator=g)


def _input_224(name: str, batch: int) -> torch.Tensor:  # the size people deploy (convs without im2col, Winograd)
    return torch.randn(batch, 9, 96) if name == "vit_block" else torch.randn(batch, 3, 224, 224,
                                                                            generator=torch.Generator().manual_seed(batch))


def _run_fresh(path, x: np.ndarray, tmp_path) -> tuple[np.ndarray, dict]:
    xin, yout = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(xin, x)
    proc = subprocess.run([sys.executable, "-m", "adntn_compiler.cli", "run", str(path), "--input", str(xin),
                           "--output", str(yout), "--no-torch", "--json", "--repeats", "1"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return np.load(yout), json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["alexnet", "vgg16_bn", "resnet18", "vit_block", "mobilenet_v2"])
@pytest.mark.slow
def test_whole_model_artifact_equals_torch_eager(name, tmp_path):
    kw = dict(dim=96, heads=4) if name == "vit_block" else {}
    model = _randomise_norms(models.compressed(name, RATIOS[name], **kw)).eval()
    assert any(isinstance(m, adntn.ADNTNLinear) for m in model.modules())
    for batch in (1, 3):
        x = _input_224(name, batch)
        exe = adntn.compile(model, example_inputs=(x,))
        path = exe.save(tmp_path / f"{name}_{batch}.adntn")
        y, res = _run_fresh(path, x.numpy(), tmp_path)
        assert not res["torch_imported"]
        with torch.no_grad():
            want = model(x).numpy()
        assert y.shape == want.shape
        assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max(), name
    kinds = {lay["kind"] for lay in exe.info()["layers"]}
    assert "adntn" in kinds
    if name in ("vgg16_bn", "resnet18", "mobilenet_v2"):
        assert "batchnorm-folded" in kinds


def test_resnet_arena_is_well_below_its_buffers():
    model = _randomise_norms(models.compressed("resnet18", 100)).eval()
    x = _input("resnet18", 1)
    exe = adntn.compile(model, example_inputs=(x,))
    mem = exe.info()["memory"]["call"]
    assert mem["arena_bytes"] < 0.3 * mem["unshared_bytes"], mem
    prog = exe.library.programs["call"]
    assert prog.arena is not None and len(set(prog.arena["offsets"].values())) < len(prog.arena["offsets"])
    with torch.no_grad():
        want = model(x).numpy()
    y = exe(x.numpy())
    np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.cumsum(self.fc(x), dim=1)


def test_unsupported_op_names_the_op_line_and_module(tmp_path):
    model = nn.Sequential(nn.Linear(8, 8), _Cumsum())
    with pytest.raises(ConfigError, match=r"cannot compile aten\.cumsum\.default at test_export\.py:\d+ \(1\).*"
                                          r"Supported: .*aten\.conv2d"):
        adntn.compile(model, example_inputs=(torch.randn(2, 8),))


def test_export_keeps_adntn_layers_whole():
    model = models.compressed("vit_block", 200, dim=96, heads=4).eval()
    ep = torch.export.export(model, (torch.randn(1, 9, 96),))
    targets = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
    assert targets.count("adntn.linear.default") == 4
    assert not any("einsum" in t for t in targets)  # nothing of the IR code was traced
    np.testing.assert_allclose(ep.module()(torch.ones(1, 9, 96)).detach().numpy(),
                               model(torch.ones(1, 9, 96)).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_custom_op_autograd_matches_the_layer():
    layer = adntn.ADNTNLinear(adntn.ttn((12, 20), rank=2, seed=0))
    torch.library.opcheck(adntn.nn.linear_op, (torch.randn(3, 20), [c.detach() for c in layer.core_list()],
                                               layer._key))
    x = torch.randn(3, 20, requires_grad=True)
    adntn.nn.linear_op(x, layer.core_list(), layer._key).square().sum().backward()
    got = [x.grad] + [p.grad for p in layer.cores.values()]
    x2 = x.detach().requires_grad_()
    for p in layer.cores.values():
        p.grad = None
    (x2 @ layer.weight.T).square().sum().backward()
    for a, b in zip(got, [x2.grad] + [p.grad for p in layer.cores.values()]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_conv_strides_groups_and_depthwise_compile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Hardswish(),
                          nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 12, 1, groups=4), nn.AvgPool2d(3, 2, 1, ceil_mode=True), nn.Flatten(),
                          nn.LazyLinear(5))
    x = torch.randn(2, 3, 17, 15)
    model(x)
    model = _randomise_norms(model).eval()
    exe = adntn.compile(model, example_inputs=(x,))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


class _MoreOps(nn.Module):
    """ReLU6/clamp/neg, a class token expanded over the batch, qkv.unbind / chunk / split (timm's forms)."""

    def __init__(self):
        super().__init__()
        self.cls = nn.Parameter(torch.randn(1, 1, 8))
        self.qkv = nn.Linear(8, 24)
        self.act = nn.ReLU6()

    def forward(self, x):  # x: (N, T, 8)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)
        q, k, v = self.qkv(x).reshape(x.shape[0], x.shape[1], 3, 8).permute(2, 0, 1, 3).unbind(0)
        a, b = torch.chunk(q, 2, dim=-1)
        c, d = torch.split(k, [3, 5], dim=-1)
        y = torch.cat([a * b.clamp(-0.5, 0.5), -c, d.clamp(min=0.1)[..., :1]], dim=-1) + self.act(v * 4)
        y = y * nn.functional.hardsigmoid(y)
        return y.clamp(max=2.0)


def test_more_ops_compile():
    torch.manual_seed(0)
    m = _MoreOps().eval()
    x = torch.randn(2, 5, 8)
    exe = adntn.compile(m, example_inputs=(x,))
    with torch.no_grad():
        want = m(x).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-5, atol=1e-5)


class _Resize(nn.Module):
    def forward(self, x):
        a = nn.functional.interpolate(x, size=(7, 12), mode="bilinear", align_corners=False)
        b = nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        c = nn.functional.interpolate(x, size=(3, 9), mode="bilinear", align_corners=True)  # and downsampling
        return torch.cat([a.flatten(1), b.flatten(1), c.flatten(1)], 1)


def test_bilinear_resize_compiles_to_a_contraction_equal_to_torch():
    x = torch.randn(2, 3, 5, 6)
    exe = adntn.compile(_Resize(), example_inputs=(x,))
    with torch.no_grad():
        want = _Resize()(x).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_craft_detector_compiles_and_equals_torch(tmp_path):
    """CRAFT (random weights here; the pretrained ones are an optional extra): VGG16-BN with a dilated conv,
    concatenations and bilinear upsampling, one 512x512 conv compressed."""
    from adntn_compiler.apps.craft import craft

    torch.manual_seed(0)
    model = _randomise_norms(craft())
    adntn.compress(model, {"basenet.slice4.37": dict(arch="ttn", ratio=2000)})
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    exe = adntn.compile(model, example_inputs=(x,))
    path = exe.save(tmp_path / "craft.adntn")
    y, res = _run_fresh(path, x.numpy(), tmp_path)
    with torch.no_grad():
        want = model(x).numpy()
    assert y.shape == want.shape == (1, 2, 32, 48) and not res["torch_imported"]
    assert np.abs(y - want).max() <= 1e-4 * np.abs(want).max()


class _Functional(nn.Module):
    """The functional spellings of the activations, pools and pads the frontend supports as modules."""

    def forward(self, x):
        F = nn.functional
        x = F.pad(x, (1, 2, 0, 1))  # zero padding, last axis first
        y = F.relu6(x * 4) + F.relu6(x.clone(), inplace=True) + F.hardtanh(x, -0.5, 2.0) + F.silu(x) + F.gelu(x)
        y = y + F.leaky_relu(x) + F.leaky_relu(x, 0.2) + F.leaky_relu(x, -0.3) + F.hardswish(x) + F.hardsigmoid(x)
        y = F.relu(y, inplace=True) + F.sigmoid(x) + F.tanh(x)
        return torch.cat([F.avg_pool2d(y, 2).flatten(1), F.max_pool2d(y, 3, 1, 1).flatten(1),
                          F.adaptive_avg_pool2d(y, 1).flatten(1), torch.constant_pad_nd(y, (1, 1)).flatten(1)], 1)


def test_functional_spellings_compile_like_their_modules():
    """F.relu6 was refused (aten.relu6) while nn.ReLU6 compiled; leaky_relu took only torch's default slope."""
    x = torch.randn(2, 3, 6, 7)
    exe = adntn.compile(_Functional(), example_inputs=(x,))
    with torch.no_grad():
        want = _Functional()(x.clone()).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-5, atol=1e-5)


def test_tanh_gelu_compiles_and_equals_torch():
    """GPT-2's activation, F.gelu(x, approximate="tanh"), was refused; in a model, through TVM and the reference."""
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(approximate="tanh"), nn.Linear(32, 8)).eval()
    x = torch.randn(3, 16) * 3
    exe = adntn.compile(model, example_inputs=(x,))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-5, atol=1e-5)
    exact = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    exact.load_state_dict(model.state_dict())
    assert np.abs(adntn.compile(exact, example_inputs=(x,))(x.numpy()) - want).max() > 1e-5  # a different function


class _Fn(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


@pytest.mark.parametrize("f, msg", [
    (lambda x: nn.functional.elu(x), r"aten\.elu\.default .*the op is not supported"),
    (lambda x: nn.functional.softplus(x), r"aten\.softplus\.default .*the op is not supported"),
    (lambda x: nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), "pad with mode='reflect' is not supported"),
    (lambda x: nn.functional.pad(x, (1, 1), value=2.0), "pad with value=2.0 is not supported"),
    (lambda x: nn.functional.pad(x, (-1, 1)), r"pad \[-1, 1\] is not supported"),
    (lambda x: nn.functional.leaky_relu(x, float("nan")), "negative_slope nan is not finite"),
    (lambda x: nn.functional.adaptive_max_pool2d(x, 1), r"aten\.adaptive_max_pool2d\.default .*not supported"),
])
def test_unsupported_functional_spellings_are_refused_naming_them(f, msg):
    with pytest.raises(ConfigError, match=msg):
        adntn.compile(_Fn(f), example_inputs=(torch.randn(1, 2, 5, 5),))


@given(st.floats(-3, 3, allow_nan=False), st.lists(st.integers(0, 3), min_size=2, max_size=6))
def test_leaky_relu_slopes_and_pads_equal_torch_on_the_reference(slope, pad):
    """Any slope and zero pads of any axes, through the frontend's graphs on the float64 reference interpreter."""
    from adntn_compiler.backends.reference import run, with_resident
    from adntn_compiler.frontends.capture import model_graphs

    pad = pad[: len(pad) // 2 * 2]
    m = _Fn(lambda x: nn.functional.leaky_relu(nn.functional.pad(x, pad), slope))
    x = torch.randn(2, 3, 4, 5)
    mg = model_graphs(m, 2, example_inputs=(x,))
    got = run(mg.call, [x.double().numpy()], with_resident(mg.load if mg.load.nodes else None, mg.tensors))[0]
    np.testing.assert_allclose(got, m(x.double()).numpy(), rtol=1e-6, atol=1e-6)  # (the slope is a float32 constant)


class _Attention(nn.Module):
    """Two-head self-attention with is_causal, an additive float mask buffer or a boolean one."""

    def __init__(self, mode: str, length: int = 6):
        super().__init__()
        self.mode, self.qkv = mode, nn.Linear(16, 48)
        keep = torch.rand(length, length, generator=torch.Generator().manual_seed(1)) > 0.4
        keep |= torch.eye(length, dtype=torch.bool)  # every query attends to something
        self.register_buffer("keep", keep)
        self.register_buffer("bias", torch.where(keep, 0.0, float("-inf")) + torch.randn(length, length) * 0.1)

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)
        F = nn.functional
        kw = dict(is_causal=True) if self.mode == "causal" else dict(attn_mask=self.bias if self.mode == "float"
                                                                      else self.keep if self.mode == "bool" else None)
        return F.scaled_dot_product_attention(q, k, v, **kw).transpose(1, 2).reshape(b, n, 16)


@pytest.mark.parametrize("mode", ["causal", "float", "bool"])
def test_masked_attention_equals_torch_and_the_mask_matters(mode):
    """SDPA with is_causal (masked from the indices, in the softmax kernel) or an attn_mask (additive float, or
    boolean: True attends) was refused; the unmasked model gives another answer, so an ignored mask fails."""
    torch.manual_seed(0)
    model, x = _Attention(mode).eval(), torch.randn(2, 6, 16)
    exe = adntn.compile(model, example_inputs=(x,))
    with torch.no_grad():
        want = model(x).numpy()
        model.mode = "none"
        unmasked = model(x).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-5, atol=1e-6)
    assert np.abs(unmasked - want).max() > 1e-2


class _Gathers(nn.Module):
    """Strided slices, index_select by a buffer, masked_fill / where by a boolean buffer, pow, arange and full."""

    def __init__(self, n: int, step: int, index: list[int], fill: float, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.step, self.fill = step, fill
        self.register_buffer("index", torch.tensor(index))
        self.register_buffer("mask", torch.rand(n, generator=g) > 0.5)

    def forward(self, x):
        a = x[:, ::self.step] * 2
        b = torch.index_select(x, 1, self.index)
        c = x.masked_fill(self.mask, self.fill)
        d = torch.where(self.mask, x, x ** 2) + torch.arange(x.shape[1]) + torch.full((x.shape[1],), 0.5)
        e = torch.where(self.mask, -1.5, x) * torch.ones(x.shape[1])
        return torch.cat([a, b, torch.softmax(c, 1), d, e], 1)


@settings(max_examples=library_examples(10), deadline=None)
@given(st.integers(2, 9), st.integers(1, 4), st.lists(st.integers(0, 99), min_size=1, max_size=5),
       st.sampled_from([0.0, -2.5, float("-inf")]), st.integers(0, 99))
def test_gathers_masks_and_constants_equal_torch(n, step, index, fill, seed):
    """Each op that was refused (step slices, index_select, masked_fill, where, pow, arange, full, ones): through
    TVM and the reference, against torch; a -inf fill (attention masks) gives softmax zeros, never NaN."""
    model = _Gathers(n, step, [i % n for i in index], fill, seed).eval()
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(seed))
    exe = adntn.compile(model, example_inputs=(x,))
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(exe(x.numpy()), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exe.reference(x.numpy()), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("f, msg", [
    (lambda m, x: torch.index_select(x, 1, (x[0] > 0).nonzero()[:, 0]), "not supported"),
    (lambda m, x: x.masked_fill(x > 0, 1.0), "not supported"),
    (lambda m, x: x ** 5, "pow with exponent 5"),
    (lambda m, x: x ** 0.5, "pow with exponent 0.5"),
])
def test_run_time_indices_and_masks_are_refused(f, msg):
    class M(nn.Module):
        def forward(self, x):
            return f(self, x)

    with pytest.raises(ConfigError, match=msg):
        adntn.compile(M(), example_inputs=(torch.randn(2, 5),))
