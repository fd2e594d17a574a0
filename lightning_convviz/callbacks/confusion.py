"""ConfusionMonitor: where the model errs on the validation set (confusions, top losses)."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from typing_extensions import override

from lightning_convviz import plots, render
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.distributed import gather_rows
from lightning_convviz.callbacks.probe import caption
from lightning_convviz.callbacks.schedule import collecting_epoch
from lightning_convviz.callbacks.validation_scores import ValidationScores
from lightning_convviz.functional.confusion import (
    ConfusedPair,
    TopLosses,
    add_to_confusion,
    check_labels,
    class_accuracy,
    classes_with_most_errors,
    most_confused,
    still_there,
)

__all__ = ["ConfusionMonitor"]


class ConfusionMonitor(ConvVizCallback):
    """Show where the model errs on the validation set: its confusions and its top losses.

    Karpathy's reading of his own ImageNet labelling against a ConvNet's, and fastai's
    ``ClassificationInterpretation``, as training goes. During every ``every_n_epochs``-th
    validation epoch (and the last one) the class scores of the model's own forward call in
    ``validation_step`` are read (the step is not changed; a step that does not call the model
    has it called once more) and, on the model's device without a host synchronisation per
    batch, added to a confusion matrix and to the ``top_losses`` highest cross-entropies with
    their images. At the epoch's end (gathered from every rank under DDP) the callback logs the
    matrix, the most confused pairs, the worst classes' accuracy and the top-loss images.

    A validation set read in order (a folder of images sorted by class) serves as it is: nothing
    depends on the order of the batches. The top-loss images are told apart from frame to frame
    by their position in the validation data (a validation loader is not shuffled).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ConfusionMonitor(every_n_epochs=5, top_losses=16)])

    Logged tags:
        * ``errors/confusion_matrix`` (image): rows (true classes) normalised, class names on
          both axes when the data has them; above ``max_classes_shown`` classes, only the
          classes with the most errors (rows and columns).
        * ``errors/most_confused`` (text): a markdown table of the ``top_pairs`` most frequent
          confusions (true class, predicted class, images, share of the true class).
        * ``errors/accuracy/<class>`` (scalars): the ``worst_classes`` least accurate classes.
        * ``errors/top_losses`` (image): the highest-loss images, captioned with the true class,
          the predicted class and its probability, and the loss.
        * ``errors/top_losses/still_there`` (scalar, from the second frame): the share of the
          last frame's top-loss images that are still among them.

    Args:
        every_n_epochs: Collect during every this many validation epochs (and the last one).
        top_losses: How many highest-loss images to show.
        top_pairs: How many confused pairs the table lists.
        worst_classes: How many of the least accurate classes get a scalar.
        max_classes_shown: The most classes the matrix picture shows.
        tile_side: The smallest side of a top-loss tile, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger; at the first
            collected validation batch, when the model's output is not class scores
            ``N x classes`` or the labels are not class indices of those scores; at the end of
            a validation epoch, when later batches held labels beyond the classes.
    """

    section = "errors"
    _collective_hooks = ("on_validation_epoch_end",)
    dashboard: ClassVar[dict[str, list[str]]] = {
        "accuracy of the worst classes": ["errors/accuracy/"],
    }

    def __init__(
        self,
        every_n_epochs: int = 1,
        top_losses: int = 16,
        top_pairs: int = 10,
        worst_classes: int = 5,
        max_classes_shown: int = 20,
        tile_side: int = 96,
    ) -> None:
        super().__init__()
        for name, value in (
            ("every_n_epochs", every_n_epochs),
            ("top_losses", top_losses),
            ("top_pairs", top_pairs),
            ("worst_classes", worst_classes),
            ("max_classes_shown", max_classes_shown),
            ("tile_side", tile_side),
        ):
            check_positive_int(name, value)
        self.every_n_epochs = every_n_epochs
        self.top_losses = top_losses
        self.top_pairs = top_pairs
        self.worst_classes = worst_classes
        self.max_classes_shown = max_classes_shown
        self.tile_side = tile_side
        self._scores = ValidationScores("ConfusionMonitor")
        self._matrix: torch.Tensor | None = None
        self._outside: torch.Tensor | int = 0  # labels beyond the classes, this epoch
        self._top: TopLosses | None = None
        self._seen = 0  # images of this validation epoch on this rank
        self._checked = False  # the first batch's scores and labels checked
        self._previous: torch.Tensor | None = None  # the last frame's top-loss positions
        self._chart: plots.Chart | None = None
        #: The latest frame's confusion matrix (on global rank zero, on the host).
        self.matrix: torch.Tensor | None = None
        #: The latest frame's most confused pairs (on global rank zero).
        self.pairs: list[ConfusedPair] = []
        #: The latest frame's top losses: rows of losses, labels, predictions, positions.
        self.top: dict[str, torch.Tensor] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(every=self.every_n_epochs, top=self.top_losses)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Any classifier can be read: its scores are checked at the first batch."""
        self._checked = False

    # -- collecting ----------------------------------------------------------------------------

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled or not collecting_epoch(trainer, self.every_n_epochs):
            return
        self._matrix, self._top, self._seen = None, TopLosses(self.top_losses), 0
        self._outside = 0
        self._release_hooks()
        self._hook(self._scores.model_calls(pl_module), self._scores.keep)

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
        if not self._hooked or dataloader_idx != 0 or self._top is None:
            self._scores.clear()
            return
        taken = self._scores.take(pl_module, batch)
        if taken is None:
            return
        images, scores, labels = taken
        if not self._checked:
            self._check(pl_module, scores, labels, len(images))
        scores = scores.float()
        labels = labels.to(scores.device)
        if self._matrix is None:
            classes = scores.shape[1]
            self._matrix = torch.zeros(classes, classes, dtype=torch.long, device=scores.device)
        self._outside = self._outside + add_to_confusion(self._matrix, scores, labels)
        local = torch.arange(len(images), device=scores.device) + self._seen
        positions = local * trainer.world_size + trainer.global_rank
        self._top.add(images, scores, labels, positions)
        self._seen += len(images)

    def _check(self, pl_module: Any, scores: Any, labels: torch.Tensor, count: int) -> None:
        """The first batch: class scores ``N x classes`` and labels among those classes."""
        model = type(pl_module).__name__
        if (
            not isinstance(scores, torch.Tensor)
            or scores.ndim != 2
            or len(scores) != count
            or scores.shape[1] < 2
        ):
            shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise MisconfigurationException(
                f"ConfusionMonitor: {model}'s forward pass returns {shape} for a batch of {count} "
                "images, not class scores N x classes (at least two classes): there is no "
                "prediction to compare with the labels. Remove the callback, or return the "
                "class scores from forward."
            )
        try:
            check_labels(labels, scores.shape[1])
        except ValueError as error:
            raise MisconfigurationException(f"ConfusionMonitor: {error}") from None
        self._checked = True

    # -- the epoch's end -------------------------------------------------------------------------

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not collecting_epoch(trainer, self.every_n_epochs)
            or not self._ranks_agree(trainer)
            or not self._hooked
        ):
            return
        self._release_hooks()
        matrix, top, outside = self._joined(trainer)
        self._top, self._matrix, self._outside = None, None, 0
        if outside:  # the same count on every rank: all stop together
            raise MisconfigurationException(
                f"ConfusionMonitor: labels: {outside} validation labels lie outside the model's "
                f"{None if matrix is None else len(matrix)} classes (expected class indices "
                "from 0); they are not counted. Check the labels or the model's outputs."
            )
        writer = self._writer(trainer)
        if writer is None or matrix is None or not len(top["losses"]):
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        self._schedule(
            trainer, pl_module, lambda: self._report(trainer, writer, matrix, top, step, epoch)
        )

    def _joined(self, trainer: Trainer) -> tuple[torch.Tensor | None, dict[str, torch.Tensor], int]:
        """Every rank's matrix summed, top losses merged and labels outside the classes counted
        (collectives on every rank, also on one that saw no labelled batch)."""
        top = self._top or TopLosses(self.top_losses)
        rows = {**top.rows()}
        images = top.images if top.images is not None else torch.zeros(0, 0, 0, 0)
        matrix = self._matrix
        outside = torch.as_tensor(self._outside)
        if trainer.world_size > 1:
            device = trainer.strategy.root_device
            classes = torch.tensor(0 if matrix is None else matrix.shape[0], device=device)
            classes = trainer.strategy.all_gather(classes).max()
            if int(classes) == 0:
                return None, rows, 0
            if matrix is None:
                matrix = torch.zeros(int(classes), int(classes), dtype=torch.long, device=device)
            matrix = trainer.strategy.reduce(matrix.to(device), reduce_op="sum")
            outside = trainer.strategy.reduce(outside.to(device), reduce_op="sum")
            rows = {name: gather_rows(trainer, part) for name, part in rows.items()}
            images = gather_rows(trainer, images)
        order = rows["losses"].topk(min(self.top_losses, len(rows["losses"]))).indices
        joined = {name: to_host(part[order]) for name, part in rows.items()}
        joined["images"] = to_host(images[order.to(images.device)]) if len(order) else images
        return (None if matrix is None else to_host(matrix)), joined, int(outside)

    def _report(
        self,
        trainer: Trainer,
        writer: Any,
        matrix: torch.Tensor,
        top: dict[str, torch.Tensor],
        step: int,
        epoch: int,
    ) -> None:
        self.matrix, self.top = matrix, top
        self.pairs = most_confused(matrix, self.top_pairs)
        accuracy = class_accuracy(matrix)
        seen = [c for c in range(len(accuracy)) if not bool(accuracy[c].isnan())]
        worst = sorted(seen, key=lambda c: (float(accuracy[c]), c))[: self.worst_classes]
        metrics = {
            self._tag("accuracy", _tag_part(self._class_name(c))): float(accuracy[c]) for c in worst
        }
        positions = top["positions"]
        if self._previous is not None:
            metrics[self._tag("top_losses", "still_there")] = still_there(self._previous, positions)
        self._previous = positions.clone()
        self._log_scalars(trainer, metrics, step)
        writer.text(self._tag("most_confused"), self._pairs_table(epoch, int(matrix.sum())), step)
        captions = [
            caption(self._class_name(int(label)), self._class_name(int(guess)), float(p))
            + f"\nloss {float(loss):.2f}"
            for label, guess, p, loss in zip(
                top["labels"], top["predicted"], top["confidence"], top["losses"], strict=True
            )
        ]
        shown = self._shown_classes(matrix)
        names = [self._class_name(c) for c in shown.tolist()]
        rows = matrix.double().sum(dim=1, keepdim=True).clamp_min(1)
        shares = (matrix.double() / rows)[shown][:, shown].numpy()
        kept = "" if len(shown) == len(matrix) else f", the {len(shown)} classes with most errors"
        title = f"epoch {epoch}: {int(matrix.sum())} images, {len(matrix)} classes{kept}"
        images, tile_side = top["images"], self.tile_side

        def draw_and_write() -> None:
            self._chart = self._chart or plots.Chart()  # made and used by one thread
            picture = plots.confusion_chart(shares, names, title, self._chart)
            writer.image(self._tag("confusion_matrix"), picture, step)
            tiles = render.thumbnails(images, max(tile_side, 32))
            grid = render.labelled_grid(tiles, captions, columns=8, min_side=tile_side)
            writer.image(self._tag("top_losses"), grid, step)

        self._later(trainer, None, draw_and_write)

    def _shown_classes(self, matrix: torch.Tensor) -> torch.Tensor:
        if len(matrix) <= self.max_classes_shown:
            return torch.arange(len(matrix))
        return classes_with_most_errors(matrix, self.max_classes_shown)

    def _pairs_table(self, epoch: int, images: int) -> str:
        if not self.pairs:
            return f"Epoch {epoch}: no image of the {images} was mistaken for another class."
        lines = [
            f"Epoch {epoch}: the {len(self.pairs)} most frequent confusions of {images} "
            "validation images.",
            "",
            "| true class | predicted class | images | share of the true class |",
            "|---|---|---:|---:|",
        ]
        lines += [
            f"| {_cell(self._class_name(pair.true_class))} | "
            f"{_cell(self._class_name(pair.predicted_class))} | {pair.images} | "
            f"{100 * pair.share:.1f} % |"
            for pair in self.pairs
        ]
        return "\n".join(lines)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw_last(trainer, pl_module)

    @override
    def _release_hooks(self) -> None:
        super()._release_hooks()
        self._scores.clear()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"previous_top_losses": self._previous}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        previous = state_dict.get("previous_top_losses")
        self._previous = previous if isinstance(previous, torch.Tensor) else None


def _tag_part(name: str) -> str:
    """A class name as one part of a tag: no slash, no spaces."""
    return re.sub(r"[\s/]+", "_", name.strip()) or "_"


def _cell(text: str) -> str:
    """Text for a markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")
