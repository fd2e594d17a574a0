"""Pure-torch core of lightning_convviz: tensors and modules in, tensors out.

Nothing here needs Lightning or a logger, so every diagnostic can be called from a notebook.
"""

from lightning_convviz.functional.activity import (
    channel_positive_counts,
    dead_channels,
    dead_fraction,
    sparsity,
)
from lightning_convviz.functional.capture import (
    ACTIVATION_TYPES,
    LayerSpec,
    capture_activations,
    conv_layers,
    default_activation_layers,
    hook_outputs,
    is_conv,
    resolve_layers,
)
from lightning_convviz.functional.filters import filter_noise_score, relative_change
from lightning_convviz.functional.guard import grad_enabled, preserved_state

__all__ = [
    "ACTIVATION_TYPES",
    "LayerSpec",
    "capture_activations",
    "channel_positive_counts",
    "conv_layers",
    "dead_channels",
    "dead_fraction",
    "default_activation_layers",
    "filter_noise_score",
    "grad_enabled",
    "hook_outputs",
    "is_conv",
    "preserved_state",
    "relative_change",
    "resolve_layers",
    "sparsity",
]
