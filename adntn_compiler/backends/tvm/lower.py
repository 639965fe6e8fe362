"""Lowering: a graph becomes a list of kernel calls over flat float32 buffers, plus the TVM kernels.

Buffers are flat and C-ordered, so a reshape is free (the same buffer seen with another shape) and every
kernel argument is a (buffer, shape) view. A two-operand einsum becomes a batched GEMM
C[b, i, j] = sum_k A[b, i, k] B[b, k, j]: a constant operand is put in that layout (and B packed into column
panels) once, at load time; a dynamic operand in the wrong layout is copied by a transpose kernel. A result
whose label order differs from the canonical (b, i, j) stays in that order: it is a permuted value, which an
einsum or map reads as it is (an einsum's labels are layout-free) and which is transposed into its graph
order only when another op or an output needs it. Everything else is a memory-bound kernel.

The program is plain JSON (`Program.to_dict`), so an artifact stores it next to the compiled library.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from ...errors import ConfigError
from ...ir.graph import ConvAttrs, Graph, Node, Op, Value
from ...ir.ops import conv_out
from ...targets import Target
from . import compute as C
from . import schedules
from .policy import CPUPolicy
from .program import Program, plan_arena


def _nonunit(labels: str, sizes: dict[str, int]) -> str:
    return "".join(c for c in labels if sizes[c] != 1)


NHWC = (0, 2, 3, 1)  # the physical axis order of an NCHW value kept channels-last (`Lowerer.perm`)


@dataclass(frozen=True)
class ConvChain:
    """A convolution and what its write-back absorbs: im2col -> einsum with a constant weight -> reshape to NCHW
    [-> + bias] [-> + residual] [-> activation]. Lowered as one kernel that writes NHWC, with no patch matrix."""
    x: Value
    attrs: ConvAttrs
    weight: Value  # the CONST/PARAM value of the (O, C/G, kh, kw) weight
    nodes: tuple[Node, ...]  # every node it replaces; the last one's value is the result
    bias: Value | None = None  # a constant of O elements
    residual: Value | None = None
    steps: tuple[str, ...] = ()  # then elementwise: an activation, or "max" / "min" / ... with the next scalar
    scalars: tuple[Value, ...] = ()  # the constant scalar of each binary step, in order

    @property
    def depthwise(self) -> bool:
        return self.attrs.groups > 1

    @property
    def key(self) -> str:
        """The conv's workload (what tuning records it by): input shape, output channels and attributes."""
        a = self.attrs
        return (f"{'x'.join(map(str, self.x.shape))}>{self.weight.shape[0]} k{a.kernel[0]}x{a.kernel[1]} "
                f"s{a.stride[0]}x{a.stride[1]} p{a.padding[0]}x{a.padding[1]} d{a.dilation[0]}x{a.dilation[1]} "
                f"g{a.groups}")

    def gemm_shape(self, policy, winograd: bool) -> tuple[int, int, int]:
        """(I, J, K) of the GEMM this conv lowers to (whose tiles the policy's `tiles` may give)."""
        N, Cin = self.x.shape[:2]
        O = self.weight.shape[0]
        Ho, Wo = self.nodes[-1].out.shape[2:]
        if winograd:
            return N * -(-Ho // 2) * -(-Wo // 2), O, Cin
        rows = policy.conv_rows(O)
        return -(-N * Ho * Wo // rows) * rows, O, math.prod(self.attrs.kernel) * Cin


_SCALAR_STEPS = ("add", "sub", "mul", "div", "max", "min")


def _const_root(v: Value, producer: dict[int, Node]) -> Value | None:
    """The CONST/PARAM value that v is a reshape of (or v itself), else None."""
    n = producer.get(v.id)
    while n is not None and n.op is Op.RESHAPE:
        v = n.inputs[0]
        n = producer.get(v.id)
    return v if n is not None and n.op in (Op.CONST, Op.PARAM) else None


class _ConvFinder:
    """Walks a graph's users to find conv chains (`find_convs`)."""

    def __init__(self, g: Graph, depthwise: bool):
        self.g, self.depthwise = g, depthwise
        self.users: dict[int, list[Node]] = defaultdict(list)
        self.producer = {n.out.id: n for n in g.nodes}
        for n in g.nodes:
            for v in n.inputs:
                self.users[v.id].append(n)

    def only(self, v: Value) -> Node | None:
        return self.users[v.id][0] if len(self.users[v.id]) == 1 else None

    def const(self, v: Value) -> Value | None:
        return _const_root(v, self.producer)

    def head(self, n: Node) -> tuple[Value, Node] | None:
        """(weight constant, the reshape to NCHW) of an im2col whose one user is the conv einsum."""
        a, x = n.attrs, n.inputs[0]
        e = self.only(n.out)
        ids = [v.id for v in e.inputs] if e is not None else []
        if e is None or e.op is not Op.EINSUM or len(ids) != 2 or e.attrs.epilogue or n.out.id not in ids:
            return None
        kp = ids.index(n.out.id)
        wc = self.const(e.inputs[1 - kp])
        tw, tp, to = e.attrs.terms[1 - kp], e.attrs.terms[kp], e.attrs.out  # "gok", "gknp" -> "ngop"
        if wc is None or (len(tw), len(tp), len(to)) != (3, 4, 4) or \
                (tw[0], tw[0], tw[2], tp[2], tw[1], tp[3]) != (tp[0], to[1], tp[1], to[0], to[2], to[3]):
            return None
        N, Cin = x.shape[:2]
        O = wc.shape[0]
        dw = a.groups > 1 and a.groups == Cin == O
        if (a.groups > 1 and not (dw and self.depthwise)) or math.prod(a.kernel) * (Cin // a.groups) < 2:
            return None
        r = self.only(e.out)
        if r is None or r.op is not Op.RESHAPE or len(r.out.shape) != 4 or r.out.shape[:2] != (N, O):
            return None
        return wc, r

    def other(self, nx: Node, v: Value) -> Value:
        return nx.inputs[1] if nx.inputs[0].id == v.id else nx.inputs[0]

    def chain(self, n: Node, claimed: set[int]) -> ConvChain | None:
        head = self.head(n)
        if head is None:
            return None
        wc, r = head
        O = wc.shape[0]
        nodes: list[Node] = [n, *self.users[n.out.id], r]
        bias = res = None
        nx = self.only(r.out)
        if nx is not None and nx.op is Op.ADD:
            other = self.other(nx, r.out)
            bc = self.const(other)
            if bc is not None and bc.size == O and other.shape in ((O, 1, 1), (1, O, 1, 1)):
                bias, nodes = bc, nodes + [nx]
                nx = self.only(nx.out)
        if nx is not None and nx.op is Op.ADD and nx.out.id not in claimed:
            other = self.other(nx, nodes[-1].out)
            if other.shape == r.out.shape and other.id != nodes[-1].out.id:
                res, nodes = other, nodes + [nx]
                nx = self.only(nx.out)
        steps, scalars = self.steps(nx, nodes)
        if any(m.out.id in claimed for m in nodes):
            return None
        return ConvChain(n.inputs[0], n.attrs, wc, tuple(nodes), bias, res, tuple(steps), tuple(scalars))

    def steps(self, nx: Node | None, nodes: list[Node]) -> tuple[list[str], list[Value]]:
        """Activations, and binary ops with a constant scalar (ReLU6 is max 0, min 6), appended to `nodes`."""
        steps, scalars = [], []
        while nx is not None:
            if nx.op is Op.MAP and not nx.attrs.fn.startswith("d:"):
                steps.append(nx.attrs.fn)
            elif nx.op is Op.BINARY and nx.attrs.fn in _SCALAR_STEPS:
                k = 1 if nx.inputs[0].id == nodes[-1].out.id else 0
                sc = self.const(nx.inputs[k])
                if sc is None or sc.size != 1 or (k == 0 and nx.attrs.fn in ("sub", "div")):
                    break
                steps.append(nx.attrs.fn)
                scalars.append(sc)
            else:
                break
            nodes.append(nx)
            nx = self.only(nx.out)
        return steps, scalars


def find_convs(g: Graph, depthwise: bool) -> list[ConvChain]:
    """The conv chains of `g` to lower without im2col: groups=1, and depthwise ones when the schedule module has
    a depthwise schedule; other grouped convs keep im2col + GEMM. Every value inside a chain has one user."""
    f = _ConvFinder(g, depthwise)
    chains: list[ConvChain] = []
    claimed: set[int] = set()
    for n in g.nodes:
        c = f.chain(n, claimed) if n.op is Op.IM2COL else None
        if c is not None:
            claimed.update(m.out.id for m in c.nodes)
            chains.append(c)
    return chains


def winograd_applies(ch: ConvChain, sched) -> bool:
    """Whether Winograd F(2x2, 3x3) can run this conv: 3 x 3, stride 1, undilated, ungrouped, on a schedule module
    that has its transforms."""
    a = ch.attrs
    return (hasattr(sched, "winograd_input") and a.kernel == (3, 3) and a.stride == (1, 1) and a.dilation == (1, 1)
            and a.groups == 1)


def use_winograd(ch: ConvChain, sched, pol) -> bool:
    """Whether the lowering runs `ch` as Winograd: forced by `pol.winograd`, else tuned for this conv, else where the
    cost model says it wins: 2.25x fewer flops, against writing and reading back the transformed input and the 16
    GEMMs' results."""
    if pol.winograd is False or not winograd_applies(ch, sched):
        return False
    if pol.winograd or ch.key in pol.conv_winograd:
        return bool(pol.winograd or pol.conv_winograd[ch.key])
    N, Cin = ch.x.shape[:2]
    O = ch.weight.shape[0]
    Ho, Wo = ch.nodes[-1].out.shape[2:]
    P = N * -(-Ho // 2) * -(-Wo // 2)
    direct = 2 * N * Ho * Wo * O * 9 * Cin / pol.gemm_rate
    # the transforms mostly stay in cache: 4x the memory rate (1.3-1.8x faster measured from 32 to 512
    # channels, 7 x 7 to 56 x 56, with the rates of the default x86 policy)
    wino = 2 * 16 * P * O * Cin / pol.gemm_rate_at(Cin) + 2 * 16 * P * (Cin + O) * 4 / (4 * pol.byte_rate)
    return wino < direct


class Lowerer:
    """Lowers one graph for one Target: tiles and thresholds come from `policy`, schedules from the target's
    schedule module, the vector width and threading from the target."""

    def __init__(self, prefix: str, target: Target, policy: CPUPolicy):
        self.prefix, self.target, self.policy = prefix, target, policy
        self.sched = schedules.for_target(target)
        self.parallel = target.parallel
        self.funcs: dict[str, object] = {}  # kernel name -> PrimFunc
        self._keys: dict[tuple, str] = {}  # kernel signature -> name (identical kernels are shared)
        self.p = Program()
        self.buf: dict[int, str] = {}  # value id -> buffer name
        self.const_of: dict[int, str] = {}  # value id -> tensor name, for CONST/PARAM values
        # value id -> physical axis order (graph axes), for a value whose buffer is not in graph order
        self.perm: dict[int, tuple[int, ...]] = {}
        self._graph_order: dict[int, str] = {}  # value id -> buffer holding a permuted value in graph order
        self.in_order: set[int] = set()  # values some op reads in graph order (not only einsums and maps)
        self.inplace: set[int] = set()  # calls whose result may take the memory of a same-sized input (elementwise)

    # ------------------------------------------------------------ helpers
    def new_buffer(self, size: int, hint: str) -> str:
        name = f"{hint}{len(self.p.buffers)}"
        self.p.buffers[name] = int(size)
        return name

    def kernel(self, key: tuple, build) -> str:
        if key not in self._keys:
            name = f"{self.prefix}_{key[0]}{len(self._keys)}"
            self.funcs[name] = build(name)
            self._keys[key] = name
        return self._keys[key]

    def flat(self, func):
        return self.sched.flat(func, self.policy, self.parallel)

    def call(self, kernel: str, *args: tuple[str, tuple[int, ...]]) -> None:
        self.p.calls.append({"kernel": kernel, "args": [[b, list(s)] for b, s in args]})

    def phys(self, v: Value, term: str = "") -> tuple[str, tuple[int, ...], str]:
        """(buffer, physical shape, `term` relabelled in physical axis order) of v as it is stored."""
        p = self.perm.get(v.id)
        if p is None:
            return self.buf[v.id], v.shape, term
        return self.buf[v.id], tuple(v.shape[i] for i in p), "".join(term[i] for i in p) if term else term

    def view(self, v: Value) -> tuple[str, tuple[int, ...]]:
        """v in graph order: a permuted value is transposed (once) for the ops that need that."""
        p = self.perm.get(v.id)
        if p is None:
            return self.buf[v.id], v.shape
        if v.id not in self._graph_order:
            buf, shape, _ = self.phys(v)
            self._graph_order[v.id] = self._transpose(buf, shape, tuple(p.index(i) for i in range(len(p))))
        return self._graph_order[v.id], v.shape

    def _transpose(self, buf: str, shape: tuple[int, ...], perm: tuple[int, ...], out: str | None = None) -> str:
        """A transpose kernel call: `buf` (of `shape`) with its axes permuted by `perm`, into `out` or a new
        buffer."""
        out = out or self.new_buffer(math.prod(shape), "t")
        k = self.kernel(("transpose", shape, perm), lambda nm: self.sched.transpose(
            C.transpose(nm, shape, perm), perm, self.policy, self.parallel))
        self.call(k, (buf, shape), (out, tuple(shape[p] for p in perm)))
        return out

    def const_layout(self, v: Value, perm, pack, shape: tuple[int, ...] | None = None) -> str:
        """A load-time copy of constant `v` (seen with `shape`, by default its own) in another layout (shared
        between uses)."""
        shape = shape or v.shape
        key = ("layout", v.id, shape, tuple(perm) if perm is not None else None, tuple(pack) if pack else None)
        name = self._keys.get(key)
        if name is None:
            name = self.new_buffer(v.size, "c")
            self.p.consts.append({"buffer": name, "tensor": self.const_of[v.id], "shape": list(shape),
                                  "perm": list(perm) if perm is not None else None,
                                  "pack": list(pack) if pack else None})
            self._keys[key] = name
        return name

    def transpose_to(self, v: Value, term: str, want: str, sizes: dict[str, int]) -> str:
        """Buffer holding v (labels `term`, in buffer order) in label order `want`: the same buffer when only
        unit axes move."""
        if _nonunit(term, sizes) == _nonunit(want, sizes):
            return self.buf[v.id]
        perm = tuple(term.index(c) for c in want)
        if v.id in self.const_of:
            return self.const_layout(v, perm, None)
        buf, shape, _ = self.phys(v)
        return self._transpose(buf, shape, perm)

    # ------------------------------------------------------------ ops
    def lower(self, g: Graph) -> Program:
        for n in reversed(g.nodes):  # a map's input is needed in graph order when its result is
            if n.op is not Op.EINSUM and (n.op is not Op.MAP or n.out.id in self.in_order):
                self.in_order.update(v.id for v in n.inputs)
        convs = find_convs(g, hasattr(self.sched, "depthwise")) if self.policy.implicit_conv else []
        chains = {c.nodes[-1].out.id: c for c in convs}
        inside = {m.out.id for c in chains.values() for m in c.nodes[:-1]}
        for n in g.nodes:
            if n.out.id in chains:
                self.conv(chains[n.out.id])
            elif n.out.id not in inside:
                getattr(self, "op_" + n.op.value)(n)
        return self.p

    def op_input(self, n: Node) -> None:
        self.buf[n.out.id] = self.new_buffer(n.out.size, "in")
        self.p.inputs.append([n.attrs.name, self.buf[n.out.id], list(n.out.shape)])

    def op_param(self, n: Node) -> None:
        self.buf[n.out.id] = self.new_buffer(n.out.size, "p")
        self.const_of[n.out.id] = n.attrs.name
        self.p.consts.append({"buffer": self.buf[n.out.id], "tensor": n.attrs.name, "shape": list(n.out.shape),
                              "perm": None, "pack": None})

    op_const = op_param

    def op_output(self, n: Node) -> None:
        v = n.inputs[0]
        self.p.outputs.append([n.attrs.name, self.view(v)[0], list(v.shape)])

    def op_reshape(self, n: Node) -> None:
        self.buf[n.out.id] = self.view(n.inputs[0])[0]
        if n.inputs[0].id in self.const_of:  # a view of a constant: its layouts come from the same tensor
            self.const_of[n.out.id] = self.const_of[n.inputs[0].id]

    def _fresh(self, n: Node) -> tuple[str, tuple[int, ...]]:
        self.buf[n.out.id] = self.new_buffer(n.out.size, "v")
        return self.buf[n.out.id], n.out.shape

    def op_map(self, n: Node) -> None:
        x = n.inputs[0]
        buf, shape, _ = self.phys(x)  # elementwise: a permuted value stays permuted
        k = self.kernel(("map", shape, n.attrs.fn), lambda nm: self.flat(C.elementwise(nm, shape, n.attrs.fn)))
        self.call(k, (buf, shape), (self._fresh(n)[0], shape))
        self.inplace.add(len(self.p.calls) - 1)  # (after the call: reading an operand may emit a transpose first)
        if x.id in self.perm:
            self.perm[n.out.id] = self.perm[x.id]

    def op_add(self, n: Node) -> None:
        a, b = n.inputs
        p = self.perm.get(a.id)
        if p is not None and a.shape == b.shape and self.perm.get(b.id) == p:  # both permuted alike: stays so
            (ab, s, _), (bb, _, _) = self.phys(a), self.phys(b)
            self.perm[n.out.id] = p
            k = self.kernel(("add", s, s), lambda nm: self.flat(C.add(nm, s, s)))
            self.call(k, (ab, s), (bb, s), (self._fresh(n)[0], s))
        else:
            k = self.kernel(("add", a.shape, b.shape), lambda nm: self.flat(C.add(nm, a.shape, b.shape)))
            self.call(k, self.view(a), self.view(b), self._fresh(n))
        self.inplace.add(len(self.p.calls) - 1)

    def op_transpose(self, n: Node) -> None:
        x, perm = n.inputs[0], tuple(n.attrs.perm)
        buf, shape, _ = self.phys(x)
        if x.id in self.perm:  # from the stored order straight to the result's: one copy, not two
            perm = tuple(self.perm[x.id].index(q) for q in perm)
        self._transpose(buf, shape, perm, self._fresh(n)[0])

    def op_pad(self, n: Node) -> None:
        x, pads = n.inputs[0], n.attrs.pads
        k = self.kernel(("pad", x.shape, pads), lambda nm: self.flat(C.pad(nm, x.shape, pads)))
        self.call(k, self.view(x), self._fresh(n))

    def op_slice(self, n: Node) -> None:
        x, a = n.inputs[0], n.attrs
        k = self.kernel(("slice", x.shape, a.starts, a.stops),
                        lambda nm: self.flat(C.slice_(nm, x.shape, a.starts, a.stops)))
        self.call(k, self.view(x), self._fresh(n))

    def op_concat(self, n: Node) -> None:
        shapes = [v.shape for v in n.inputs]
        k = self.kernel(("concat", tuple(shapes), n.attrs.axis),
                        lambda nm: self.flat(C.concat(nm, shapes, n.attrs.axis)))
        self.call(k, *(self.view(v) for v in n.inputs), self._fresh(n))

    # whole-model ops: topi's compute (im2col is ours), the target's flat/copy schedules
    def op_binary(self, n: Node) -> None:
        a, b = n.inputs
        k = self.kernel(("binary", n.attrs.fn, a.shape, b.shape),
                        lambda nm: self.flat(C.binary(nm, n.attrs.fn, a.shape, b.shape)))
        self.call(k, self.view(a), self.view(b), self._fresh(n))
        self.inplace.add(len(self.p.calls) - 1)

    def op_im2col(self, n: Node) -> None:
        x, a = n.inputs[0], n.attrs
        G, K, N, P = n.out.shape
        kh, kw = a.kernel
        out_shape = (G, K // (kh * kw), kh, kw, N, *conv_out(a, x.shape))  # the same flat layout, one loop per axis
        k = self.kernel(("im2col", x.shape, a), lambda nm: self.sched.copy(
            C.im2col(nm, x.shape, a.kernel, a.stride, a.padding, a.dilation, a.groups), self.policy, self.parallel))
        self.call(k, self.view(x), (self._fresh(n)[0], out_shape))

    def _nhwc(self, n: Node) -> tuple[str, tuple[int, ...], str]:
        """(buffer, shape, layout) of a pool's input: NHWC kept as it is (the result stays NHWC), else NCHW."""
        x = n.inputs[0]
        if self.perm.get(x.id) == NHWC:
            self.perm[n.out.id] = NHWC
            buf, shape, _ = self.phys(x)
            return buf, shape, "NHWC"
        return *self.view(x), "NCHW"

    def op_pool(self, n: Node) -> None:
        a = n.attrs
        buf, shape, layout = self._nhwc(n)
        k = self.kernel(("pool", shape, layout, a), lambda nm: self.flat(C.pool(
            nm, shape, a.mode, a.kernel, a.stride, a.padding, a.dilation, a.ceil_mode, a.count_include_pad, layout)))
        self.call(k, (buf, shape), (self._fresh(n)[0], self.phys(n.out)[1]))

    def op_adaptive_pool(self, n: Node) -> None:
        a = n.attrs
        buf, shape, layout = self._nhwc(n)
        k = self.kernel(("adaptive_pool", shape, layout, a),
                        lambda nm: self.flat(C.adaptive_pool(nm, shape, a.mode, a.output_size, layout)))
        self.call(k, (buf, shape), (self._fresh(n)[0], self.phys(n.out)[1]))

    def _winograd_conv(self, ch: ConvChain, xbuf: str, xs: tuple[int, ...], extra: list, obuf: str,
                       out: tuple[int, ...], opts: dict) -> None:
        """The input transform (16, P, C), 16 GEMMs against the weight transformed at load, (16, P, O), and the
        output transform with the conv's epilogue."""
        N, Ho, Wo, O = out
        Cin = xs[3]
        th, tw = -(-Ho // 2), -(-Wo // 2)
        P = N * th * tw
        vbuf = self.new_buffer(16 * P * Cin, "wv")
        k = self.kernel(("winograd_input", xs, (th, tw)), lambda nm: self.sched.winograd_input(
            C.winograd_input(nm, xs, (th, tw)), self.policy, self.parallel))
        self.call(k, (xbuf, xs), (vbuf, (16, P, Cin)))
        tiles = self.policy.gemm_tiles(P, O, Cin)
        key = ("layout", ch.weight.id, "winograd", tiles.jt)
        ubuf = self._keys.get(key)
        if ubuf is None:
            ubuf = self._keys[key] = self.new_buffer(16 * O * Cin, "c")
            self.p.consts.append({"buffer": ubuf, "tensor": self.const_of[ch.weight.id],
                                  "shape": list(ch.weight.shape), "perm": None, "pack": [16, Cin, O, tiles.jt],
                                  "transform": "winograd"})
        mbuf = self.new_buffer(16 * P * O, "wm")
        k = self.kernel(("gemm", 16, P, O, Cin, True, tiles, 0, "", None, None), lambda nm: self.sched.gemm(
            C.gemm(nm, 16, P, O, Cin, jt=tiles.jt), tiles, self.policy, self.parallel))
        self.call(k, (vbuf, (16, P, Cin)), (ubuf, (16, O // tiles.jt, Cin, tiles.jt)), (mbuf, (16, P, O)))
        k = self.kernel(("winograd_output", (16, P, O), out, *opts.values()), lambda nm: self.sched.winograd_output(
            C.winograd_output(nm, (16, P, O), out, **opts), self.policy, self.parallel))
        self.call(k, (mbuf, (16, P, O)), *extra, (obuf, out))

    def conv(self, ch: ConvChain) -> None:
        """One kernel for a conv chain (`find_convs`): the input padded into NHWC by a copy (none when it is NHWC
        and unpadded), then the implicit GEMM (or the depthwise kernel) with the bias, residual and activation in
        its write-back. The result is NHWC: a permuted value, which the next conv, pool or map reads as it is."""
        x, a, end = ch.x, ch.attrs, ch.nodes[-1]
        N, Cin, H, W = x.shape
        O = ch.weight.shape[0]
        Ho, Wo = end.out.shape[2:]
        wino = use_winograd(ch, self.sched, self.policy)
        ph, pw = a.padding
        tail = (Ho % 2, Wo % 2) if wino else (0, 0)  # Winograd reads whole 4 x 4 tiles
        buf, shape, _ = self.phys(x)
        nhwc = self.perm.get(x.id) == NHWC
        if not nhwc:
            buf, shape = self.view(x)
        xs = (N, H + 2 * ph + tail[0], W + 2 * pw + tail[1], Cin)
        if ph or pw or any(tail) or not nhwc:
            k = self.kernel(("conv_input", shape, nhwc, (ph, pw), tail), lambda nm: self.sched.copy(
                C.conv_input(nm, shape, nhwc, (ph, pw), tail), self.policy, self.parallel))
            xb = self.new_buffer(math.prod(xs), "x")
            self.call(k, (buf, shape), (xb, xs))
            buf = xb
        extra = []
        if ch.bias is not None:
            extra.append((self.buf[ch.bias.id], (O,)))
        out = (N, Ho, Wo, O)
        if ch.residual is not None:
            r = ch.residual
            rbuf = self.buf[r.id] if self.perm.get(r.id) == NHWC else self._transpose(*self.view(r), NHWC)
            extra.append((rbuf, out))
        extra += [(self.buf[v.id], (1,)) for v in ch.scalars]
        obuf = self._fresh(end)[0]
        self.perm[end.out.id] = NHWC
        opts = dict(bias=ch.bias is not None, residual=ch.residual is not None, steps=ch.steps)
        kh, kw = a.kernel
        if wino:
            self._winograd_conv(ch, buf, xs, extra, obuf, out, opts)
            return
        if ch.depthwise:
            wbuf = self.const_layout(ch.weight, (1, 2, 0), None, (O, kh, kw))
            k = self.kernel(("depthwise", xs, a, *opts.values()), lambda nm: self.sched.depthwise(
                C.depthwise(nm, xs, a.kernel, a.stride, a.dilation, **opts), self.policy, self.parallel))
            self.call(k, (buf, xs), (wbuf, (kh, kw, O)), *extra, (obuf, out))
            return
        I, K = N * Ho * Wo, kh * kw * Cin
        Ip = ch.gemm_shape(self.policy, False)[0]  # pixels padded to whole register tiles (a guarded tail is slow)
        tiles = self.policy.gemm_tiles(Ip, O, K)
        if Ip > I:
            self.p.buffers[obuf] = Ip * O
        wbuf = self.const_layout(ch.weight, (2, 3, 1, 0), (1, K, O, tiles.jt))
        extra = [(b, (1, I, O)) if len(s) == 4 else (b, s) for b, s in extra]  # the residual as C is
        k = self.kernel(("conv", xs, O, a, Ip, tiles, *opts.values()), lambda nm: self.sched.gemm(
            C.conv(nm, xs, O, a.kernel, a.stride, a.dilation, tiles.jt, rows=Ip, **opts), tiles, self.policy,
            self.parallel))
        self.call(k, (buf, xs), (wbuf, (1, O // tiles.jt, K, tiles.jt)), *extra, (obuf, (1, Ip, O)))

    def op_layer_norm(self, n: Node) -> None:
        x, g, b = n.inputs
        k = self.kernel(("layer_norm", x.shape, n.attrs),
                        lambda nm: self.flat(C.layer_norm(nm, x.shape, n.attrs.axes, n.attrs.eps)))
        self.call(k, self.view(x), self.view(g), self.view(b), self._fresh(n))

    def op_softmax(self, n: Node) -> None:
        x = n.inputs[0]
        a = n.attrs
        rows = hasattr(self.sched, "softmax") and len(x.shape) >= 2 and a.axis == len(x.shape) - 1
        k = self.kernel(("softmax", x.shape, a.axis, a.causal), lambda nm: self.sched.softmax(
            C.softmax(nm, x.shape, a.axis, a.causal), self.policy, self.parallel) if rows else
            self.flat(C.softmax(nm, x.shape, a.axis, a.causal)))
        self.call(k, self.view(x), self._fresh(n))

    def op_take(self, n: Node) -> None:
        t, ids = n.inputs
        k = self.kernel(("take", t.shape, ids.shape), lambda nm: self.flat(C.take(nm, t.shape, ids.shape)))
        self.call(k, self.view(t), self.view(ids), self._fresh(n))

    def op_einsum(self, n: Node) -> None:
        a = n.attrs
        sizes = {c: s for t, v in zip(a.terms, n.inputs) for c, s in zip(t, v.shape)}
        ph = [self.phys(v, t) for t, v in zip(a.terms, n.inputs)]  # operands as stored: labels in buffer order
        terms = tuple(t for _, _, t in ph)
        tensors = [k for k, t in enumerate(terms) if t]
        scalars = [k for k, t in enumerate(terms) if not t]
        # every operand has exactly the output's labels (no diagonal, nothing summed): an elementwise product
        elementwise = bool(tensors) and all(len(terms[k]) == len(a.out) and set(terms[k]) == set(a.out)
                                            for k in tensors)
        if len(tensors) == 2 and not elementwise and self._gemm(n, terms, sizes, tensors, scalars):
            return
        out = a.out
        if elementwise and n.out.id not in self.in_order:  # write in the first operand's order: no transpose
            out = terms[tensors[0]]
            if _nonunit(out, sizes) != _nonunit(a.out, sizes):
                self.perm[n.out.id] = tuple(a.out.index(c) for c in out)
        shapes = [s for _, s, _ in ph]
        k = self.kernel(("einsum", terms, out, tuple(shapes), a.epilogue),
                        lambda nm: self.flat(C.einsum(nm, terms, out, shapes, a.epilogue)))
        self.call(k, *((b, s if t else (1,)) for b, s, t in ph), (self._fresh(n)[0], tuple(sizes[c] for c in out)))

    def _gemm(self, n: Node, terms: tuple[str, ...], sizes: dict[str, int], tensors: list[int],
              scalars: list[int]) -> bool:
        a = n.attrs
        t0, t1 = (terms[k] for k in tensors)
        if any(len(set(t)) != len(t) for t in (t0, t1)):
            return False  # a repeated label (diagonal): not a GEMM
        if any(c not in a.out and c not in other for t, other in ((t0, t1), (t1, t0)) for c in t):
            return False  # a label summed within one operand: not a GEMM

        def roles(ka: int, kb: int, src: str):
            ta, tb = terms[ka], terms[kb]
            va, vb = n.inputs[ka], n.inputs[kb]
            bl = "".join(c for c in a.out if c in ta and c in tb)
            il = "".join(c for c in a.out if c in ta and c not in tb)
            jl = "".join(c for c in a.out if c in tb and c not in ta)
            kl = "".join(c for c in src if c in ta and c in tb and c not in a.out)
            copies = 0  # elements a dynamic transpose has to move
            if va.id not in self.const_of and _nonunit(ta, sizes) != _nonunit(bl + il + kl, sizes):
                copies += va.size
            if vb.id not in self.const_of and _nonunit(tb, sizes) != _nonunit(bl + kl + jl, sizes):
                copies += vb.size
            if n.out.id in self.in_order and _nonunit(a.out, sizes) != _nonunit(bl + il + jl, sizes):
                copies += n.out.size
            t = self.policy.gemm_seconds(2 * math.prod(sizes.values()), math.prod(sizes[c] for c in jl), copies)
            return (t, vb.id not in self.const_of), (ka, kb, bl, il, jl, kl)

        # k order: that of a dynamic operand (a constant is laid out at load time), whichever copies less
        dyn = [terms[k] for k in tensors if n.inputs[k].id not in self.const_of] or [terms[tensors[0]]]
        ka, kb, bl, il, jl, kl = min((roles(*ab, src) for ab in (tensors, tensors[::-1]) for src in dyn),
                                     key=lambda r: r[0])[1]
        ta, tb = terms[ka], terms[kb]
        va, vb = n.inputs[ka], n.inputs[kb]
        (_, ashape_p, _), (_, bshape_p, _) = self.phys(va), self.phys(vb)
        size = lambda ls: math.prod(sizes[c] for c in ls)  # noqa: E731
        BT, I, J, Kd = size(bl), size(il), size(jl), size(kl)
        tiles = self.policy.gemm_tiles(I, J, Kd)
        if va.id in self.const_of or va.size > self.policy.strided_a_max or J > tiles.jt:
            abuf, a_axes, ashape = self.transpose_to(va, ta, bl + il + kl, sizes), None, (BT, I, Kd)
        else:  # read in place: each axis of A is a digit of the fused b, i or k index
            abuf, a_axes, ashape = self.buf[va.id], _axis_map(ta, (bl, il, kl), sizes), ashape_p
            if _nonunit(ta, sizes) == _nonunit(bl + il + kl, sizes):
                a_axes, ashape = None, (BT, I, Kd)
        k_sizes = tuple(sizes[c] for c in kl) if a_axes is not None else None
        packed = vb.id in self.const_of
        if packed:
            perm = tuple(tb.index(c) for c in bl + kl + jl)
            bbuf = self.const_layout(vb, perm, (BT, Kd, J, tiles.jt))
            bshape = (BT, J // tiles.jt, Kd, tiles.jt)
        elif J > tiles.jt and Kd * J >= self.policy.pack_b_min:  # a dynamic B: one gather kernel packs its panels
            packed, bshape = True, (BT, J // tiles.jt, Kd, tiles.jt)
            axes = _digits(tb, {"b": bl, "k": kl, "j": jl}, sizes)
            bbuf = self.new_buffer(vb.size, "pk")
            kp = self.kernel(("pack", bshape_p, axes, BT, Kd, J, tiles.jt),
                             lambda nm: self.sched.copy(C.pack_b(nm, bshape_p, axes, BT, Kd, J, tiles.jt), self.policy,
                                                        self.parallel))
            self.call(kp, (self.buf[vb.id], bshape_p), (bbuf, bshape))
        else:
            bbuf = self.transpose_to(vb, tb, bl + kl + jl, sizes)
            bshape = (BT, Kd, J)
        cbuf = self._fresh(n)[0]
        canon = bl + il + jl
        if _nonunit(a.out, sizes) != _nonunit(canon, sizes):  # stored in GEMM order: a permuted value
            self.perm[n.out.id] = tuple(a.out.index(c) for c in canon)
        key = ("gemm", BT, I, J, Kd, packed, tiles, len(scalars), a.epilogue, a_axes, k_sizes)
        k = self.kernel(key, lambda nm: self.sched.gemm(
            C.gemm(nm, BT, I, J, Kd, jt=tiles.jt if packed else None, n_scales=len(scalars), act=a.epilogue,
                   a_axes=a_axes, k_sizes=k_sizes), tiles, self.policy, self.parallel))
        self.call(k, (abuf, ashape), (bbuf, bshape), *((self.buf[n.inputs[s].id], (1,)) for s in scalars),
                  (cbuf, (BT, I, J)))
        return True


def _digits(term: str, groups: dict[str, str], sizes: dict[str, int]) -> tuple:
    """Per label of `term`: (group, divisor, size), the label's index being (fused group index // divisor) % size."""
    out = []
    for c in term:
        g, ls = next((g, ls) for g, ls in groups.items() if c in ls)
        out.append((g, math.prod(sizes[x] for x in ls[ls.index(c) + 1:]), sizes[c]))
    return tuple(out)


def _axis_map(term: str, groups: tuple[str, str, str], sizes: dict[str, int]) -> tuple:
    """`_digits` for a GEMM's A, except that a reduction label is ("k", its position in kl, size): the GEMM
    keeps one reduction axis per label."""
    bl, il, kl = groups
    return tuple(("k", kl.index(c), n) if g == "k" else (g, d, n)
                 for c, (g, d, n) in zip(term, _digits(term, {"b": bl, "i": il, "k": kl}, sizes)))


def lower(g: Graph, prefix: str, target: Target, policy: CPUPolicy) -> tuple[Program, dict]:
    """(program, {kernel name: PrimFunc}) for graph `g` on `target`; kernel names start with `prefix`."""
    unknown = [n for n in g.nodes if not hasattr(Lowerer, "op_" + n.op.value)]
    if unknown:
        n = unknown[0]
        raise ConfigError(f"the tvm backend cannot lower op {n.op.value} (node %{n.out.id} at {n.path})")
    lw = Lowerer(prefix, target, policy)
    prog = lw.lower(g)
    # a constant only ever used in another layout needs no plain copy (W at materialize would be there twice)
    used = {b for c in prog.calls for b, _ in c["args"]} | {b for _, b, _ in prog.outputs}
    drop = {c["buffer"] for c in prog.consts if c["buffer"] not in used}
    prog.consts = [c for c in prog.consts if c["buffer"] not in drop]
    prog.buffers = {k: v for k, v in prog.buffers.items() if k not in drop}
    prog.arena = plan_arena(prog, lw.inplace)
    prog.check()
    return prog, lw.funcs


def gemm_shapes(g: Graph, target: Target, policy: CPUPolicy) -> list[tuple[int, int, int]]:
    """The (I, J, K) of every GEMM kernel the lowering of `g` makes (the shapes whose tiles a tuner times)."""
    lw = Lowerer("probe", target, policy)
    lw.lower(g)
    return sorted({(k[2], k[3], k[4]) for k in lw._keys if k[0] == "gemm"})
