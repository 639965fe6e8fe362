import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import adntn_compiler as adntn
from adntn_compiler import ir
from adntn_compiler.errors import SerializationError, VerifyError
from adntn_compiler.ir.graph import EinsumAttrs, Graph, NameAttrs, Node, Op, ShapeAttrs, Value
from tests.corpus import generators


@given(generators())
def test_json_round_trip_is_exact(gen):
    for program in ("layer", "weight"):
        g = adntn.trace(gen, program)
        g2 = ir.from_json(ir.to_json(g))
        assert g2 == g
        assert str(g2) == str(g)
        assert ir.to_json(g2) == ir.to_json(g)


@given(generators(), st.data())
def test_verify_refuses_a_traced_graph_with_one_node_broken(gen, data):
    """A traced graph verifies; the same graph with one node's shape or attrs type broken does not, and the error
    names that node's op."""
    g = adntn.trace(gen, "layer", batch_size=3)
    ir.verify(g)
    k = data.draw(st.sampled_from([i for i, n in enumerate(g.nodes) if n.op not in (Op.PARAM, Op.CONST)]))
    n = g.nodes[k]
    if data.draw(st.booleans()):
        bad = Node(n.op, n.inputs, Value(n.out.id, n.out.shape + (2,), n.out.dtype), n.attrs, n.path)
    else:
        bad = Node(n.op, n.inputs, n.out, ShapeAttrs((7,)) if n.op is not Op.RESHAPE else NameAttrs("x"), n.path)
    with pytest.raises(VerifyError, match=n.op.value):
        ir.verify(Graph(g.nodes[:k] + (bad,) + g.nodes[k + 1:], g.tensors))


def _graph(shape_b=(4, 5)):
    a, b = Value(0, (2, 4)), Value(1, shape_b)
    nodes = (
        Node(Op.PARAM, (), a, NameAttrs("A"), "ttn.leaf0"),
        Node(Op.PARAM, (), b, NameAttrs("B"), "ttn.leaf1"),
        Node(Op.EINSUM, (a, b), Value(2, (2, 5)), EinsumAttrs(("ab", "bc"), "ac"), "ttn.level1.node0"),
        Node(Op.OUTPUT, (Value(2, (2, 5)),), Value(3, (2, 5)), NameAttrs("W")),
    )
    return Graph(nodes, {"A": np.zeros((2, 4)), "B": np.zeros(shape_b)})


def test_verify_names_node_op_sizes_and_path():
    ir.verify(_graph())
    with pytest.raises(VerifyError) as e:
        ir.verify(_graph((3, 5)))
    msg = str(e.value)
    assert "einsum['ab,bc->ac']" in msg and "ttn.level1.node0" in msg
    assert "label 'b'" in msg and "size 3" in msg and "4" in msg


def test_verify_catches_ssa_and_order():
    g = _graph()
    dup = Graph((g.nodes[0], g.nodes[0]) + g.nodes[2:], g.tensors)
    with pytest.raises(VerifyError, match="defined twice"):
        ir.verify(dup)
    swapped = Graph((g.nodes[2],) + g.nodes[:2] + g.nodes[3:], g.tensors)
    with pytest.raises(VerifyError, match="before it is defined"):
        ir.verify(swapped)


def test_printer_golden():
    # two legs, linear: what the defaults gave before a tree had to activate a level (with tanh it was the same)
    gen = adntn.ttn((20, 30), rank=3, layout="interleaved", seed=0, legs=2, activation="identity")
    assert str(adntn.trace(gen, "weight")) == (
        "%0 = param['leaf0']() : (30, 3)  # ttn.leaf0\n"
        "%1 = param['leaf1']() : (20, 3)  # ttn.leaf1\n"
        "%2 = param['root']() : (3, 3)  # ttn.root\n"
        "%3 = param['scale']() : ()  # ttn.scale\n"
        "%4 = reshape[(5, 6, 3)](%0) : (5, 6, 3)  # ttn.leaf0\n"
        "%5 = reshape[(4, 5, 3)](%1) : (4, 5, 3)  # ttn.leaf1\n"
        "%6 = einsum['abc,def,cf->abde'](%4, %5, %2) : (5, 6, 4, 5)  # ttn.root\n"
        "%7 = einsum['abcd,->abcd'](%6, %3) : (5, 6, 4, 5)  # ttn.scale\n"
        "%8 = transpose[(0, 2, 1, 3)](%7) : (5, 4, 6, 5)  # ttn.weight\n"
        "%9 = reshape[(20, 30)](%8) : (20, 30)  # ttn.weight\n"
        "%10 = output['W'](%9) : (20, 30)"
    )


def test_corrupt_json_is_refused():
    g = adntn.trace(adntn.ttn((6, 8), rank=2), "weight")
    text = ir.to_json(g)
    with pytest.raises(SerializationError):
        ir.from_json(text[:-10])
    with pytest.raises(SerializationError, match="version"):
        ir.from_json(text.replace('"version":1', '"version":99'))
