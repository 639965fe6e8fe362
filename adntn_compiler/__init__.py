"""adntn-compiler: trace, optimise, compile and ship nonlinear tensor-network weight generators.

    import adntn_compiler as adntn
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
    W = adntn.materialize(gen)
    layer = adntn.ADNTNLinear(gen, bias=True)

The stages: `adntn.capture(model) -> .plan(target) -> .build()`; `adntn.compile` is their composition.
torch is imported only when a torch name (ADNTNLinear, ADNTNConv2d, compress, report, train, sensitivity, ...)
is used. The package's layers are in docs/architecture.md.
"""
from . import ir
from .errors import AdntnError, ConfigError, MemoryEstimateError, SerializationError, ShapeError, VerifyError
from .generators import ARCHS, Generator, attn, brickwall, cp, dense, lowrank, make, mera, tt, ttn, tucker
from .generators.search import config_for_ratio
from .generators.trace import activation_usage, materialize, trace
from .plan import Plan, plan
from .runtime.artifact import Executable, load
from .settings import VERSION
from .stages import capture, compile
from .targets import Target, targets
from .tuning import Records, tune

__version__ = VERSION

# torch names, imported on first use: name -> module that defines it
_LAZY = {"ADNTNLinear": "nn.layers", "ADNTNConv2d": "nn.layers", "compress": "training.compress",
         "report": "training.compress", "Report": "training.compress", "save_model": "training.modelio",
         "load_model": "training.modelio", "sensitivity": "training.sensitivity"}
# modules that moved when the package was laid out by role: adntn.<old name> still reaches them
_MOVED = {"models": "apps.models", "craft": "apps.craft", "artifact": "runtime.artifact", "bundle": "runtime.bundle",
          "modelio": "training.modelio", "torch_backend": "dynamo", "sensitivities": "training.sensitivity"}


def __getattr__(name: str):
    import importlib

    if name in ("train", "data"):  # adntn.train.distill / adntn.data.fashion_mnist ...: modules, need torch
        return importlib.import_module(f".training.{name}", __name__)
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _MOVED:
        return importlib.import_module(f".{_MOVED[name]}", __name__)
    raise AttributeError(f"module 'adntn_compiler' has no attribute {name!r}")


__all__ = [
    "ARCHS", "AdntnError", "ConfigError", "Executable", "Generator", "MemoryEstimateError", "Plan", "Records",
    "SerializationError", "ShapeError", "Target", "VerifyError", "activation_usage", "attn", "brickwall", "capture",
    "compile", "config_for_ratio", "cp", "dense", "ir", "load", "lowrank", "make", "materialize", "mera", "plan",
    "targets", "trace", "tt", "ttn", "tucker", "tune", *sorted(_LAZY),
]
