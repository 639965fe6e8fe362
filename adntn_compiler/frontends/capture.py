"""A generator or a torch model, captured once (`capture`), and its load and call graphs (`model_graphs`)."""
from __future__ import annotations

from ..errors import ConfigError
from ..generators.base import Generator
from .export import Captured, capture_module
from .torch_modules import ModelGraphs, _ModelBuilder


def model_graphs(obj, batch_size: int = 1, schedule: str = "auto", memory_budget: int | None = None,
                 input_shape: tuple[int, ...] | None = None, target=None, example_inputs=None,
                 planner=None) -> ModelGraphs:
    """The load and call graphs of a generator or of a torch model (any nn.Module, captured by torch.export on
    `example_inputs`, or on zeros of shape (batch_size, *input_shape); for a model whose first layer is a
    Linear or ADNTNLinear the input shape is that layer's), or of a model `capture` returned. `target` (a Target)
    gives the plans their cost model and dtype; None: the plan's defaults. `planner`: see _ModelBuilder."""
    obj = capture(obj, batch_size, input_shape, example_inputs)
    if isinstance(obj, Generator):
        mb = _ModelBuilder(batch_size, schedule, memory_budget, target, planner)
        mb.start(tuple(input_shape) if input_shape is not None else (obj.I,))
        mb.generator(obj, obj.cores, None, "layer")
        return mb.finish()
    return obj.graphs(schedule, memory_budget, target, planner)


def capture(obj, batch_size: int = 1, input_shape: tuple[int, ...] | None = None, example_inputs=None):
    """A torch model (or a conv2d generator, as a convolution) captured by torch.export once: an
    `export.Captured` that model_graphs plans as often as a caller needs (the board-budget loop) without
    exporting again. A linear generator, or a model captured already, is returned as it is."""
    if isinstance(obj, Generator) and obj.kind == "conv2d":  # a conv layer of it (stride 1, no padding, no bias)
        if example_inputs is None and (input_shape is None or len(input_shape) != 3 or input_shape[0] != obj.shape[1]):
            raise ConfigError(f"a conv2d generator {obj.shape} compiles as a convolution: give input_shape=("
                              f"{obj.shape[1]}, H, W), got {input_shape!r}")
        from ..nn.layers import ADNTNConv2d

        obj = ADNTNConv2d(obj, bias=False).eval()
    elif isinstance(obj, (Generator, Captured)):
        return obj
    try:
        import torch
        from torch import nn
    except ImportError:  # without torch, only generators exist
        raise ConfigError(f"cannot compile a {type(obj).__name__}: expected a generator or a torch model") from None
    if not isinstance(obj, nn.Module):
        raise ConfigError(f"cannot compile a {type(obj).__name__}: expected a generator or a torch model")
    if example_inputs is not None:
        xs = tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)
        if not xs or not all(isinstance(v, torch.Tensor) for v in xs):
            raise ConfigError(f"example_inputs must be a tuple of tensors (one per model argument); got "
                              f"({', '.join(type(v).__name__ for v in xs)})")
    else:
        xs = (torch.zeros((batch_size, *_input_shape(obj, input_shape)), dtype=torch.float32),)
    return capture_module(obj, xs)


def _input_shape(model, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        return tuple(int(s) for s in input_shape)
    from torch import nn

    from ..nn.layers import ADNTNLinear, _ADNTNBase

    first = next((m for m in model.modules() if isinstance(m, _ADNTNBase) or
                  (not isinstance(m, nn.ParameterDict) and any(True for _ in m.parameters(recurse=False)))), None)
    if isinstance(first, (nn.Linear, ADNTNLinear)):
        return (first.in_features,)
    raise ConfigError(f"cannot tell the input shape of {type(model).__name__} (its first layer is "
                      f"{type(first).__name__}); pass example_inputs=(x,) or input_shape=(C, H, W)")
