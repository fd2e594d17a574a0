"""What kind of layer a module is: convolution, normalisation, activation, linear.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from torch import nn

__all__ = ["ACTIVATION_TYPES", "NORM_TYPES", "is_classifier_layer", "is_conv", "is_linear"]

#: Activation modules that end a conv block.
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Softplus,
)

#: Normalisation modules, which may sit between a convolution and its activation.
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
)


def is_conv(module: nn.Module) -> bool:
    """Whether ``module`` is a convolution (``nn.Conv1d/2d/3d`` or a transposed one)."""
    return isinstance(module, nn.modules.conv._ConvNd)


def is_linear(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Linear`` (or a subclass, such as timm's ``Linear``)."""
    return isinstance(module, nn.Linear)


def is_classifier_layer(module: nn.Module) -> bool:
    """Whether ``module`` could be a classifier: a linear layer or a convolution."""
    return is_linear(module) or is_conv(module)
