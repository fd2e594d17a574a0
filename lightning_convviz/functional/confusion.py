"""Where a classifier errs: the confusion matrix, the most confused pairs, the top losses.

What a person reads first when a model is wrong (Karpathy's "what I learned from competing
against a ConvNet on ImageNet"; fastai's ``ClassificationInterpretation``): which classes it
mistakes for which, and which images it is most sure about and wrong. Everything is computed
on the model's device without reading a value back to the host: a batch adds to a running
confusion matrix (:func:`add_to_confusion`) and to a running set of the ``k`` highest losses
(:class:`TopLosses`), so a validation epoch costs no host synchronisation.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from lightning_convviz.functional.arguments import check_class_scores, check_int

__all__ = [
    "ConfusedPair",
    "TopLosses",
    "add_to_confusion",
    "check_labels",
    "class_accuracy",
    "classes_with_most_errors",
    "confusion_matrix",
    "most_confused",
    "still_there",
]


def check_labels(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """``labels`` as int64 class indices, or ``ValueError`` naming what is wrong with them.

    Reads the labels' range back to the host: for arguments given once, not for every batch.
    """
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim != 1:
        raise ValueError(
            f"labels: expected one integer class index per image, got {labels.dtype} of shape "
            f"{tuple(labels.shape)}"
        )
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(
            f"labels: expected class indices in [0, {classes - 1}] (the model has {classes} "
            f"class scores), got {int(labels.min())} to {int(labels.max())}"
        )
    return labels.long()


def add_to_confusion(
    matrix: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Add a batch to ``matrix`` (``classes x classes`` counts, rows the true class, columns
    the predicted one) in place and return how many of its labels lie outside the classes (a
    0-d tensor: those images are not counted). No host synchronisation."""
    classes = matrix.shape[0]
    predicted = scores.argmax(dim=1)
    labels = labels.to(predicted.device).long()
    inside = (labels >= 0) & (labels < classes)
    cell = (labels * classes + predicted).clamp(0, classes * classes - 1)
    counts = torch.bincount(cell, weights=inside.double(), minlength=classes * classes)
    matrix += counts.reshape(classes, classes).to(matrix.dtype)
    return (~inside).sum()


def confusion_matrix(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The confusion matrix of class ``scores`` (``N x classes``) against ``labels``: how
    many images of each true class (row) were predicted as each class (column).

    Example:
        >>> scores = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
        >>> confusion_matrix(scores, torch.tensor([0, 0, 1]))
        tensor([[1, 1],
                [0, 1]])
    """
    scores = check_class_scores(scores, len(scores))
    labels = check_labels(labels, scores.shape[1])
    matrix = torch.zeros(scores.shape[1], scores.shape[1], dtype=torch.long, device=scores.device)
    add_to_confusion(matrix, scores, labels)
    return matrix


def class_accuracy(matrix: torch.Tensor) -> torch.Tensor:
    """Each class's accuracy (its diagonal share of its row); NaN for a class with no image."""
    counts = matrix.sum(dim=1).double()
    return torch.where(counts > 0, matrix.diagonal().double() / counts.clamp_min(1), torch.nan)


def classes_with_most_errors(matrix: torch.Tensor, count: int) -> torch.Tensor:
    """The ``count`` classes with the most images predicted wrong, most first (ties: the lower
    class index first), as the rows and columns a bounded picture of a large matrix keeps."""
    check_int("count", count)
    errors = matrix.sum(dim=1) - matrix.diagonal()
    order = sorted(range(len(errors)), key=lambda c: (-int(errors[c]), c))
    return torch.tensor(order[: min(count, len(order))], dtype=torch.long)


class ConfusedPair(NamedTuple):
    """A true class and the class the model took it for."""

    true_class: int
    predicted_class: int
    #: Images of ``true_class`` predicted as ``predicted_class``.
    images: int
    #: ``count`` over the images of ``true_class``.
    share: float


def most_confused(matrix: torch.Tensor, top: int = 10) -> list[ConfusedPair]:
    """The off-diagonal cells of a confusion matrix, most images first (ties: lower true class,
    then lower predicted class), at most ``top`` of them and none with no image.

    Example:
        >>> most_confused(torch.tensor([[5, 3, 0], [1, 4, 0], [0, 3, 2]]), top=2)
        [ConfusedPair(true_class=0, predicted_class=1, images=3, share=0.375), \
ConfusedPair(true_class=2, predicted_class=1, images=3, share=0.6)]
    """
    check_int("top", top)
    matrix = matrix.detach().cpu().long()
    off = matrix.clone()
    off.fill_diagonal_(0)
    classes = matrix.shape[1]
    flat = off.flatten()
    order = sorted(
        (cell for cell in flat.nonzero().flatten().tolist()), key=lambda c: (-int(flat[c]), c)
    )
    rows = matrix.sum(dim=1)
    return [
        ConfusedPair(
            cell // classes,
            cell % classes,
            int(flat[cell]),
            int(flat[cell]) / int(rows[cell // classes]),
        )
        for cell in order[:top]
    ]


class TopLosses:
    """The ``k`` validation images with the highest cross-entropy seen so far, kept on the
    model's device (images, losses, labels, predictions and each image's position in the
    data), without a host synchronisation per batch.

    Example:
        >>> top = TopLosses(k=2)
        >>> scores = torch.tensor([[3.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
        >>> top.add(torch.zeros(3, 1, 2, 2), scores, torch.tensor([1, 1, 1]), torch.arange(3))
        >>> top.positions.tolist()
        [0, 2]
    """

    def __init__(self, k: int) -> None:
        check_int("k", k)
        self.k = k
        self.images: torch.Tensor | None = None
        self.losses = torch.zeros(0)
        self.labels = torch.zeros(0, dtype=torch.long)
        self.predicted = torch.zeros(0, dtype=torch.long)
        #: The predicted class's probability.
        self.confidence = torch.zeros(0)
        #: Each image's position in the data (its identity from one frame to the next).
        self.positions = torch.zeros(0, dtype=torch.long)

    def add(
        self,
        images: torch.Tensor,
        scores: torch.Tensor,
        labels: torch.Tensor,
        positions: torch.Tensor,
    ) -> None:
        """Offer a batch: its images, class scores, labels and positions in the data (labels
        outside the classes are read as the nearest class: check them apart, as
        :func:`add_to_confusion` counts them)."""
        scores = scores.detach().float()
        labels = labels.to(scores.device).long().clamp(0, scores.shape[1] - 1)
        losses = F.cross_entropy(scores, labels, reduction="none")
        keep = losses.topk(min(self.k, len(losses))).indices
        probabilities = scores[keep].softmax(dim=1)
        confidence, predicted = probabilities.max(dim=1)
        batch = {
            "images": images.detach()[keep.to(images.device)].to(scores.device),
            "losses": losses[keep],
            "labels": labels[keep],
            "predicted": predicted,
            "confidence": confidence,
            "positions": positions.to(scores.device).long()[keep],
        }
        if self.images is not None:  # what was kept so far joins the batch
            batch = {name: torch.cat([getattr(self, name), part]) for name, part in batch.items()}
        order = batch["losses"].topk(min(self.k, len(batch["losses"]))).indices
        for name, part in batch.items():
            setattr(self, name, part[order])

    def rows(self) -> dict[str, torch.Tensor]:
        """What is kept, as tensors with one row per image (empty before any batch)."""
        names = ("losses", "labels", "predicted", "confidence", "positions")
        return {name: getattr(self, name) for name in names}


def still_there(previous: torch.Tensor, current: torch.Tensor) -> float:
    """The share of ``previous`` (positions of the last frame's top losses) found again in
    ``current``; NaN when there was nothing before.

    Example:
        >>> still_there(torch.tensor([1, 2, 3, 4]), torch.tensor([4, 9, 1]))
        0.5
    """
    if not len(previous):
        return float("nan")
    return float(torch.isin(previous.cpu(), current.cpu()).float().mean())
