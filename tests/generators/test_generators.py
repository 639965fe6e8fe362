import math

import numpy as np
import pytest
from hypothesis import given

import adntn_compiler as adntn
from adntn_compiler.apps.models import LAYER_SHAPES
from adntn_compiler.errors import ConfigError, MemoryEstimateError, ShapeError
from adntn_compiler.generators import factor
from tests.corpus import generators


@given(generators())
def test_param_count_is_sum_of_core_sizes(gen):
    assert gen.num_params == sum(v.size for v in gen.cores.values())
    assert gen.compression_ratio == pytest.approx(gen.dense_params / gen.num_params)
    assert gen.num_params == sum(math.prod(s) for s in gen.core_shapes.values())


@given(generators())
def test_materialize_has_target_shape_and_padding_is_reported(gen):
    W = adntn.materialize(gen)
    assert W.shape == gen.shape and np.isfinite(W).all()
    assert gen.padding_overhead == gen.legs.O_pad * gen.legs.I_pad / (gen.O * gen.I) >= 1.0


ACTS = ["tanh", "relu", "gelu", "silu", "sigmoid", "leaky_relu"]
SHAPE = {"brickwall": (1024, 2048)}  # its gate layers sweep the whole 2^Q tensor: keep it smaller


def _init_cases():
    """Every architecture x layout x target ratio that is reachable (shapes only, nothing initialised)."""
    cases = []
    combos = [(a, l, t) for a in ("ttn", "attn", "mera", "brickwall") for l in ("separated", "interleaved", "binary")
              for t in (2000, 20000)] + [(a, None, 2000) for a in ("tt", "tucker", "cp", "lowrank")]
    for i, (arch, layout, target) in enumerate(combos):
        fixed = {} if layout is None else dict(layout=layout)
        if arch in ("ttn", "attn", "mera", "brickwall"):
            fixed["activation"] = ACTS[i % len(ACTS)]
        try:
            cfg = adntn.config_for_ratio(SHAPE.get(arch, (2048, 4096)), arch, target, **fixed)
        except ConfigError:
            continue  # e.g. aTTN disentanglers on interleaved legs of size ~2000 exceed the budget
        cases.append((arch, target, cfg))
    return cases


CASES = _init_cases()


def test_init_cases_cover_every_architecture_and_layout():
    covered = {(a, c.get("layout")) for a, _, c in CASES}
    assert {("ttn", l) for l in ("separated", "interleaved", "binary")} <= covered
    # interleaved legs (o_k * i_k, ~2000 here) make MERA isometries and 4-leg gates exceed the budget
    for arch in ("attn", "mera", "brickwall"):
        assert {(arch, "separated"), (arch, "binary")} <= covered


@pytest.mark.parametrize("arch,target,cfg", CASES, ids=[f"{a}-{t}-{c.get('layout')}" for a, t, c in CASES])
def test_init_scale_matches_default_dense_layer(arch, target, cfg):
    gen = adntn.make(arch, SHAPE.get(arch, (2048, 4096)), seed=1, **cfg)
    assert gen.compression_ratio >= target
    std = adntn.materialize(gen).std()
    target_std = 1 / math.sqrt(3 * gen.I)
    assert target_std / 2 <= std <= 2 * target_std


def _reachable(shape, arch, lo, hi):
    from adntn_compiler.generators.search import candidates

    return [c for g, c in candidates(shape, arch) if lo <= g.compression_ratio <= hi and c.get("rank") != 1]


@pytest.mark.parametrize("arch", ["ttn", "attn", "mera"])
def test_reference_layers_span_2000x_to_77000x(arch):
    ratios = []
    for name, shape in LAYER_SHAPES.items():
        assert _reachable(shape, arch, 2000, 77000), f"{arch} has no config in [2000x, 77000x] for {name}"
        cfg = adntn.config_for_ratio(shape, arch, 2000)
        ratios.append(adntn.make(arch, shape, **cfg).compression_ratio)
    assert min(ratios) <= 2600  # ~2,000x exists
    big = adntn.config_for_ratio(LAYER_SHAPES["vgg16.fc6"], arch, 77000)
    assert big.get("rank") != 1 and adntn.make(arch, LAYER_SHAPES["vgg16.fc6"], **big).compression_ratio >= 77000


def test_factor_pads_awkward_dimensions():
    assert factor(25088, 3) == (32, 28, 28)
    assert math.prod(factor(1009, 3)) >= 1009  # a prime is padded
    gen = adntn.ttn((1009, 64), rank=2, legs=3)  # (legs=2 would be a linear depth-1 tree: refused)
    assert gen.padding_overhead > 1.0
    assert adntn.materialize(gen).shape == (1009, 64)


def test_public_example_shape():
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
    assert 15000 < gen.compression_ratio < 25000


@pytest.mark.parametrize("call,exc,match", [
    (lambda: adntn.make("tree", (8, 8)), ConfigError, "unknown architecture 'tree'"),
    (lambda: adntn.ttn((8, 8), layout="diagonal"), ConfigError, "unknown layout 'diagonal'"),
    (lambda: adntn.ttn((8, 8), rank=0), ConfigError, "rank must be an integer >= 1"),
    (lambda: adntn.ttn((8, 8), activation="swish"), ConfigError, "unknown activation 'swish'"),
    (lambda: adntn.ttn((8, 8), arity=1), ConfigError, "arity"),
    (lambda: adntn.ttn((8, 0)), ShapeError, r"\(8, 0\)"),
    (lambda: adntn.ttn((8, 8, 3)), ShapeError, "Conv2d"),
    (lambda: adntn.ttn((3, 8), layout="separated", legs=4), ShapeError, "output dimension 3 cannot be split into 4"),
    (lambda: adntn.ttn((8, 8), bogus=1), ConfigError, "bogus"),
])
def test_bad_input_is_refused_with_a_clear_message(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_memory_estimate_refuses_before_allocating(monkeypatch):
    with pytest.raises(MemoryEstimateError, match="cores alone would need"):
        adntn.ttn((4096, 4096), rank=100000, layout="binary")
    gen = adntn.ttn((4096, 4096), rank=8, layout="binary")
    monkeypatch.setenv("ADNTN_MEMORY_LIMIT", str(50 * 2**20))  # 50 MiB: W alone needs 128 MiB
    with pytest.raises(MemoryEstimateError, match=r"MiB of memory at its peak.*50.0 MiB is available"):
        adntn.materialize(gen)


@pytest.mark.parametrize("activation", ["relu", "gelu", "silu", "sigmoid", "leaky_relu"])
@pytest.mark.parametrize("arch,cfg", [("ttn", dict(rank=8, legs=8, layout="interleaved")),
                                      ("attn", dict(rank=6, legs=8, layout="interleaved")),
                                      ("mera", dict(rank=4, legs=8, layout="separated"))])
def test_non_odd_activations_are_centred(arch, cfg, activation):
    """A non-odd activation's mean must not build a rank-one part that swamps W (before centring: row means of
    0.39 std for relu ttn, 12.9 std for sigmoid ttn; a network with such a layer after a ReLU trains at chance)."""
    for seed in range(3):
        W = adntn.materialize(adntn.make(arch, (256, 256), activation=activation, seed=seed, **cfg))
        assert np.abs(W.mean(axis=1)).mean() < 0.3 * W.std(), (arch, activation, seed)


@given(generators())
def test_rank_bound_holds(gen):
    W = adntn.materialize(gen).reshape(gen.O, gen.I)
    assert 1 <= gen.rank_bound() <= min(gen.O, gen.I)
    assert np.linalg.matrix_rank(W) <= gen.rank_bound()


@pytest.mark.parametrize("arch,kw,bound", [
    ("ttn", dict(layout="separated", rank=3, legs=2), 3),
    ("tt", dict(layout="separated", rank=2, legs=2), 2),
    ("cp", dict(layout="separated", rank=3, legs=2), 3),
    ("lowrank", dict(rank=4), 4),
    ("ttn", dict(layout="interleaved", rank=2, legs=3), 48),
])
def test_rank_bound_is_tight_for_bottlenecked_structures(arch, kw, bound):
    gen = adntn.make(arch, (48, 64), seed=0, **kw)
    assert gen.rank_bound() == bound == np.linalg.matrix_rank(adntn.materialize(gen))


def test_ratio_search_avoids_a_rank_bottleneck():
    # 512x800 at 2000x: the most parameters is a separated TTN whose root bond (2) caps rank(W) at 2
    cfg = adntn.config_for_ratio((512, 800), "ttn", 2000)
    gen = adntn.make("ttn", (512, 800), **cfg)
    assert gen.compression_ratio >= 2000 and gen.rank_bound() == 512
    assert np.linalg.matrix_rank(adntn.materialize(gen)) > 100


@pytest.mark.parametrize("call,match", [
    (lambda: adntn.ttn((2.5, 4)), "must be a tuple of integers"),
    (lambda: adntn.ttn((8, 8), rank=2.5), "rank must be an integer >= 1"),
    (lambda: adntn.ttn((8, 8), seed="a"), "seed must be an integer"),
    (lambda: adntn.plan(adntn.ttn((8, 8), rank=2), memory_budget="5 parsecs"), "size like '64MiB'"),
])
def test_arguments_are_validated_not_coerced(call, match):
    with pytest.raises(adntn.AdntnError, match=match):
        call()


def test_fixed_schedule_that_does_not_fit_points_to_auto():
    gen = adntn.ttn((512, 2048), rank=4, seed=0)
    with pytest.raises(adntn.MemoryEstimateError, match="materialize schedule .* does not fit.*'auto' fits with"):
        adntn.plan(gen, 1, "materialize", memory_budget="1MiB")
    assert adntn.plan(gen, 1, memory_budget="1MiB").schedule != "materialize"


def test_default_legs_give_the_activation_a_level_to_act_on():
    """ttn((96, 160)) had two legs by default: a depth-1 tree whose only node is the linear root, so tanh and
    identity gave the same weight. Defaults now deepen the tree; an explicit such configuration is refused."""
    for shape, layout in [((96, 160), "interleaved"), ((16, 24), "separated"), ((8, 12), "interleaved")]:
        tanh = adntn.ttn(shape, rank=3, layout=layout, activation="tanh", seed=1)
        ident = adntn.ttn(shape, rank=3, layout=layout, activation="identity", seed=1)
        assert tanh.root.level >= 2
        assert not np.allclose(adntn.materialize(tanh), adntn.materialize(ident))
    with pytest.raises(ConfigError, match="activation 'tanh' would have no effect.*depth 1"):
        adntn.ttn((96, 160), rank=3, legs=2, activation="tanh")
    adntn.ttn((96, 160), rank=3, legs=2, activation="tanh", leaf_activation=True)  # the leaves are activated
    adntn.ttn((96, 160), rank=3, legs=2, activation="identity")  # a linear tree, as asked


def test_a_huge_prime_side_is_refused_in_under_a_second():
    """make("ttn", [2**61 - 1, 48]) hung: legs factor by trial division before anything was checked."""
    import time

    t = time.perf_counter()
    with pytest.raises(ShapeError, match="beyond what a layer can be"):
        adntn.make("ttn", [2**61 - 1, 48], rank=2)
    assert time.perf_counter() - t < 1.0
