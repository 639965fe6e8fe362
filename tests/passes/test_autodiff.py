import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler import ir
from adntn_compiler.backends import torch as tb
from adntn_compiler.backends.reference import run
from adntn_compiler.ir.builder import Builder
from adntn_compiler.ir.graph import Op
from adntn_compiler.passes import fuse, optimize, order, segment
from adntn_compiler.passes.autodiff import autodiff
from tests.corpus import assert_close64, generators, largest_intermediate


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path))


def _grads(bg, args):
    names = [n.attrs.name for n in bg.nodes if n.op is Op.OUTPUT]
    return {k[5:]: v for k, v in zip(names, run(bg, args)) if k.startswith("grad.")}


@given(generators(), st.integers(1, 3), st.booleans(), st.integers(0, 2**16))
def test_core_gradients_equal_torch_autograd(gen, batch, layer_program, seed):
    rng = np.random.default_rng(seed)
    g = adntn.trace(gen, "layer", batch_size=batch) if layer_program else adntn.trace(gen, "weight")
    args = [rng.standard_normal(v.shape) for v in g.inputs]
    ct = rng.standard_normal(g.outputs[0].shape)
    grads = _grads(ir.verify(autodiff(g)), args + [ct])
    params = {k: torch.tensor(v, requires_grad=True) for k, v in g.tensors.items()}
    y = tb.run(g, [torch.tensor(a) for a in args], params)[0]
    (y * torch.tensor(ct)).sum().backward()
    assert set(grads) == {n.attrs.name for n in g.params}
    # float64 rounding of the largest term: a gradient cancelling to 1e-3 from O(1e3) terms carries theirs
    floor = 100 * np.finfo(np.float64).eps * largest_intermediate(autodiff(g), args + [ct])
    for k, gr in grads.items():
        assert_close64(gr, params[k].grad.numpy(), err_msg=k, floor=floor)
    # recomputation and the optimisation passes change the program, not the gradients
    for bg in (autodiff(g, recompute=True), optimize(autodiff(g), (segment, order, fuse))):
        for k, gr in _grads(ir.verify(bg), args + [ct]).items():
            assert_close64(gr, grads[k], err_msg=k, floor=floor)


@st.composite
def einsums(draw):
    """Random einsum equations with repeated labels within a term, broadcast labels and scalars."""
    sizes = {c: draw(st.integers(1, 3)) for c in "abcde"}
    n = draw(st.integers(1, 3))
    terms = [draw(st.text("abcde", min_size=0, max_size=3)) for _ in range(n)]
    labels = sorted(set("".join(terms)))
    out = "".join(draw(st.permutations(labels))[:draw(st.integers(0, len(labels)))])
    return terms, out, sizes


@given(einsums(), st.integers(0, 2**16))
def test_einsum_vjp_is_the_linear_transpose(eq, seed):
    terms, out, sizes = eq
    rng = np.random.default_rng(seed)
    ops = [rng.standard_normal([sizes[c] for c in t]) for t in terms]
    b = Builder()
    vals = [(b.param(f"p{k}", o), list(t)) for k, (o, t) in enumerate(zip(ops, terms))]
    b.output(b.contract(vals, list(out)), "y")
    g = b.build()
    c = rng.standard_normal(g.outputs[0].shape)
    grads = _grads(autodiff(g), [c])
    for k in range(len(terms)):  # <J_k t, c> = <t, J_k^T c>, J_k the map from operand k to the output
        t = rng.standard_normal(ops[k].shape)
        jt = run(g, [], {**{f"p{j}": o for j, o in enumerate(ops)}, f"p{k}": t})[0]
        assert np.isclose(np.sum(jt * c), np.sum(t * grads[f"p{k}"]), rtol=1e-9, atol=1e-10)


def test_missing_vjp_rule_names_the_op():
    from adntn_compiler.passes.autodiff import VJP, AutodiffError

    g = adntn.trace(adntn.ttn((4, 6), rank=2), "weight")
    saved = VJP.pop(Op.RESHAPE)
    try:
        with pytest.raises(AutodiffError, match="no VJP rule for op reshape"):
            autodiff(g)
    finally:
        VJP[Op.RESHAPE] = saved


@given(generators(conv=False), st.integers(1, 3), st.integers(0, 2**16))
def test_split_training_programs_equal_the_autodiff_graph(gen, batch, seed):
    """The training split (forward program + backward program, scale unfused, input gradient) gives the
    autodiff graph's outputs and torch's gradient of x."""
    from functools import partial

    from adntn_compiler.passes.autodiff import split_training

    rng = np.random.default_rng(seed)
    g = optimize(adntn.trace(gen, "layer", batch_size=batch), (segment, order, partial(fuse, scalars=False)))
    x = rng.standard_normal(g.inputs[0].shape)
    ct = rng.standard_normal(g.outputs[0].shape)
    bg = ir.verify(autodiff(g, inputs=True))
    fwd, bwd = (ir.verify(p) for p in split_training(bg))
    fnames = [n.attrs.name for n in fwd.nodes if n.op is Op.OUTPUT]
    fout = dict(zip(fnames, run(fwd, [x])))
    bargs = {"ct.y": ct, **{k: v for k, v in fout.items() if k.startswith("saved.")}}
    bnames = [n.attrs.name for n in bwd.nodes if n.op is Op.OUTPUT]
    bout = dict(zip(bnames, run(bwd, [bargs[n] for n in bwd.input_names])))
    whole = dict(zip([n.attrs.name for n in bg.nodes if n.op is Op.OUTPUT], run(bg, [x, ct])))
    assert_close64(fout["y"], whole["y"], rtol=1e-10)
    assert set(bout) == {k for k in whole if k.startswith("grad.")} and "grad.x" in bout
    for k, v in bout.items():
        assert_close64(v, whole[k], err_msg=k)
    xt = torch.tensor(x, requires_grad=True)
    (tb.run(g, [xt], {k: torch.tensor(v) for k, v in g.tensors.items()})[0] * torch.tensor(ct)).sum().backward()
    assert_close64(bout["grad.x"], xt.grad.numpy())
