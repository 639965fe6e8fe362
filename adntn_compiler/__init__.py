"""adntn-compiler: trace, optimise, compile and ship nonlinear tensor-network weight generators.

    import adntn_compiler as adntn
    gen = adntn.ttn((4096, 25088), rank=4, layout="interleaved", activation="tanh", seed=0)
    W = adntn.materialize(gen)
    layer = adntn.ADNTNLinear(gen, bias=True)

torch is imported only when a torch name (ADNTNLinear, ADNTNConv2d, compress, report, train, sensitivity) is used.
"""
from . import ir
from .errors import AdntnError, ConfigError, MemoryEstimateError, SerializationError, ShapeError, VerifyError
from .generators import ARCHS, Generator, attn, brickwall, cp, dense, lowrank, make, mera, tt, ttn, tucker
from .generators.search import config_for_ratio
from .artifact import Executable, load
from .compiler import compile
from .frontends.trace import materialize, trace
from .plan import Plan, plan
from .targets import Target, targets
from .tuning import Records, tune

__version__ = "0.1.0"

_TORCH_NAMES = {"ADNTNLinear", "ADNTNConv2d", "compress", "report", "Report", "save_model", "load_model"}


def __getattr__(name: str):
    if name == "train":  # adntn.train.distill / fit_outputs / ...: needs torch, so imported on first use
        import importlib

        return importlib.import_module(".train", __name__)
    if name == "sensitivity":
        from .sensitivities import sensitivity  # the module is not named sensitivity: it would shadow the function

        return sensitivity
    if name in ("save_model", "load_model"):
        from . import modelio

        return getattr(modelio, name)
    if name in _TORCH_NAMES:
        from . import nn

        return getattr(nn, name)
    raise AttributeError(f"module 'adntn_compiler' has no attribute {name!r}")


__all__ = [
    "ARCHS", "AdntnError", "Executable", "compile", "load", "ConfigError", "Generator", "MemoryEstimateError", "SerializationError", "ShapeError",
    "VerifyError", "attn", "brickwall", "config_for_ratio", "cp", "dense", "ir", "lowrank", "make", "materialize",
    "mera", "Plan", "plan", "Records", "Target", "targets", "trace", "tune", "tt", "ttn", "tucker", *sorted(_TORCH_NAMES),
]
