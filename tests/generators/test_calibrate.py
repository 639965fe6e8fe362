"""The initial scale is calibrated without materialising W: exactly for small layers, by sampled entries or
propagated moments for large ones; the estimates stay close to the exact std."""
import numpy as np
import pytest

import adntn_compiler as adntn
from adntn_compiler.backends.reference import run
from adntn_compiler.generators import calibrate as C
from adntn_compiler.generators.legs import MIXER_MAX


def _exact_std(gen, cores):
    g, labels = C.weight_graph(gen, cores)
    lg = gen.legs
    w = run(g)[0].transpose([labels.index(("f", f, None)) for f in range(len(lg.fine))])
    return w.reshape(lg.O_pad, lg.I_pad)[: gen.O, : gen.I].std()


def test_small_generators_are_calibrated_exactly():
    gen = adntn.mera((48, 40), rank=3, seed=1)
    W = adntn.materialize(gen)
    assert gen.calibration == "exact"
    assert W.std() == pytest.approx(gen.target_std, rel=1e-9)


@pytest.mark.parametrize("arch,layout", [("ttn", "interleaved"), ("ttn", "separated"), ("attn", "binary"),
                                         ("attn", "interleaved"), ("mera", "interleaved"), ("mera", "separated")])
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_bounded_estimates_stay_near_the_exact_std(monkeypatch, arch, layout, activation):
    monkeypatch.setattr(C, "EXACT_ELEMENTS", 1 << 12)  # force sampling and moments on a layer small enough to check
    monkeypatch.setattr(C, "MIN_SAMPLES", 256)
    gen = adntn.make(arch, (256, 1024), rank=4, layout=layout, activation=activation, seed=1)
    cores = {k: gen.init_core(k, s, np.random.default_rng(0)) for k, s in gen.core_shapes.items() if k != "scale"}
    est, how = C.weight_std(gen, cores)
    assert how in ("sampled", "moments")
    assert 0.6 < est / _exact_std(gen, cores) < 1.4, how


def test_default_mixer_architectures_build_on_vgg_layers():
    # interleaved legs of ~512 elements would make each disentangler 2^36 entries: more legs are chosen
    for arch in ("attn", "mera"):
        gen = adntn.make(arch, (4096, 4096), rank=4, layout="interleaved")
        assert max(gen.legs.dims) ** 4 <= MIXER_MAX and gen.num_params < 10_000
    with pytest.raises(adntn.ConfigError, match="disentangler would hold .* entries"):
        adntn.make("attn", (7, 4096), rank=2, layout="interleaved")

