"""The ratio search breaks near-ties in parameter count by the size of the activated tensors (training speed)."""
import adntn_compiler as adntn
from adntn_compiler.generators import make
from adntn_compiler.generators.search import PARAM_SLACK


def test_fashion_mnist_fc1_gets_four_cheap_legs_not_five():
    # 784 -> 4096 at 2,000x: 5 interleaved legs (1,549 parameters) form a 2.4 M x 6 node tensor; 4 legs (1,525,
    # 1.6 % fewer) an 18,816-element one, for the same accuracy (85.5 % vs 85.4 %, seed 0, 12,000 images)
    cfg = adntn.config_for_ratio((4096, 784), "ttn", 2000)
    gen = make("ttn", (4096, 784), **cfg)
    five = make("ttn", (4096, 784), layout="interleaved", legs=5, rank=6)
    assert cfg["layout"] == "interleaved" and cfg["legs"] == 4
    assert gen.compression_ratio >= 2000 and gen.rank_bound() == 784
    assert gen.num_params >= (1 - PARAM_SLACK) * five.num_params
    assert gen.activated_elements() == 18816 and five.activated_elements() == 2408448


def test_a_real_parameter_gap_still_wins_over_speed():
    # 4096x4096 at 2,000x: 8 legs (8,273) over 4 legs (6,673, 19 % fewer but 16x smaller activated tensors)
    cfg = adntn.config_for_ratio((4096, 4096), "ttn", 2000)
    assert cfg["legs"] == 8
    # and architectures that do not report a cost keep the most parameters
    assert adntn.config_for_ratio((4096, 784), "mera", 2000)["layout"] == "binary"
    assert make("tt", (64, 64), rank=2).activated_elements() == 0


def test_activated_elements_counts_inner_nodes_only():
    g = make("ttn", (16, 16), layout="interleaved", legs=4, rank=3)  # legs of 4 = 2 x 2: nodes over 2 legs
    assert g.activated_elements() == 4 * 4 * 3
    leafy = make("ttn", (16, 16), layout="interleaved", legs=4, rank=3, leaf_activation=True)
    assert leafy.activated_elements() == 4 * 4 * 3
    assert make("ttn", (16, 16), layout="interleaved", legs=4, rank=3, activation="identity").activated_elements() \
        == 4 * 4 * 3  # (identity still counts: the cost is the node tensor)


def test_the_matrix_rank_bound_outranks_rank_one():
    # FC2 4096 -> 4096 at 77,000x: tt interleaved at rank 1 (a Kronecker product, full rank) beats separated at
    # rank 2 (W of matrix rank <= 2); the head with the separated rank-1 ttn on FC1 scored 27 % on Fashion-MNIST
    cfg = adntn.config_for_ratio((4096, 4096), "tt", 77000)
    assert cfg == dict(layout="interleaved", legs=5, rank=1)
    assert make("tt", (4096, 4096), **cfg).rank_bound() == 4096


def test_more_legs_only_where_the_usual_ones_leave_the_rank_bounded():
    # FC1 1152 -> 4096: no interleaved ttn of <= 8 legs reaches 76,000x, 10 legs at rank 1 do
    cfg = adntn.config_for_ratio((4096, 1152), "ttn", 76000)
    gen = make("ttn", (4096, 1152), **cfg)
    assert cfg["legs"] == 10 and gen.rank_bound() == 1152 and gen.compression_ratio >= 76000
    assert adntn.config_for_ratio((4096, 1152), "ttn", 2000).get("legs", 8) <= 8  # the usual leg counts elsewhere
    assert adntn.config_for_ratio((4096, 4096), "tt", 2000).get("legs", 8) <= 8
