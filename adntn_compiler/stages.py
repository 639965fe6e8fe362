"""The compile driver in stages that are values (JAX's Traced -> Lowered -> Compiled; TVM's from_fx -> build):

    captured = adntn.capture(model, example_inputs=(x,))   # torch.export, once (a generator is kept as it is)
    planned = captured.plan("cpu", schedule="auto", memory_budget=None, records="auto")
    built = planned.build()                                 # an Executable (a Bundle for an embedded target)

`compile` is their composition. A stage can be repeated from the value before it: planning a Captured again
(another target, schedule, budget or records: the board-budget loop, the tuner) never captures the model again.
The target is resolved once, at `plan`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Callable

from .errors import ConfigError
from .frontends.capture import capture as capture_source
from .frontends.capture import model_graphs
from .frontends.torch_modules import ModelGraphs
from .generators.base import Generator
from .runtime.artifact import Executable
from .runtime.bundle import BundlePlan, plan_bundle
from .targets import Target, resolve
from .tuning import Applied, applied

Say = Callable[[str], None]


def _quiet(msg: str) -> None:
    pass


def _batch(example_inputs, batch_size: int) -> int:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if example_inputs is not None:
        x = example_inputs[0] if isinstance(example_inputs, (tuple, list)) and example_inputs else example_inputs
        if hasattr(x, "shape") and len(x.shape):
            return int(x.shape[0])
    return batch_size


def _check_budgets(target: Target, ram_bytes, flash_bytes) -> None:
    if target.runtime != "c-bundle" and (ram_bytes is not None or flash_bytes is not None):
        raise ConfigError(f"ram_bytes/flash_bytes are board budgets of the embedded targets (arm64, cortex-m4, "
                          f"cortex-m7); target {target.name!r} takes memory_budget")


@dataclass(frozen=True)
class Captured:
    """A generator, or a torch model captured by torch.export (`source`), at a batch size."""
    source: Any  # Generator | frontends.export.Captured
    batch_size: int
    input_shape: tuple[int, ...] | None = None

    def plan(self, target: "str | Target" = "cpu", schedule: str = "auto", memory_budget: int | None = None,
             records: Any = "auto", policy=None, ram_bytes=None, flash_bytes=None,
             say: Say = _quiet) -> "Planned | BundlePlan":
        """Each ADNTN layer planned for `target` (the tuning `records`' choice where they have one, else the cost
        model's), the rest converted to IR. Embedded targets give a BundlePlan: the first schedule whose memory
        fits the board's `ram_bytes` / `flash_bytes`, lowered with `policy`."""
        target = resolve(target)  # an unknown target fails before any work
        tuned = applied(records, target, schedule, memory_budget)
        if target.runtime == "c-bundle":
            return plan_bundle(self.source, target, self.batch_size, schedule, memory_budget, self.input_shape,
                               policy, ram_bytes, flash_bytes, say, tuned=tuned)
        _check_budgets(target, ram_bytes, flash_bytes)
        say("planning")
        mg = model_graphs(self.source, self.batch_size, schedule, memory_budget, self.input_shape, target,
                          planner=tuned.planner if tuned else None)
        return Planned(mg, target, schedule, self.batch_size, tuned, policy)


@dataclass(frozen=True)
class Planned:
    """The model's `load` and `call` graphs for a target, every layer planned; `build` lowers and compiles them."""
    graphs: ModelGraphs
    target: Target
    schedule: str
    batch_size: int
    tuned: Applied | None = None
    policy: Any = None  # the kernel policy build() uses when given none (None: the target's default)

    def build(self, policy=None, say: Say = _quiet) -> Executable:
        """Lower both graphs with the target's schedules and `policy` (tiles, thresholds; the tuning records'
        tiles added to it), compile them into one library and load it."""
        from .backends import get_backend
        from .backends.tvm.policy import default_policy

        policy = policy or self.policy
        if self.tuned:
            policy = self.tuned.policy(policy or default_policy(self.target))
            for note in self.tuned.notes:
                warnings.warn(note, stacklevel=3)
        say("lowering and compiling")
        mg = self.graphs
        lib = get_backend(self.target.runtime).build({"load": mg.load, "call": mg.call}, self.target, policy)
        say("loading")
        return Executable.from_build(lib, mg, self.batch_size, self.schedule,
                                     self.tuned.manifest() if self.tuned else None)


def capture(obj, example_inputs=None, batch_size: int = 1, input_shape: tuple[int, ...] | None = None) -> Captured:
    """A generator, an ADNTN layer or a whole torch model, captured once: by torch.export on `example_inputs=(x,)`
    or `(ids, mask, ...)` (the first axis of each is the compiled batch), or on zeros of (batch_size,
    *input_shape). A Captured is returned as is."""
    if isinstance(obj, Captured):
        return obj
    batch_size = _batch(example_inputs, batch_size)
    shape = tuple(int(s) for s in input_shape) if input_shape is not None else None
    source = capture_source(obj, batch_size, shape, example_inputs)
    return Captured(source, batch_size, shape if isinstance(source, Generator) else None)


def compile(obj, target: "str | Target" = "cpu", batch_size: int = 1, schedule: str = "auto",
            memory_budget: int | None = None, input_shape: tuple[int, ...] | None = None,
            progress: bool | Say = False, policy=None, example_inputs=None, ram_bytes=None, flash_bytes=None,
            records="auto"):
    """Compile a generator, an ADNTN layer or a whole (compressed) torch model for `target` (a name from
    `adntn.targets()` or a Target): `capture(...).plan(...).build(...)`. A model is captured by torch.export on
    `example_inputs=(x,)` or several tensors (float or integer: token ids, masks; the first axis of each is the
    compiled batch), or on zeros of (batch_size, *input_shape). `policy` replaces the target's default kernel
    policy (tiles, thresholds). Returns an `Executable`: call it on numpy arrays of the inputs' shapes (it
    returns an array, or a tuple for several outputs); `save` it to an artifact. Embedded targets (arm64,
    cortex-m4, cortex-m7) give a `Bundle` (runtime-free C) instead, fitted to the board's `ram_bytes` and
    `flash_bytes` when given. `records`: tuning records (`adntn.tune`): "auto" uses this device's from the user
    cache, a Records or a records file those (never records of another device: a warning, then the defaults),
    None none."""
    from tqdm import tqdm

    target = resolve(target)  # an unknown target fails before any work
    _batch(example_inputs, batch_size)
    _check_budgets(target, ram_bytes, flash_bytes)  # before the model is captured
    with tqdm(total=3, desc="adntn compile", disable=progress is False, leave=False) as bar:
        say = progress if callable(progress) else (lambda msg: bar.set_postfix_str(msg))
        say("capturing")
        captured = capture(obj, example_inputs, batch_size, input_shape)
        bar.update()
        planned = captured.plan(target, schedule, memory_budget, records, policy, ram_bytes, flash_bytes, say)
        bar.update()
        built = planned.build(say=say)
        bar.update()
        return built
