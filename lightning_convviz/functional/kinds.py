"""What kind of layer a module is: convolution, normalisation, activation, linear.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from torch import nn

__all__ = [
    "ACTIVATION_TYPES",
    "NORM_TYPES",
    "is_classifier_layer",
    "is_conv",
    "is_linear",
    "map_channel_dim",
    "same_map",
]

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


def map_channel_dim(module: nn.Module, shape: tuple[int, ...] | None) -> int | None:
    """Where the channels are in the feature map ``module`` produced (of ``shape``): 1 for a
    convolution (``N x C x H x W``), -1 for a linear layer applied to a channels-last map
    (``N x H x W x C``, ConvNeXt's and Swin's blocks); ``None`` when it made no 4-D map."""
    if shape is None or len(shape) != 4:
        return None
    if is_conv(module):
        return 1
    return -1 if is_linear(module) else None


def same_map(reference: tuple[int, ...], channel_dim: int, shape: tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` is a map of the same size and layout as ``reference``
    (whose channels are at ``channel_dim``); the number of channels may differ."""
    if len(shape) != len(reference):
        return False
    if channel_dim == 1:
        return shape[2:] == reference[2:]
    return shape[1:-1] == reference[1:-1]
