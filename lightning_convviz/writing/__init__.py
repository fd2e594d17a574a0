"""Writing to the Trainer's loggers: TensorBoard, Weights & Biases, MLflow, CSV and the rest.

Callbacks hand what they log to :class:`Writers`, which serves each logger as it can (see
:mod:`lightning_convviz.writing.writers` for the table). ``wandb`` and ``mlflow`` are optional:
they are imported only when such a logger is in use.
"""

from lightning_convviz.writing.destination import (
    Destination,
    EmbeddingPoints,
    as_uint8_hwc,
    safe_name,
)
from lightning_convviz.writing.writers import Writers, destination_for, writers_for

__all__ = [
    "Destination",
    "EmbeddingPoints",
    "Writers",
    "as_uint8_hwc",
    "destination_for",
    "safe_name",
    "writers_for",
]
