
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler import ir
from adntn_compiler.backends.reference import run
from adntn_compiler.errors import ConfigError, MemoryEstimateError
from adntn_compiler.ir.graph import Op
from adntn_compiler.ir.ops import einsum_sizes
from adntn_compiler.passes import batch as batch_pass
from adntn_compiler.passes import fold, fuse, order, segment
from adntn_compiler.passes.order import naive_path, path_cost, search_path
from adntn_compiler.passes.rebuild import depends_on_input
from adntn_compiler.plan import plan
from tests.corpus import assert_close64, generators, library_examples


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ADNTN_CACHE", str(tmp_path))


def _x(gen, batch, seed):
    return np.random.default_rng(seed).standard_normal((batch, gen.I))


@given(generators(), st.integers(1, 5), st.booleans(), st.integers(0, 2**16))
def test_each_pass_preserves_the_reference_result(gen, batch, keep_constant, seed):
    g = adntn.trace(gen, "layer", batch_size=batch)
    x = _x(gen, batch, seed)
    ref = run(g, [x])[0]
    g1 = ir.verify(segment(g, keep_constant=keep_constant))
    assert_close64(run(g1, [x])[0], ref)
    g2 = ir.verify(order(g1, objective="call" if keep_constant else "total"))
    assert all(len(n.inputs) <= 2 for n in g2.nodes if n.op is Op.EINSUM)
    assert_close64(run(g2, [x])[0], ref)
    g3 = ir.verify(fuse(g2))
    assert_close64(run(g3, [x])[0], ref)
    maps = lambda h: sum(n.op is Op.MAP for n in h.nodes)  # noqa: E731
    assert maps(g3) <= maps(g2) and len(g3.nodes) <= len(g2.nodes)
    prod3, uses3 = g3.producer(), [v.id for n in g3.nodes for v in n.inputs]
    for n in g3.nodes:  # a MAP survives only where its input is shared or not a contraction
        if n.op is Op.MAP:
            v = n.inputs[0]
            assert prod3[v.id].op is not Op.EINSUM or prod3[v.id].attrs.epilogue or uses3.count(v.id) > 1
    g4 = ir.verify(batch_pass(g3))
    np.testing.assert_allclose(run(g4, [x])[0], ref, rtol=1e-9, atol=1e-12)
    einsums = lambda h: sum(n.op is Op.EINSUM for n in h.nodes)  # noqa: E731
    assert einsums(g4) <= einsums(g3)
    f = fold(g4)
    ir.verify(f.load), ir.verify(f.call)
    consts = dict(zip([n.attrs.name for n in f.load.nodes if n.op is Op.OUTPUT], run(f.load)))
    np.testing.assert_allclose(run(f.call, [x], consts)[0], ref, rtol=1e-9, atol=1e-12)
    assert not any(n.op is Op.PARAM for n in f.call.nodes)  # per-call part never touches the cores


@given(generators(), st.integers(1, 8))
def test_segments_merge_linear_chains(gen, batch):
    g = segment(adntn.trace(gen, "layer", batch_size=batch))
    producer = g.producer()
    for n in g.nodes:
        if n.op is Op.EINSUM:
            for v in n.inputs:  # an einsum never feeds a single-use einsum chain any more
                p = producer[v.id]
                assert not (p.op is Op.EINSUM and sum(v in m.inputs for m in g.nodes) == 1)


@given(generators(), st.integers(1, 8))
def test_chosen_order_is_never_worse_than_naive(gen, batch):
    g = segment(adntn.trace(gen, "layer", batch_size=batch, structure_only=True))
    dynamic = depends_on_input(g)
    for n in g.nodes:
        if n.op is Op.EINSUM and len(n.inputs) > 2:
            sizes = einsum_sizes(n.attrs, [v.shape for v in n.inputs])
            t, o = n.attrs.terms, n.attrs.out
            naive = path_cost(t, o, sizes, naive_path(len(t)))
            assert path_cost(t, o, sizes, search_path(t, o, sizes)).flops <= naive.flops
            varying = frozenset(i for i, v in enumerate(n.inputs) if v.id in dynamic)
            naive = path_cost(t, o, sizes, naive_path(len(t)), varying)
            call = path_cost(t, o, sizes, search_path(t, o, sizes, varying=varying, objective="call"), varying)
            assert (call.call_flops, call.flops) <= (naive.call_flops, naive.flops)


@given(generators(), st.integers(1, 6), st.sampled_from(["auto", "materialize", "factored"]), st.integers(0, 99))
def test_plan_runs_equal_reference(gen, batch, schedule, seed):
    p = plan(gen, batch, schedule)
    x = _x(gen, batch, seed)
    np.testing.assert_allclose(p.run(x), x @ adntn.materialize(gen).reshape(gen.O, gen.I).T, rtol=1e-9, atol=1e-12)
    if schedule != "auto":
        assert p.schedule == schedule


def test_batch_merges_the_sibling_nodes_of_a_tree_level():
    gen = adntn.ttn((256, 256), rank=3, layout="binary")  # 16 leaves: 8 same-shaped level-1 nodes
    g = fuse(order(segment(adntn.trace(gen, "weight"))))
    b = ir.verify(batch_pass(g))
    level1 = lambda h: [n for n in h.nodes if n.op is Op.EINSUM and ".level1." in n.path]  # noqa: E731
    assert len(level1(g)) == 16 and len(level1(b)) == 2  # two pairwise steps, each batched over 8 nodes
    np.testing.assert_allclose(run(b)[0], run(g)[0], rtol=1e-10, atol=1e-13)


def test_factored_beats_materialize_at_batch_1_on_fc6():
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", seed=0)
    m, f = plan(gen, 1, "materialize", dtype="float64"), plan(gen, 1, "factored", dtype="float64")
    assert m.flops_per_call == 2 * 4096 * 25088  # one dense matvec
    assert f.flops_per_call * 5 < m.flops_per_call
    assert plan(gen, 1).schedule == "factored"
    assert m.resident_bytes == 8 * 4096 * 25088 > 50 * f.resident_bytes


def test_path_cache_is_reused(tmp_path):
    sizes = {c: 3 for c in "abcdefgh"}
    terms, out = ["ab", "bc", "cd", "de", "ef", "fg", "gh"], "ah"
    p1 = search_path(terms, out, sizes)
    assert len(list(tmp_path.glob("paths/*.json"))) == 1
    assert search_path(terms, out, sizes) == p1


def test_large_segments_use_cotengra():
    # a 14-operand chain goes past the exact threshold: cotengra's hyper optimiser answers
    terms = ["a" + "bcdefghijklmn"[0]] + [c + d for c, d in zip("bcdefghijklm", "cdefghijklmn")] + ["no"]
    sizes = {c: 4 for c in "abcdefghijklmno"}
    path = search_path(terms, "ao", sizes)
    assert len(path) == len(terms) - 1
    assert path_cost(terms, "ao", sizes, path).flops <= path_cost(terms, "ao", sizes, naive_path(len(terms))).flops


def test_memory_budget_errors_name_the_smallest_achievable():
    gen = adntn.ttn((256, 512), rank=3)
    with pytest.raises(MemoryEstimateError, match=r"smallest achievable is [\d.]+ KiB \((stream|factored|recompute)"):
        plan(gen, 4, memory_budget=1000)
    small = plan(gen, 4, memory_budget=10**9)
    assert plan(gen, 4, "materialize").resident_bytes > small.resident_bytes
    with pytest.raises(ConfigError, match="unknown schedule 'fast'"):
        plan(gen, 4, "fast")


def _measured_peak(p, x) -> int:
    import tracemalloc

    consts = p.consts()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run(p.program.call, [x], consts)
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.slow
@settings(max_examples=library_examples(50))  # (whole plans per example: ~1 s each)
@given(generators(conv=False), st.integers(1, 16), st.integers(10, 24), st.integers(0, 99))
def test_memory_budget_is_respected_or_refused(gen, batch, log2_budget, seed):
    budget = 2**log2_budget
    try:
        p = plan(gen, batch, "auto", memory_budget=budget, dtype="float64")  # p.run is float64
    except MemoryEstimateError as e:
        assert "smallest achievable" in str(e)
        return
    assert p.resident_bytes + p.peak_bytes <= budget
    x = _x(gen, batch, seed)
    np.testing.assert_allclose(p.run(x), x @ adntn.materialize(gen).reshape(gen.O, gen.I).T, rtol=1e-9, atol=1e-12)
    # tracemalloc sees numpy's allocations, and also opt_einsum's Python bookkeeping (a few KiB per einsum call:
    # 92 KiB for a 37-einsum stream-tiled program whose arrays peak at 256 bytes)
    n_einsums = sum(1 for n in p.program.call.nodes if n.op is Op.EINSUM)
    assert _measured_peak(p, x) <= 1.05 * p.peak_bytes + 64 * 1024 + 4096 * n_einsums


def test_stream_tiles_to_fit_where_factored_cannot():
    # two legs, linear: what the defaults gave before a tree had to activate a level (with tanh it was the same)
    gen = adntn.ttn((512, 2048), rank=4, layout="interleaved", seed=0, legs=2, activation="identity")
    x = _x(gen, 64, 0)
    f = plan(gen, 64, "factored", dtype="float64")
    budget = (f.resident_bytes + f.peak_bytes) // 2
    s = plan(gen, 64, "stream", memory_budget=budget, dtype="float64")
    assert s.resident_bytes + s.peak_bytes <= budget < f.resident_bytes + f.peak_bytes
    assert any(n.op is Op.CONCAT for n in s.program.call.nodes)  # it really tiled
    assert plan(gen, 64, memory_budget=budget, dtype="float64").schedule == "stream"
    np.testing.assert_allclose(s.run(x), f.run(x), rtol=1e-10, atol=1e-12)
    assert _measured_peak(s, x) <= 1.05 * s.peak_bytes + 64 * 1024


@pytest.mark.slow
def test_recompute_keeps_only_the_cores_and_never_forms_a_generated_tensor_whole():
    """The microcontroller schedule: nothing resident but the cores; a budget below what stream needs is met by
    tiling the generated operands too (output labels concatenated, summed labels added chunk by chunk)."""
    gen = adntn.ttn((512, 2048), rank=4, layout="separated", seed=0)
    x = _x(gen, 1, 0)
    s = plan(gen, 1, "stream", dtype="float64")
    budget = (s.resident_bytes + s.peak_bytes) // 4
    r = plan(gen, 1, "recompute", memory_budget=budget, dtype="float64")
    assert r.resident_bytes == 8 * gen.num_params  # the cores, nothing else
    assert {n.op for n in r.program.load.nodes} <= {Op.PARAM, Op.CONST, Op.OUTPUT}
    assert r.resident_bytes + r.peak_bytes <= budget
    ops = {n.op for n in r.program.call.nodes}
    assert Op.ADD in ops and Op.CONCAT in ops  # tiled over summed and output labels
    whole = {tuple(v.shape) for n in s.program.load.nodes if n.op is Op.OUTPUT for v in n.inputs}
    assert not whole & {n.out.shape for n in r.program.call.nodes if n.op is Op.MAP}  # no level formed whole
    np.testing.assert_allclose(r.run(x), s.run(x), rtol=1e-10, atol=1e-12)
    assert _measured_peak(r, x) <= 1.05 * r.peak_bytes + 64 * 1024 + 4096 * len(r.program.call.nodes)
    with pytest.raises(MemoryEstimateError, match=r"recompute: [\d.]+ KiB resident"):
        plan(gen, 1, "recompute", memory_budget=1000)


@given(generators(conv=False), st.integers(1, 3), st.integers(12, 20), st.integers(0, 99))
def test_recompute_under_a_budget_equals_the_reference(gen, batch, log2_budget, seed):
    try:
        p = plan(gen, batch, "recompute", memory_budget=2**log2_budget, dtype="float64")
    except MemoryEstimateError as e:
        assert "smallest achievable" in str(e)
        return
    assert {n.op for n in p.program.load.nodes} <= {Op.PARAM, Op.CONST, Op.OUTPUT}  # nothing computed ahead
    x = _x(gen, batch, seed)
    np.testing.assert_allclose(p.run(x), x @ adntn.materialize(gen).reshape(gen.O, gen.I).T, rtol=1e-9, atol=1e-12)


def test_order_is_deterministic_for_a_seed(tmp_path, monkeypatch):
    # a 14-operand chain is past the exact threshold, so this exercises cotengra's search
    terms = ["ab"] + [c + d for c, d in zip("bcdefghijklm", "cdefghijklmn")] + ["no"]
    sizes = {c: (k % 3) + 2 for k, c in enumerate("abcdefghijklmno")}
    paths = []
    for k in range(2):
        monkeypatch.setenv("ADNTN_CACHE", str(tmp_path / str(k)))  # no cache: search again
        paths.append(search_path(terms, "ao", sizes, seed=7))
    assert paths[0] == paths[1]


def test_auto_uses_the_cost_model():
    gen = adntn.ttn((512, 1024), rank=4, seed=0)
    for b in (1, 64):
        plans = [plan(gen, b, s) for s in ("materialize", "factored", "stream")]
        assert plan(gen, b).seconds_per_call == min(p.seconds_per_call for p in plans)
        for p in plans:
            assert p.bytes_per_call == sum(st.bytes for st in p.steps if st.where == "call") > 8 * b * 512


@pytest.mark.slow
def test_fc6_plan_at_batch_256_fits_64_mib_in_float32():
    """Budgets count the dtype that runs: float32 for compiled programs (in float64 the smallest was 71.9 MiB)."""
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", seed=0)
    p = plan(gen, 256, memory_budget=64 * 2**20)
    assert p.dtype == "float32" and p.resident_bytes + p.peak_bytes <= 64 * 2**20
    x = _x(gen, 256, 0)
    np.testing.assert_allclose(p.run(x), x @ adntn.materialize(gen).reshape(gen.O, gen.I).T, rtol=1e-8,
                               atol=1e-10)
