"""Pure-torch core of lightning_convviz: tensors and modules in, tensors out.

Nothing here needs Lightning or a logger, so every diagnostic can be called from a notebook.
"""

from lightning_convviz.functional.activity import (
    channel_positive_counts,
    dead_channels,
    dead_fraction,
    sparsity,
)
from lightning_convviz.functional.attribution import (
    GradCam,
    deconvnet,
    grad_cam,
    guided_backprop,
    saliency,
    smoothgrad,
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
    resolve_single_layer,
)
from lightning_convviz.functional.filters import filter_noise_score, relative_change
from lightning_convviz.functional.guard import grad_enabled, preserved_state
from lightning_convviz.functional.occlusion import (
    OcclusionScores,
    occluded_score_map,
    occlusion,
    occlusion_scores,
    window_starts,
)
from lightning_convviz.functional.relu_override import modified_relu_backward

__all__ = [
    "ACTIVATION_TYPES",
    "GradCam",
    "LayerSpec",
    "OcclusionScores",
    "capture_activations",
    "channel_positive_counts",
    "conv_layers",
    "dead_channels",
    "dead_fraction",
    "deconvnet",
    "default_activation_layers",
    "filter_noise_score",
    "grad_cam",
    "grad_enabled",
    "guided_backprop",
    "hook_outputs",
    "is_conv",
    "modified_relu_backward",
    "occluded_score_map",
    "occlusion",
    "occlusion_scores",
    "preserved_state",
    "relative_change",
    "resolve_layers",
    "resolve_single_layer",
    "saliency",
    "smoothgrad",
    "sparsity",
    "window_starts",
]
