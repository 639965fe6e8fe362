"""Choose a configuration (layout, legs, rank or depth) that reaches a target compression ratio.

Only shapes are computed (no core is initialised), so the search is cheap. Among the candidates that
reach the ratio, the one whose structure allows the highest matrix rank of W wins (a separated TTN joins
its out- and in-subtrees through one root bond: rank 2 at 2,000x on 512x800, and that layer then scores
47 % against 93 % for an interleaved one on MNIST), then, for ttn and tt, the interleaved layout (LAYOUT_FIRST),
then the one with the most parameters (the most expressive within the budget); ties go to less padding, then to
the architecture's default layout. Rank 1 is a last resort among structures with the same rank bound, never before
a higher one: an interleaved rank-1 ttn is an (activated) Kronecker product of small matrices and can have full
rank, a separated rank-1 or rank-2 one cannot (FC1 1152 -> 4096 and FC2 4096 -> 4096 of a conv net's head on
Fashion-MNIST at ~77,000x: separated rank 1 on FC1 scored 27.2 %, the head with no hidden layer 89.5 %). When the
best candidate is rank-bounded, EXTRA_LEGS are tried for a higher bound (10 interleaved legs reach 76,000x on
4096 x 1152, 8 do not). Parameter counts within PARAM_SLACK (2 %) of the most count as tied, and among them the
smallest activated tensor (`Generator.activated_elements`: what each training step forms and maps through the
activation) wins first: on Fashion-MNIST FC1 (784 -> 4096) at 2,000x, 5 interleaved legs (1,549 parameters) form a
2.4 M x 6 node tensor and trained at ~60 s per epoch on 12,000 images, 4 legs (1,525 parameters, 18,816-element
nodes) at ~5 s, for the same accuracy (85.4 / 85.5 %, seed 0, 8 epochs).

For ttn and tt the layout decides more than the parameter count: on Fashion-MNIST (MLP 784-4096-10, FC1 at
~2,000x, 12,000 samples, 4 epochs) a binary ttn (1,573 parameters, the most) scores 69.1 % and a binary tt
71.6 %, against 84.3 % for an interleaved ttn (1,549) and 84.1 % for an interleaved tt. Each interleaved leg
pairs an output factor with an input factor, so every leaf already couples the two sides; the binary tree pads
784 to 1,024 and joins an output bit to an input bit only high in the tree. attn and mera keep the parameter
count first: their mixers cap the legs at a few elements, and for mera the separated layout lost to the binary
one there (75.9 % vs 78.1 %).
"""
from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

from ..errors import AdntnError, ConfigError
from . import ARCHS, LAYOUTS, make

LAYOUT_FIRST = {"ttn": "interleaved", "tt": "interleaved"}  # preferred over more parameters (measured: see above)
PARAM_SLACK = 0.02  # configurations within 2 % of the most parameters count as tied; the cheapest then wins
RANKS = (2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 1)  # rank 1 (a product) only as a last resort
LEGS = (2, 3, 4, 5, 6, 8)
EXTRA_LEGS = (10, 12)  # only where LEGS leave the matrix rank bounded: more legs change tt's choices elsewhere


def candidates(shape: Sequence[int], arch: str, legs_options: Sequence[int] = LEGS, **fixed: Any):
    if arch not in ARCHS:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    params = inspect.signature(ARCHS[arch].__init__).parameters
    layouts = [fixed.pop("layout")] if "layout" in fixed else [l for l in LAYOUTS if "layout" in params]
    knob = "depth" if "depth" in params else "rank" if "rank" in params else None
    values = [fixed.pop(knob)] if knob in fixed else (range(1, 17) if knob == "depth" else RANKS if knob else [None])
    for layout in layouts or [None]:
        leg_opts = [fixed.pop("legs")] if "legs" in fixed else (
            [None] if layout in (None, "binary") or "legs" not in params else [None, *legs_options])
        for legs in leg_opts:
            for v in values:
                cfg = {k: x for k, x in (("layout", layout), ("legs", legs), (knob, v)) if x is not None and k}
                try:
                    yield make(arch, shape, **cfg, **fixed), cfg
                except AdntnError:
                    continue


def config_for_ratio(shape: Sequence[int], arch: str, ratio: float, **fixed: Any) -> dict[str, Any]:
    """Keyword arguments for `make(arch, shape, ...)` giving a compression ratio >= `ratio`."""
    found = _ranked(candidates(shape, arch, **dict(fixed)), arch, ratio)
    full = min(shape[0], math.prod(shape[1:]))  # (a conv's W is O x C*kh*kw)
    if "legs" not in fixed and found and found[0][0][0] < full:  # only a higher rank bound takes more legs
        found = [f for f in _ranked(candidates(shape, arch, EXTRA_LEGS, **dict(fixed)), arch, ratio)
                 if f[0][0] > found[0][0][0]] + found
    if not found:
        raise ConfigError(f"{arch}: no configuration of shape {tuple(shape)} reaches a compression ratio of "
                          f"{ratio:g}x")
    top = max(f[0] for f in found)
    found = [f for f in found if f[0] == top]
    most = max(f[1] for f in found)
    near = [f for f in found if f[1] >= (1 - PARAM_SLACK) * most]  # then the cheapest activated tensor
    best = max(near, key=lambda f: (-f[2], f[3]))[4]
    return {**fixed, **best}


def _ranked(cands, arch: str, ratio: float) -> list:
    """(first keys, parameters, activated elements, tie-breaks, config) of the candidates reaching `ratio`, the
    highest first keys first."""
    default_layout = inspect.signature(ARCHS[arch].__init__).parameters.get("layout")
    found = []
    for gen, cfg in cands:
        if gen.compression_ratio < ratio:
            continue
        first = (gen.rank_bound(), cfg.get("rank") != 1, cfg.get("layout") == LAYOUT_FIRST.get(arch))
        rest = (gen.num_params, -gen.padding_overhead, cfg.get("layout") == getattr(default_layout, "default", None))
        found.append((first, gen.num_params, gen.activated_elements(), rest, cfg))
    return sorted(found, key=lambda f: f[0], reverse=True)
