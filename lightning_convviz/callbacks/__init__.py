"""Lightning callbacks: decide when, call the functional core, render, and log.

Where each concern lives:

* ``base.py``: :class:`ConvVizCallback` (setup, the failure guard's wiring, rank agreement
  under DDP, call sites, writing, and the one way to hook: ``_hook`` and ``_read_activity``
  put every hook into one stack that ``_release_hooks`` takes off) and
  :class:`EpochDrawingCallback` (draw at the start, every ``every_n_epochs`` epochs and at the
  end). Every module hook of the package is placed by
  :class:`~lightning_convviz.functional.CallSites`.
* ``context.py``: :class:`TrainerContext`, what the callbacks of one fit share (the budget,
  the loggers' writers, the drawing worker, the activity count); the only thing kept per
  Trainer.
* ``activity_counter.py``: one count of the default activation sites per batch, read by the
  stats monitor and the learning-rate doctor alike.
* ``drawing.py``: the one schedule of every drawing (due, made or pending, timed, charged) and
  where it is rendered (the drawing worker or the training thread).
* ``budget.py``: the share of the fit the drawings may take (``DiagnosticsBudget``).
* ``failures.py``: the guard (an exception in a hook becomes one warning; ``NotApplicable``).
* ``sharding.py``: whether the strategy shards the parameters (then the callbacks that need
  whole weights stay off).
* ``arguments.py``, ``batches.py``, ``schedule.py``, ``distributed.py``, ``class_names.py``:
  argument checks; reading a batch; the epochs to draw or collect at; collectives; classes'
  names.
* ``probe.py`` (the probe images and :class:`ProbeCallback`), ``explainer.py`` (the heat-map
  callbacks' base), ``samples.py`` (samples collected over validation), ``validation_scores.py``
  (the class scores of the model's own validation calls, for the callbacks that judge them).
* One module per callback; beside the doctor, ``lr_measurement.py`` (what it measures of a
  step and an epoch, reduced over ranks) and ``lr_records.py`` (its records, summary and
  hyperparameters); beside the embedding, ``embedding_maps.py`` (a t-SNE map made and written).
"""

from lightning_convviz.callbacks.activation_maps import ActivationMapMonitor
from lightning_convviz.callbacks.activation_stats import ActivationStatsMonitor
from lightning_convviz.callbacks.adversarial import AdversarialMonitor
from lightning_convviz.callbacks.attribute_performance import AttributePerformanceMonitor
from lightning_convviz.callbacks.budget import DiagnosticsBudget
from lightning_convviz.callbacks.class_model import ClassModelMonitor
from lightning_convviz.callbacks.confusion import ConfusionMonitor
from lightning_convviz.callbacks.correspondence import CorrespondenceMonitor
from lightning_convviz.callbacks.embedding import EmbeddingMonitor
from lightning_convviz.callbacks.filters import FilterMonitor
from lightning_convviz.callbacks.inversion import InversionMonitor
from lightning_convviz.callbacks.lr_doctor import LearningRateDoctor
from lightning_convviz.callbacks.max_activation import MaxActivationMonitor
from lightning_convviz.callbacks.occlusion import OcclusionMonitor
from lightning_convviz.callbacks.saliency import SaliencyMonitor
from lightning_convviz.callbacks.training_doctor import TrainingDoctor

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
]
