"""torch modules: ADNTN layers (cores as nn.Parameters), their custom ops, and their compiled training step."""
from .layers import ADNTNConv2d, ADNTNLinear, layer_of, linear_op, weight_op

__all__ = ["ADNTNConv2d", "ADNTNLinear", "layer_of", "linear_op", "weight_op"]
