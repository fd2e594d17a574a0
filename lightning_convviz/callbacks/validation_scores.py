"""The class scores of the model's own forward call in ``validation_step``, read by a hook.

:class:`ValidationScores` serves the callbacks that judge predictions on the validation set
(:class:`~lightning_convviz.AttributePerformanceMonitor`,
:class:`~lightning_convviz.ConfusionMonitor`) without changing the user's step: a hook on the
LightningModule keeps its latest ``N x classes`` output; at the batch's end the callback takes
it, or has the model called once more when the step did not call it on the batch's images.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.utilities import rank_zero_warn

from lightning_convviz.callbacks.batches import inputs_from_batch, labels_from_batch
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["ValidationScores"]


class ValidationScores:
    """Class scores and labels of each validation batch, for one callback.

    Args:
        owner: The callback's name, for messages.
    """

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._kept: torch.Tensor | None = None
        self._warned_no_labels = False

    def model_calls(self, pl_module: LightningModule) -> CallSites:
        """The sites to hook (with :meth:`keep`): the LightningModule's own calls."""
        return CallSites(pl_module, {"": pl_module}, learn_layouts=False)

    def keep(self, _site: Site, output: torch.Tensor) -> None:
        """The hook: keep the latest output that has the shape of class scores."""
        if output.ndim == 2:
            self._kept = output.detach()

    def clear(self) -> None:
        """Forget the kept output (the hooks are off, or the batch is done)."""
        self._kept = None

    def take(
        self, pl_module: LightningModule, batch: Any
    ) -> tuple[torch.Tensor, Any, torch.Tensor] | None:
        """The batch's images, class scores (``Any``: checked by the caller) and labels; ``None``
        for a batch without labels (said once). Clears the kept output."""
        scores, self._kept = self._kept, None
        images = inputs_from_batch(batch)
        labels = labels_from_batch(batch, len(images))
        if labels is None:
            if not self._warned_no_labels:
                rank_zero_warn(f"{self.owner}: the batches carry no labels; idle.")
                self._warned_no_labels = True
            return None
        if scores is None or len(scores) != len(images):  # validation_step did not call self(x)
            with torch.no_grad():
                scores = pl_module(images)
        return images, scores, labels
