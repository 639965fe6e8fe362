"""`compile`: a generator, an ADNTN layer or a whole compressed model -> an executable for a Target.

The frontend (`frontends/torch_modules.py`) makes the model's `load` and `call` graphs; the backend named by
the registry lowers both into one library with the Target's schedules and a policy; `Executable` runs it.
"""
from __future__ import annotations

import warnings
from typing import Callable

from .errors import ConfigError
from .targets import Target, resolve
from .tuning import applied


def compile(obj, target: "str | Target" = "cpu", batch_size: int = 1, schedule: str = "auto",
            memory_budget: int | None = None, input_shape: tuple[int, ...] | None = None,
            progress: bool | Callable[[str], None] = False, policy=None, example_inputs=None,
            ram_bytes=None, flash_bytes=None, records="auto"):
    """Compile a generator, an ADNTN layer or a whole (compressed) torch model for `target` (a name from
    `adntn.targets()` or a Target). A model is captured by torch.export on `example_inputs=(x,)` (whose batch
    is the compiled one), or on zeros of (batch_size, *input_shape). `policy` replaces the target's default
    kernel policy (tiles, thresholds). Returns an `Executable`: call it on a numpy array of the input's shape;
    `save` it to an artifact. Embedded targets (arm64, cortex-m4, cortex-m7) give a `Bundle` (runtime-free C)
    instead, fitted to the board's `ram_bytes` and `flash_bytes` when given. `records`: tuning records
    (`adntn.tune`): "auto" uses this device's from the user cache, a Records or a records file those (never
    records of another device: a warning, then the defaults), None none."""
    from tqdm import tqdm

    from .artifact import Executable
    from .backends import get_backend
    from .frontends.torch_modules import model_graphs

    target = resolve(target)  # an unknown target fails before any work
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if target.runtime == "c-bundle":
        from .bundle import compile_bundle

        with tqdm(total=None, desc="adntn compile", disable=progress is False, leave=False) as bar:
            say = progress if callable(progress) else (lambda msg: bar.set_postfix_str(msg))
            return compile_bundle(obj, target, batch_size, schedule, memory_budget, input_shape, example_inputs,
                                  policy, ram_bytes, flash_bytes, say)
    if ram_bytes is not None or flash_bytes is not None:
        raise ConfigError(f"ram_bytes/flash_bytes are board budgets of the embedded targets (arm64, cortex-m4, "
                          f"cortex-m7); target {target.name!r} takes memory_budget")
    bar = tqdm(total=3, desc="adntn compile", disable=progress is False, leave=False)
    say = progress if callable(progress) else (lambda msg: bar.set_postfix_str(msg))
    say("planning")
    if example_inputs is not None:
        x = example_inputs[0] if isinstance(example_inputs, (tuple, list)) and example_inputs else example_inputs
        batch_size = int(x.shape[0]) if hasattr(x, "shape") and len(x.shape) else batch_size
    tuned = applied(records, target, schedule, memory_budget)
    mg = model_graphs(obj, batch_size, schedule, memory_budget, input_shape, target, example_inputs,
                      tuned.planner if tuned else None)
    if tuned:
        from .backends.tvm.policy import default_policy

        policy = tuned.policy(policy or default_policy(target))
        for note in tuned.notes:
            warnings.warn(note, stacklevel=2)
    bar.update()
    say("lowering and compiling")
    lib = get_backend(target.runtime).build({"load": mg.load, "call": mg.call}, target, policy)
    bar.update()
    say("loading")
    exe = Executable.from_build(lib, mg, batch_size, schedule, tuned.manifest() if tuned else None)
    bar.update()
    bar.close()
    return exe
