"""Named pipelines: `optimize` says which pass failed, and after which passes."""
import numpy as np
import pytest

import adntn_compiler as adntn
from adntn_compiler.backends.reference import run
from adntn_compiler.errors import VerifyError
from adntn_compiler.ir.graph import Graph, Node, Value
from adntn_compiler.passes import PassError, optimize, order, segment
from adntn_compiler.passes.pipelines import TORCH_LAYER, plan_pipeline


def _graph():
    return adntn.trace(adntn.ttn((12, 20), rank=2, seed=0), "layer", batch_size=2)


def broken(g: Graph) -> Graph:  # returns a graph whose last node claims a wrong shape
    n = g.nodes[-1]
    return Graph(g.nodes[:-1] + (Node(n.op, n.inputs, Value(n.out.id, (9,)), n.attrs, n.path),), g.tensors)


def crashing(g: Graph) -> Graph:
    raise IndexError("boom")


def test_optimize_names_the_failing_pass():
    with pytest.raises(PassError, match=r"pass crashing \(pipeline test\) failed after \['segment', 'order'\]: "
                                        r"IndexError: boom"):
        optimize(_graph(), (segment, order, crashing), pipeline="test")
    with pytest.raises(VerifyError, match="verify failed after pass broken"):
        optimize(_graph(), (segment, broken), check=True)


def test_named_pipelines_keep_the_meaning():
    g = _graph()
    x = np.random.default_rng(0).standard_normal((2, 20))
    for p in (TORCH_LAYER, plan_pipeline("stream", "total", target_size=8)):
        assert p.name in str(p)
        np.testing.assert_allclose(run(p(g, check=True), [x])[0], run(g, [x])[0], rtol=1e-10, atol=1e-12)
