"""Error types. Every message names what is wrong: the node, the shapes, the option."""


class AdntnError(ValueError):
    """Base class of every error this package raises for bad input."""


class ConfigError(AdntnError):
    """An unknown architecture, layout, activation or option, or an invalid value for one."""


class ShapeError(AdntnError):
    """A shape that cannot be tensorised, or shapes that do not match."""


class MemoryEstimateError(AdntnError, MemoryError):
    """A program whose estimated memory would not fit; raised before anything is allocated."""


class VerifyError(AdntnError):
    """An IR graph that breaks an invariant (SSA, order, shape rules)."""


class SerializationError(AdntnError):
    """A graph or file that cannot be decoded."""
