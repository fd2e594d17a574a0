"""lightning_convviz: see what your ConvNet is learning while it trains.

PyTorch Lightning callbacks that log activation statistics, activation maps, filters and
attribution maps (saliency, guided backprop, Grad-CAM, occlusion), top-k activating patches and
t-SNE maps of the codes to TensorBoard, built on a pure-torch core in
:mod:`lightning_convviz.functional`.
"""

from lightning_convviz import functional
from lightning_convviz.callbacks import (
    ActivationMapMonitor,
    ActivationStatsMonitor,
    AdversarialMonitor,
    AttributePerformanceMonitor,
    ClassModelMonitor,
    ConfusionMonitor,
    CorrespondenceMonitor,
    DiagnosticsBudget,
    EmbeddingMonitor,
    FilterMonitor,
    InversionMonitor,
    LearningRateDoctor,
    MaxActivationMonitor,
    OcclusionMonitor,
    SaliencyMonitor,
    TrainingDoctor,
)
from lightning_convviz.versions import check_unified_lightning

__version__ = "0.1.0"

check_unified_lightning()

__all__ = [
    "ActivationMapMonitor",
    "ActivationStatsMonitor",
    "AdversarialMonitor",
    "AttributePerformanceMonitor",
    "ClassModelMonitor",
    "ConfusionMonitor",
    "CorrespondenceMonitor",
    "DiagnosticsBudget",
    "EmbeddingMonitor",
    "FilterMonitor",
    "InversionMonitor",
    "LearningRateDoctor",
    "MaxActivationMonitor",
    "OcclusionMonitor",
    "SaliencyMonitor",
    "TrainingDoctor",
    "__version__",
    "functional",
]
