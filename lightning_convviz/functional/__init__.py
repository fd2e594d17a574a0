"""Pure-torch core of lightning_convviz: tensors and modules in, tensors out.

The t-SNE helpers (NumPy, openTSNE) live in :mod:`lightning_convviz.functional.embedding`.
Nothing here needs Lightning or a logger, so every diagnostic can be called from a notebook.
"""

from lightning_convviz.functional.activity import (
    channel_positive_counts,
    dead_channels,
    dead_fraction,
    sparsity,
)
from lightning_convviz.functional.adversarial import (
    FoolingResult,
    fgsm,
    fgsm_direction,
    fooling_image,
    min_fooling_epsilon,
)
from lightning_convviz.functional.attributes import (
    BUILTIN_ATTRIBUTES,
    BinnedPerformance,
    binned_performance,
    brightness,
    contrast,
    foreground_fraction,
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
from lightning_convviz.functional.guard import eager_forward, grad_enabled, preserved_state
from lightning_convviz.functional.inversion import Inversion, class_model, invert, total_variation
from lightning_convviz.functional.occlusion import (
    OcclusionScores,
    occluded_score_map,
    occlusion,
    occlusion_scores,
    window_starts,
)
from lightning_convviz.functional.receptive_field import (
    ReceptiveField,
    crop_receptive_field,
    receptive_field,
)
from lightning_convviz.functional.relu_override import modified_relu_backward
from lightning_convviz.functional.topk import (
    ChannelMaxima,
    TopK,
    channel_maxima,
    take_slots,
    topk_merge,
    topk_update,
)

__all__ = [
    "ACTIVATION_TYPES",
    "BUILTIN_ATTRIBUTES",
    "BinnedPerformance",
    "ChannelMaxima",
    "FoolingResult",
    "GradCam",
    "Inversion",
    "LayerSpec",
    "OcclusionScores",
    "ReceptiveField",
    "TopK",
    "binned_performance",
    "brightness",
    "capture_activations",
    "channel_maxima",
    "channel_positive_counts",
    "class_model",
    "contrast",
    "conv_layers",
    "crop_receptive_field",
    "dead_channels",
    "dead_fraction",
    "deconvnet",
    "default_activation_layers",
    "eager_forward",
    "fgsm",
    "fgsm_direction",
    "filter_noise_score",
    "fooling_image",
    "foreground_fraction",
    "grad_cam",
    "grad_enabled",
    "guided_backprop",
    "hook_outputs",
    "invert",
    "is_conv",
    "min_fooling_epsilon",
    "modified_relu_backward",
    "occluded_score_map",
    "occlusion",
    "occlusion_scores",
    "preserved_state",
    "receptive_field",
    "relative_change",
    "resolve_layers",
    "resolve_single_layer",
    "saliency",
    "smoothgrad",
    "sparsity",
    "take_slots",
    "topk_merge",
    "topk_update",
    "total_variation",
    "window_starts",
]
