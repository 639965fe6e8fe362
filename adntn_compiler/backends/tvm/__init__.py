"""The TVM backend: every step of a graph becomes a scheduled TensorIR kernel; all kernels of a model go into
one library, and the call sequence is a JSON program run by `ProgramRunner` (numpy + the TVM runtime).

TVM is imported lazily: importing this package does not need it.
"""
from __future__ import annotations

from typing import Mapping

from ...ir.graph import Graph, Node
from .program import Program
from .targets import TARGETS, tvm_target, vector_lanes


def build(graphs: Mapping[str, Graph], target: str = "cpu", progress=None):
    """Lower and compile several graphs (e.g. {"load": ..., "call": ...}) into one library.
    Returns (runtime module, {graph name: Program})."""
    tgt = tvm_target(target)  # a clear error when TVM is missing
    import tvm

    from .lower import lower

    lanes = vector_lanes()
    funcs, programs = {}, {}
    for name, g in graphs.items():
        programs[name], fs = lower(g, name, lanes)
        funcs.update(fs)
        if progress:
            progress(f"lowered {name}: {len(fs)} kernels")
    mod = tvm.IRModule(funcs)
    ex = tvm.compile(mod, target=tgt)
    if progress:
        progress(f"compiled {len(funcs)} kernels")
    return ex, programs


class TVMBackend:
    name = "tvm"

    def unsupported(self, g: Graph) -> list[Node]:
        from .lower import Lowerer

        return [n for n in g.nodes if not hasattr(Lowerer, "op_" + n.op.value)]

    def compile(self, g: Graph, target: str = "cpu"):
        """A callable running `g` (params bound from g.tensors) on TVM kernels; float32."""
        from .runtime import ProgramRunner

        lib, progs = build({"main": g}, target)
        runner = ProgramRunner(lib, progs["main"], dict(g.tensors))
        names = [o for o, _, _ in progs["main"].outputs]
        return lambda *args: tuple(runner(*args)[n] for n in names)


__all__ = ["TARGETS", "TVMBackend", "Program", "build", "tvm_target"]
