"""Lightning callbacks: decide when, call the functional core, render, and log."""

from lightning_convviz.callbacks.activation_maps import ActivationMapMonitor
from lightning_convviz.callbacks.activation_stats import ActivationStatsMonitor
from lightning_convviz.callbacks.adversarial import AdversarialMonitor
from lightning_convviz.callbacks.attribute_performance import AttributePerformanceMonitor
from lightning_convviz.callbacks.budget import DiagnosticsBudget
from lightning_convviz.callbacks.class_model import ClassModelMonitor
from lightning_convviz.callbacks.embedding import EmbeddingMonitor
from lightning_convviz.callbacks.filters import FilterMonitor
from lightning_convviz.callbacks.inversion import InversionMonitor
from lightning_convviz.callbacks.lr_doctor import LearningRateDoctor
from lightning_convviz.callbacks.max_activation import MaxActivationMonitor
from lightning_convviz.callbacks.occlusion import OcclusionMonitor
from lightning_convviz.callbacks.saliency import SaliencyMonitor

__all__ = [
    "ActivationMapMonitor",
    "ActivationStatsMonitor",
    "AdversarialMonitor",
    "AttributePerformanceMonitor",
    "ClassModelMonitor",
    "DiagnosticsBudget",
    "EmbeddingMonitor",
    "FilterMonitor",
    "InversionMonitor",
    "LearningRateDoctor",
    "MaxActivationMonitor",
    "OcclusionMonitor",
    "SaliencyMonitor",
]
