"""The compiled training step of a layer (a driver over the backend): the autodiff graph of the optimised layer
program (or of the weight program, for conv layers), split into a forward program (y and the values the
backward pass reads) and a backward program (gradients of x and of every core), built into one library.
numpy in and out; `nn.ADNTNLinear(backend="tvm")` and `nn.ADNTNConv2d(backend="tvm")` wrap it in a
torch.autograd.Function."""
from __future__ import annotations

import weakref
from typing import Mapping

import numpy as np

from ..backends import get_backend
from ..generators.base import Generator
from ..generators.trace import trace
from ..passes.autodiff import autodiff, split_training
from ..passes.pipelines import TRAIN_BACKWARD, TRAIN_FORWARD, TRAIN_LAYER
from ..targets import Target


class CompiledTraining:
    def __init__(self, gen: Generator, batch_size: int, cores: Mapping[str, np.ndarray],
                 target: "str | Target" = "cpu", input_grad: bool = True, program: str = "layer",
                 backend: str = "tvm", policy=None):
        """`input_grad=False` leaves out grad.x (as torch does for an input that needs no gradient): the
        backward program is then one contraction and its copies shorter. program="weight": the generated
        weight (no input x; output "W"), e.g. for a conv layer whose convolution stays in torch."""
        g = TRAIN_LAYER(trace(gen, program, batch_size=batch_size, structure_only=True))
        self.out = "y" if program == "layer" else "W"
        fwd, bwd = split_training(autodiff(g, inputs=input_grad and program == "layer"))
        fwd, bwd = TRAIN_FORWARD(fwd), TRAIN_BACKWARD(bwd)
        self.graphs = {"fwd": fwd, "bwd": bwd}
        lib = get_backend(backend).build(self.graphs, target, policy)
        progs = lib.programs
        self.fwd = lib.runner("fwd", {**fwd.tensors, **cores})
        self.saved = [n for n, _, _ in progs["fwd"].outputs if n.startswith("saved.")]
        # The backward program reads the saved values straight from the forward program's output buffers.
        bin_ = {n: b for n, b, _ in progs["bwd"].inputs}
        shared = {bin_[n]: self.fwd.output_buffer(n)[1] for n in self.saved}
        self.bwd = lib.runner("bwd", {**bwd.tensors, **cores}, buffers=shared)
        self.grads = [n for n, _, _ in progs["bwd"].outputs]
        self._live: weakref.ref | None = None  # the Saved whose values are still in the shared buffers

    def forward(self, x: np.ndarray | None, cores: Mapping[str, np.ndarray]) -> tuple[np.ndarray, "Saved"]:
        """y (or W: x is None), and a handle on the values the backward pass needs."""
        prev = self._live() if self._live else None
        if prev is not None and prev.arrays is None:  # its backward has not run yet: copy its values out
            prev.arrays = [self.fwd.output_buffer(n)[1].copy() for n in self.saved]
        self.fwd.update(cores)
        out = self.fwd.run_in_place(*(() if x is None else (x,)))
        saved = Saved()
        self._live = weakref.ref(saved)
        return out[self.out].copy(), saved

    def backward(self, ct: np.ndarray, saved: "Saved", cores: Mapping[str, np.ndarray]) -> dict:
        """{"grad.x": ... (unless input_grad=False), "grad.<core>": ...} for the cotangent `ct` of y (or W)."""
        self.bwd.update(cores)
        if saved.arrays is None:  # still in the shared buffers
            args = {f"ct.{self.out}": ct, **dict.fromkeys(self.saved)}
        else:
            shapes = {n: tuple(s) for n, _, s in self.bwd.program.inputs}
            args = {f"ct.{self.out}": ct, **{n: a.reshape(shapes[n]) for n, a in zip(self.saved, saved.arrays)}}
        return self.bwd(*(args[n] for n in self.bwd.input_names))


class Saved:
    """What a forward call leaves for its backward: nothing while the values sit in the shared buffers;
    a private copy once another forward call is about to overwrite them."""

    __slots__ = ("arrays", "__weakref__")

    def __init__(self):
        self.arrays: list[np.ndarray] | None = None
