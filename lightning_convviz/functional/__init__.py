"""Pure-torch core of lightning_convviz: tensors and modules in, tensors out.

The t-SNE helpers (NumPy, openTSNE) live in :mod:`lightning_convviz.functional.embedding`.
Nothing here needs Lightning or a logger, so every diagnostic can be called from a notebook.
"""

from lightning_convviz.functional.activity import (
    accumulate_positive_counts,
    channel_positive_counts,
    channel_positive_presence,
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
    is_conv,
    resolve_layers,
    resolve_single_layer,
    resolve_single_site,
)
from lightning_convviz.functional.defaults import (
    ACTIVATION_SITES,
    CLASSIFIER,
    FEATURE_CONVOLUTIONS,
    Survey,
    classifier_call,
    feature_convolutions,
    survey,
)
from lightning_convviz.functional.filters import filter_noise_score, relative_change
from lightning_convviz.functional.guard import eager_forward, grad_enabled, preserved_state
from lightning_convviz.functional.inversion import (
    Inversion,
    class_model,
    invert,
    invert_codes,
    total_variation,
)
from lightning_convviz.functional.loss_tally import LossTally
from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    Finding,
    Judgement,
    JudgementRules,
    StepSignals,
    cockpit_alpha,
    judge_learning_rate,
)
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
    receptive_fields,
)
from lightning_convviz.functional.relu_override import modified_relu_backward
from lightning_convviz.functional.sampling import (
    Reservoir,
    dataset_labels,
    is_indexable,
    spread_indices,
)
from lightning_convviz.functional.sites import (
    SITE_SEPARATOR,
    CallSites,
    ModuleCall,
    Site,
    SiteRule,
    site_name,
    split_selector,
)
from lightning_convviz.functional.topk import (
    ChannelMaxima,
    TopK,
    channel_maxima,
    take_slots,
    topk_merge,
    topk_update,
)

__all__ = [
    "ACTIVATION_SITES",
    "ACTIVATION_TYPES",
    "BUILTIN_ATTRIBUTES",
    "CLASSIFIER",
    "FEATURE_CONVOLUTIONS",
    "SITE_SEPARATOR",
    "BinnedPerformance",
    "CallSites",
    "ChannelMaxima",
    "EpochSignals",
    "Finding",
    "FoolingResult",
    "GradCam",
    "Inversion",
    "Judgement",
    "JudgementRules",
    "LayerSpec",
    "LossTally",
    "ModuleCall",
    "OcclusionScores",
    "ReceptiveField",
    "Reservoir",
    "Site",
    "SiteRule",
    "StepSignals",
    "Survey",
    "TopK",
    "accumulate_positive_counts",
    "binned_performance",
    "brightness",
    "capture_activations",
    "channel_maxima",
    "channel_positive_counts",
    "channel_positive_presence",
    "class_model",
    "classifier_call",
    "cockpit_alpha",
    "contrast",
    "conv_layers",
    "crop_receptive_field",
    "dataset_labels",
    "dead_channels",
    "dead_fraction",
    "deconvnet",
    "eager_forward",
    "feature_convolutions",
    "fgsm",
    "fgsm_direction",
    "filter_noise_score",
    "fooling_image",
    "foreground_fraction",
    "grad_cam",
    "grad_enabled",
    "guided_backprop",
    "invert",
    "invert_codes",
    "is_conv",
    "is_indexable",
    "judge_learning_rate",
    "min_fooling_epsilon",
    "modified_relu_backward",
    "occluded_score_map",
    "occlusion",
    "occlusion_scores",
    "preserved_state",
    "receptive_field",
    "receptive_fields",
    "relative_change",
    "resolve_layers",
    "resolve_single_layer",
    "resolve_single_site",
    "saliency",
    "site_name",
    "smoothgrad",
    "sparsity",
    "split_selector",
    "spread_indices",
    "survey",
    "take_slots",
    "topk_merge",
    "topk_update",
    "total_variation",
    "window_starts",
]
