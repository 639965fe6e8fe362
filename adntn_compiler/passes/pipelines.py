"""Every named pass pipeline in one place. A pipeline is a readable list of pure `Graph -> Graph` passes;
`optimize` runs one, with `verify` after each pass in debug runs, and names the pass that failed."""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Sequence, cast

from ..errors import AdntnError, VerifyError
from ..ir.graph import Graph
from ..ir.verify import verify
from .batch import batch
from .fuse import fuse
from .order import Objective, order
from .segment import segment
from .tile import tile

Pass = Callable[[Graph], Graph]


class PassError(AdntnError):
    pass


def pass_name(p: Pass) -> str:
    if isinstance(p, partial):
        args = ", ".join(f"{k}={v!r}" for k, v in p.keywords.items())
        return f"{pass_name(p.func)}({args})"
    return getattr(p, "__name__", repr(p))


@dataclass(frozen=True)
class Pipeline:
    name: str
    passes: tuple[Pass, ...]

    def __call__(self, g: Graph, check: bool = __debug__) -> Graph:
        return optimize(g, self.passes, check, self.name)

    def __str__(self) -> str:
        return f"{self.name}: {' -> '.join(pass_name(p) for p in self.passes)}"


def optimize(g: Graph, passes: Sequence[Pass] = (segment, order), check: bool = __debug__,
             pipeline: str = "") -> Graph:
    where = f" (pipeline {pipeline})" if pipeline else ""
    for i, p in enumerate(passes):
        before = [pass_name(q) for q in passes[:i]]
        try:
            g = p(g)
        except AdntnError:
            raise
        except Exception as e:
            raise PassError(f"pass {pass_name(p)}{where} failed after {before}: {type(e).__name__}: {e}") from e
        if check:
            try:
                verify(g)
            except VerifyError as e:
                raise VerifyError(f"verify failed after pass {pass_name(p)}{where}: {e}") from None
    return g


def plan_pipeline(schedule: str, objective: str, target_size: int | None = None, share: bool = True,
                  tree: int = 0) -> Pipeline:
    """One layer's execution plan (before `fold`): linear chains merged (W kept formed for `materialize`),
    tiled for `stream`, contraction order by `objective` (the `tree`-th best candidate), activations/scales
    fused, equal steps batched."""
    passes: list[Pass] = [partial(segment, keep_constant=schedule == "materialize")]
    if target_size is not None:
        rc = schedule == "recompute"
        passes.append(partial(tile, target_size=target_size, recompute=rc, share=share) if rc else
                      partial(tile, target_size=target_size, recompute=rc))
    # batching stacks the per-tile slices of the generated tensors back into whole ones: not for recompute
    tail = (fuse,) if schedule == "recompute" else (fuse, batch)
    obj = cast(Objective, objective)  # "call" or "total" (a plan's or tuning record's choice)
    ordering = partial(order, objective=obj, tree=tree) if tree else partial(order, objective=obj)
    return Pipeline(f"plan[{schedule}]", (*passes, ordering, *tail))


# Cores change while training, so nothing is folded; the order minimises all flops per step.
TORCH_LAYER = Pipeline("torch-layer", (segment, order, fuse, batch))
# A training step's autodiff graph, for its costs (`adntn explain --backward`).
TRAINING_COSTS = Pipeline("training-costs", (segment, order, fuse))
# The compiled training step: the layer before autodiff (the scale stays a separate product, so its gradient
# is <ct, unscaled y>), then the forward and backward halves after the split (a VJP may have 3 operands).
TRAIN_LAYER = Pipeline("train-layer", (segment, order, partial(fuse, scalars=False)))
TRAIN_FORWARD = Pipeline("train-forward", (fuse,))
TRAIN_BACKWARD = Pipeline("train-backward", (order, fuse))
