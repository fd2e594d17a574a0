"""The fixed probe images a callback draws for: chosen once, kept for the whole run.

Data on disk is listed class by class and validation loaders are not shuffled, so the probe is
not "the first validation images" but images spread over the whole validation set and, when its
labels are known (``targets`` of an ``ImageFolder``, ...), over its classes, one per class first
(:func:`~lightning_convviz.functional.spread_indices`). They are read from the validation data
set by index when it has one (at the first validation batch, the sanity check's included), the
same on every rank; from a stream (an ``IterableDataset``) they are reservoir-sampled over the
first validation epoch. Or the user passes a tensor; without validation data, the first training
batch serves. Labels come along when the batch carries them.

:class:`ProbeCallback` is the base of the callbacks that draw on the probe (activation maps,
inversion, adversarial examples, class models, and through
:class:`~lightning_convviz.callbacks.explainer.ProbeExplainer` the attribution callbacks): the
cadence (the start of training, then every ``every_n_epochs`` epochs) and predictions with
captions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import default_collate
from typing_extensions import override

from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.base import EpochDrawingCallback
from lightning_convviz.callbacks.batches import (
    clone_for_autograd,
    inputs_from_batch,
    labels_from_batch,
)
from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.sampling import (
    Reservoir,
    dataset_labels,
    is_indexable,
    spread_indices,
)

__all__ = [
    "ExplainTarget",
    "ProbeCallback",
    "ProbeSet",
    "caption",
    "check_probe_images",
    "first_validation_loader",
]


def check_probe_images(probe_images: object) -> None:
    """Raise ``ValueError`` unless ``probe_images`` is ``None`` or a tensor ``N x C x H x W``."""
    if probe_images is not None and (
        not isinstance(probe_images, torch.Tensor) or probe_images.ndim != 4
    ):
        raise ValueError(
            "probe_images: expected None or a tensor N x C x H x W, got "
            f"{getattr(probe_images, 'shape', type(probe_images).__name__)}"
        )


def first_validation_loader(trainer: Trainer) -> Any:
    """The Trainer's first validation dataloader (``None`` when there is none)."""
    loaders: Any = getattr(trainer, "val_dataloaders", None)
    if isinstance(loaders, Mapping):
        loaders = next(iter(loaders.values()), None)
    elif isinstance(loaders, (list, tuple)):
        loaders = loaders[0] if loaders else None
    return loaders


class ProbeSet:
    """Pick and keep the probe images (and labels) for one callback.

    Args:
        owner: Name of the callback, for messages.
        count: How many images to take from a batch.
        images: User-given probe images (then batches are ignored).
        labels: User-given labels for ``images``.
    """

    def __init__(
        self,
        owner: str,
        count: int,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        self.owner = owner
        self.count = count
        self.from_user = images is not None
        self.images = None if images is None else images.detach().clone().cpu()
        self.labels = None if labels is None else labels.detach().clone().long().cpu()
        self._train_images: torch.Tensor | None = None
        self._train_labels: torch.Tensor | None = None
        self._looked_at_dataset = False
        self._reservoir = Reservoir(count)
        self._kept: tuple[torch.Tensor, torch.Tensor | None] | None = None

    def _take(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            images = inputs_from_batch(batch)
        except ValueError as error:
            raise MisconfigurationException(f"{self.owner}: {error}") from None
        taken = clone_for_autograd(images[: self.count]).cpu()
        return taken, labels_from_batch(batch, len(taken))

    def offer_validation_batch(
        self, trainer: Trainer, batch: Any, batch_idx: int, dataloader_idx: int
    ) -> None:
        """At the first validation batch, read the probe from the data set; for a stream, keep
        a reservoir sample of the first validation epoch's images."""
        if self.images is not None or dataloader_idx != 0:
            return
        if not self._looked_at_dataset:
            self._looked_at_dataset = True
            picked = self._pick_from_dataset(first_validation_loader(trainer))
            if picked is not None:
                self.images, self.labels = picked
                return
        if not trainer.sanity_checking:
            self._keep_in_reservoir(batch)

    def end_validation_epoch(self, trainer: Trainer) -> None:
        """A stream's probe is the reservoir of the first validation epoch."""
        if self.images is None and self._kept is not None and not trainer.sanity_checking:
            filled = min(self._reservoir.seen, self.count)  # a short stream fills fewer slots
            images, labels = self._kept
            self.images, self.labels = images[:filled], None if labels is None else labels[:filled]
            self._kept = None
            rank_zero_info(
                f"{self.owner}: probing with {len(self.images)} images reservoir-sampled over "
                "the first validation epoch (the validation data cannot be read by index)."
            )

    def _pick_from_dataset(self, loader: Any) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """Images spread over the validation set and its classes, read by index; ``None`` when
        the data set cannot be indexed or its samples cannot be collated into a batch."""
        dataset: Any = getattr(loader, "dataset", None)
        if not is_indexable(dataset) or not len(dataset):
            return None
        labels = dataset_labels(dataset)
        indices = spread_indices(len(dataset), self.count, labels)
        # a loader without automatic batching (batch_size=None) hands its collate function
        # whole batches: single samples are collated as a batched loader would
        batched = getattr(loader, "batch_sampler", None) is not None
        collate = loader.collate_fn if batched else default_collate
        try:
            batch = collate([dataset[index] for index in indices])
            inputs_from_batch(batch)
        except Exception:  # a data set or collate function we cannot call this way
            return None
        picked = self._take(batch)
        classes = "" if labels is None else f" and over its {len(torch.unique(labels))} classes"
        rank_zero_info(
            f"{self.owner}: probing with {len(picked[0])} of the {len(dataset)} validation "
            f"images, spread over the set{classes} (indices {indices})."
        )
        return picked

    def _keep_in_reservoir(self, batch: Any) -> None:
        images, labels = self._take_all(batch)
        for row, slot in self._reservoir.offer(len(images)):
            if self._kept is None:
                shape = (self.count, *images.shape[1:])
                kept_labels = None if labels is None else torch.zeros(self.count, dtype=torch.long)
                self._kept = (images.new_zeros(shape), kept_labels)
            self._kept[0][slot] = images[row]
            if self._kept[1] is not None and labels is not None:
                self._kept[1][slot] = labels[row]

    def _take_all(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        try:
            images = inputs_from_batch(batch)
        except ValueError as error:
            raise MisconfigurationException(f"{self.owner}: {error}") from None
        taken = clone_for_autograd(images).cpu()
        return taken, labels_from_batch(batch, len(taken))

    def offer_training_batch(self, batch: Any) -> None:
        """Remember the first training batch's images as a fallback, once."""
        if self.images is None and self._train_images is None:
            self._train_images, self._train_labels = self._take(batch)

    def get(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The probe images and labels, or ``None`` when no batch has been seen yet."""
        if self.images is None and self._train_images is not None:
            rank_zero_info(
                f"{self.owner}: no validation batch seen; probing with the first training images."
            )
            self.images, self.labels = self._train_images, self._train_labels
        if self.images is None:
            return None
        return self.images, self.labels

    def state_dict(self) -> dict[str, Any]:
        return {"probe": self.images, "probe_labels": self.labels}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self.from_user:
            self.images = state_dict.get("probe")
            self.labels = state_dict.get("probe_labels")


#: Which class the maps explain: the true label (when the batch has labels) or the prediction.
ExplainTarget = Literal["true", "predicted"]


class ProbeCallback(EpochDrawingCallback):
    """Base class: a fixed probe set (with labels when known), drawn at the start of training
    and every ``every_n_epochs`` epochs on global rank zero. Subclasses implement :meth:`_draw`.
    """

    whole_model_needed = "runs the model on its probe images on global rank zero alone"

    def __init__(
        self,
        probe_images: torch.Tensor | None,
        probe_labels: torch.Tensor | None,
        num_probe_images: int,
        every_n_epochs: int,
        target: ExplainTarget,
        tile_side: int,
    ) -> None:
        super().__init__()
        check_probe_images(probe_images)
        if probe_labels is not None and (
            probe_images is None
            or not isinstance(probe_labels, torch.Tensor)
            or probe_labels.shape != probe_images.shape[:1]
            or probe_labels.is_floating_point()
        ):
            raise ValueError(
                "probe_labels: expected None or integer labels, one per probe image (and "
                f"probe_images given), got {getattr(probe_labels, 'shape', probe_labels)!r}"
            )
        check_positive_int("num_probe_images", num_probe_images)
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("tile_side", tile_side)
        if target not in ("true", "predicted"):
            raise ValueError(f"target: expected 'true' or 'predicted', got {target!r}")
        self.num_probe_images = num_probe_images
        self.every_n_epochs = every_n_epochs
        self.target = target
        self.tile_side = tile_side
        self._probe = ProbeSet(type(self).__name__, num_probe_images, probe_images, probe_labels)

    # -- probe selection -----------------------------------------------------------------------

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._enabled:
            self._probe.offer_validation_batch(trainer, batch, batch_idx, dataloader_idx)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._enabled:
            self._probe.end_validation_epoch(trainer)

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._enabled:
            self._probe.offer_training_batch(batch)

    # -- cadence -------------------------------------------------------------------------------

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._pending = None
        if self._enabled and trainer.global_step == 0 and self._probe.images is not None:
            self._draw_first(trainer, pl_module)

    def _probe_on_device(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The probe images on the model's device and their labels, on global rank zero."""
        probe = self._probe.get()
        if not trainer.is_global_zero or probe is None:
            return None
        return probe[0].to(pl_module.device), probe[1]

    def _targets(self, labels: torch.Tensor | None, probabilities: torch.Tensor) -> torch.Tensor:
        """The class each probe image is explained for: its label when ``target="true"`` and
        labels are known, otherwise the predicted class."""
        if self.target == "true" and labels is not None:
            return labels
        return probabilities.argmax(dim=1)

    def _predict(
        self, pl_module: LightningModule, images: torch.Tensor, labels: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[str]]:
        """Class probabilities ``(N, classes)`` on the CPU, and captions: true class (when
        known), predicted class and its probability."""
        with preserved_state(pl_module), torch.no_grad():
            probabilities = pl_module(images).float().softmax(dim=1).cpu()
        predicted = probabilities.argmax(dim=1)
        captions = [
            caption(
                None if label is None else self._class_name(int(label)),
                self._class_name(int(guess)),
                float(probability[guess]),
            )
            for label, guess, probability in zip(
                labels if labels is not None else [None] * len(images),
                predicted,
                probabilities,
                strict=True,
            )
        ]
        return probabilities, captions

    # -- checkpointing -------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {**self._probe.state_dict(), "drawn_at": self._drawn_at}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._probe.load_state_dict(state_dict)
        self._drawn_at = state_dict.get("drawn_at")


def caption(label: str | None, predicted: str, probability: float) -> str:
    """``true <label>`` (when known) over ``pred <predicted> (<probability>)``."""
    shown = f"pred {predicted} ({probability:.2f})"
    return shown if label is None else f"true {label}\n{shown}"
