"""The one interpreter loop: a failing op is reported with the node's printed line and path, on both backends."""
import numpy as np
import pytest

from adntn_compiler.backends.reference import run
from adntn_compiler.errors import ConfigError
from adntn_compiler.ir.builder import Builder
from adntn_compiler.ir.interpret import InterpretError


def _graph():
    b = Builder()
    x = b.input("x", (2, 3), "model.x")
    w = b.param("w", np.ones((3, 4)), "layer0.weight")
    b.output(b.contract([(x, "ik"), (w, "kj")], "ij", "layer0.matmul"))
    return b.build()


def test_a_failing_op_names_the_node_and_its_path():
    g = _graph()
    with pytest.raises(InterpretError,
                       match=r"while executing %2 = einsum\['ab,bc->ac'\].*at layer0.matmul \(reference\)"):
        run(g, [np.ones((2, 3))], {"w": np.ones((5, 4))})  # a tensor of the wrong shape reaches the einsum
    with pytest.raises(ConfigError, match="at layer0.weight.*no tensor named 'v'"):
        run(_renamed(g), [np.ones((2, 3))], {})
    with pytest.raises(InterpretError, match="graph takes 1 inputs, got 0"):
        run(g, [])


def _renamed(g):
    b = Builder()
    x = b.input("x", (2, 3))
    w = b.node(g.nodes[1].op, (), type(g.nodes[1].attrs)("v"), "layer0.weight", (3, 4))
    b.output(b.contract([(x, "ik"), (w, "kj")], "ij"))
    return b.build()


def test_torch_backend_reports_the_node_too():
    torch = pytest.importorskip("torch")
    from adntn_compiler.backends import get_backend

    f = get_backend("torch").compile(_graph(), tensors={"w": torch.ones(5, 4)})
    with pytest.raises(InterpretError, match=r"einsum.*layer0.matmul \(torch\)"):
        f(torch.ones(2, 3))
