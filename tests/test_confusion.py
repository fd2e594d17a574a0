"""ConfusionMonitor and its core: confusion matrix, most confused pairs, top losses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import logged_image, make_trainer, read_events
from lightning_fabric.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from workloads import Classifier

from lightning_convviz import ConfusionMonitor
from lightning_convviz.functional.confusion import (
    ConfusedPair,
    TopLosses,
    class_accuracy,
    classes_with_most_errors,
    confusion_matrix,
    most_confused,
    still_there,
)

LOG = Path("run") / "version_0"


# -- the core ---------------------------------------------------------------------------------


def test_confusion_matrix_counts_each_true_and_predicted_pair() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 7, generator=generator)
    labels = torch.randint(0, 7, (200,), generator=generator)
    expected = torch.zeros(7, 7, dtype=torch.long)
    for label, guess in zip(labels.tolist(), scores.argmax(dim=1).tolist(), strict=True):
        expected[label, guess] += 1
    assert torch.equal(confusion_matrix(scores, labels), expected)
    accuracy = class_accuracy(expected)
    assert torch.allclose(accuracy, expected.diagonal() / expected.sum(dim=1).double())


def test_most_confused_orders_by_count_then_class_and_skips_the_diagonal() -> None:
    matrix = torch.tensor([[9, 2, 2], [4, 0, 0], [0, 2, 50]])
    assert most_confused(matrix) == [
        ConfusedPair(1, 0, 4, 1.0),
        ConfusedPair(0, 1, 2, 2 / 13),
        ConfusedPair(0, 2, 2, 2 / 13),
        ConfusedPair(2, 1, 2, 2 / 52),
    ]
    assert most_confused(matrix, top=1) == [ConfusedPair(1, 0, 4, 1.0)]
    assert most_confused(torch.eye(3, dtype=torch.long)) == []
    assert class_accuracy(torch.tensor([[1, 0], [0, 0]]))[1].isnan()
    assert classes_with_most_errors(matrix, 2).tolist() == [0, 1]


def test_top_losses_are_the_highest_cross_entropies_over_batches() -> None:
    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(50, 5, generator=generator)
    labels = torch.randint(0, 5, (50,), generator=generator)
    images = torch.randn(50, 1, 4, 4, generator=generator)
    top = TopLosses(k=6)
    for start in range(0, 50, 8):  # uneven batches, the last one short
        part = slice(start, start + 8)
        top.add(images[part], scores[part], labels[part], torch.arange(50)[part])
    losses = F.cross_entropy(scores, labels, reduction="none")
    expected = losses.topk(6).indices
    assert top.positions.tolist() == expected.tolist()
    assert torch.allclose(top.losses, losses[expected])
    assert top.images is not None and torch.equal(top.images, images[expected])
    assert top.labels.tolist() == labels[expected].tolist()
    probabilities = scores[expected].softmax(dim=1)
    assert top.predicted.tolist() == probabilities.argmax(dim=1).tolist()
    assert torch.allclose(top.confidence, probabilities.max(dim=1).values)


def test_still_there_is_the_share_of_last_frames_images_found_again() -> None:
    assert still_there(torch.tensor([1, 2, 3, 4]), torch.tensor([4, 9, 1])) == 0.5
    assert still_there(torch.tensor([5]), torch.tensor([5])) == 1.0
    assert still_there(torch.tensor([], dtype=torch.long), torch.tensor([1])) != 0.0  # NaN


def test_labels_outside_the_scores_fail_clearly() -> None:
    with pytest.raises(ValueError, match=r"labels: expected class indices in \[0, 2\]"):
        confusion_matrix(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="labels: expected one integer class index"):
        confusion_matrix(torch.randn(4, 3), torch.zeros(4))


# -- the callback -----------------------------------------------------------------------------


class QuadrantNet(Classifier):
    """A small classifier of 1 x 16 x 16 images into ``classes`` classes (Adam 3e-3)."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__(
            nn.Sequential(
                nn.Conv2d(1, 8, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(16 * 8 * 8, classes),
            )
        )

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def quadrant_data(per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Class ``c`` is a bright square in quadrant ``c``; half of each class's squares are large.
    Images sorted by class, as a folder of images on disk is read. Returns images, labels and
    which squares are large."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(per_class)
    large = (torch.arange(len(labels)) % 2).bool()
    images = 0.3 * torch.randn(len(labels), 1, 16, 16, generator=generator)
    for index, (label, big) in enumerate(zip(labels.tolist(), large.tolist(), strict=True)):
        top, left = 8 * (label // 2), 8 * (label % 2)
        side = 6 if big else 3
        images[index, 0, top + 1 : top + 1 + side, left + 1 : left + 1 + side] += 1.0
    return images, labels, large


@pytest.mark.training_outcome
def test_a_planted_confusion_is_the_first_row_of_most_confused(tmp_path: Path) -> None:
    """Half of class 0's training labels (its large squares) are changed to class 1: the
    validation set (labels clean) shows class 0 mistaken for class 1 first."""
    torch.manual_seed(0)
    images, labels, large = quadrant_data(96, seed=0)
    planted = labels.clone()
    planted[(labels == 0) & large] = 1
    train = DataLoader(TensorDataset(images, planted), batch_size=32, shuffle=True)
    val_images, val_labels, _ = quadrant_data(32, seed=1)
    val = DataLoader(TensorDataset(val_images, val_labels), batch_size=32)
    monitor = ConfusionMonitor(every_n_epochs=4)
    trainer = make_trainer(
        tmp_path, [monitor], max_epochs=8, limit_train_batches=None, limit_val_batches=None
    )
    trainer.fit(QuadrantNet(), train, val)
    first = monitor.pairs[0]
    assert (first.true_class, first.predicted_class) == (0, 1)
    assert first.share >= 0.3  # most of the large squares of class 0 (half the class)
    events = read_events(tmp_path / LOG)
    table = events.Tensors("errors/most_confused/text_summary")[-1].tensor_proto.string_val[0]
    rows = [line for line in table.decode().splitlines() if line.startswith("| ")][1:]
    assert rows[0].startswith("| 0 | 1 |")


def test_the_matrix_and_top_losses_equal_the_models_outputs_by_hand(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, labels, _ = quadrant_data(16, seed=2)
    train = DataLoader(TensorDataset(images, labels), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(images, labels), batch_size=10)  # uneven batches, sorted
    monitor = ConfusionMonitor(top_losses=5, worst_classes=2)
    model = QuadrantNet()
    trainer = make_trainer(
        tmp_path, [monitor], max_epochs=2, limit_train_batches=None, limit_val_batches=None
    )
    trainer.fit(model, train, val)
    model.eval()
    with torch.no_grad():
        scores = model(images)
    assert monitor.matrix is not None
    assert torch.equal(monitor.matrix, confusion_matrix(scores, labels))
    losses = F.cross_entropy(scores, labels, reduction="none")
    highest = losses.topk(5).indices
    assert monitor.top["positions"].tolist() == highest.tolist()  # positions in the data set
    assert torch.allclose(monitor.top["losses"], losses[highest], atol=1e-5)
    assert torch.equal(monitor.top["images"], images[highest])

    events = read_events(tmp_path / LOG)
    accuracy = class_accuracy(monitor.matrix)
    worst = sorted(range(4), key=lambda c: (float(accuracy[c]), c))[:2]
    logged = {tag for tag in events.Tags()["scalars"] if tag.startswith("errors/accuracy/")}
    assert logged >= {f"errors/accuracy/{c}" for c in worst}
    assert len(events.Images("errors/confusion_matrix")) == 2  # one per validation epoch
    grid = logged_image(events, "errors/top_losses")
    assert grid.shape[0] >= 96 and grid.shape[1] >= 5 * 96
    still = events.Scalars("errors/top_losses/still_there")
    assert len(still) == 1 and 0.0 <= still[0].value <= 1.0


def test_a_thousand_classes_give_bounded_pictures_and_text(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(3)
    images = torch.randn(96, 1, 16, 16, generator=generator)
    labels = torch.randint(0, 1000, (96,), generator=generator)
    loader = DataLoader(TensorDataset(images, labels), batch_size=32)
    monitor = ConfusionMonitor(top_pairs=10, max_classes_shown=20)
    trainer = make_trainer(tmp_path, [monitor], limit_val_batches=None)
    trainer.fit(QuadrantNet(classes=1000), loader, loader)
    assert len(monitor.pairs) == 10
    events = read_events(tmp_path / LOG)
    picture = logged_image(events, "errors/confusion_matrix")
    assert picture.shape[0] <= 1300 and picture.shape[1] <= 1300
    table = events.Tensors("errors/most_confused/text_summary")[-1].tensor_proto.string_val[0]
    assert sum(line.startswith("| ") for line in table.decode().splitlines()) == 11
    assert len([t for t in events.Tags()["scalars"] if t.startswith("errors/accuracy/")]) == 5


class MapModel(QuadrantNet):
    """Returns a feature map, not class scores."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net[:5](x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0])


def test_a_model_without_class_scores_fails_clearly(tmp_path: Path) -> None:
    images, labels, _ = quadrant_data(4, seed=0)
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    trainer = make_trainer(tmp_path, [ConfusionMonitor()])
    with pytest.raises(
        MisconfigurationException, match=r"MapModel's forward pass returns \(8, 16, 8, 8\)"
    ):
        trainer.fit(MapModel(), loader, loader)


class IgnoresLabels(QuadrantNet):
    """Its steps read no label (the callback is the first to)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0]).mean()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self(batch[0])


def test_labels_beyond_the_models_classes_fail_clearly(tmp_path: Path) -> None:
    images, labels, _ = quadrant_data(4, seed=0)
    loader = DataLoader(TensorDataset(images, labels + 3), batch_size=16)
    trainer = make_trainer(tmp_path, [ConfusionMonitor()])
    with pytest.raises(MisconfigurationException, match=r"ConfusionMonitor: labels: .*\[0, 3\]"):
        trainer.fit(IgnoresLabels(), loader, loader)


def test_batches_without_labels_leave_it_idle_with_one_warning(tmp_path: Path) -> None:
    images, labels, _ = quadrant_data(4, seed=0)
    train = DataLoader(TensorDataset(images, labels), batch_size=8)
    unlabelled = DataLoader(TensorDataset(images), batch_size=4)  # batches: [images]
    trainer = make_trainer(tmp_path, [ConfusionMonitor()], limit_val_batches=None)
    with pytest.warns(UserWarning, match="ConfusionMonitor: the batches carry no labels") as got:
        trainer.fit(IgnoresLabels(), train, unlabelled)
    assert sum("carry no labels" in str(warning.message) for warning in got) == 1
    assert trainer.state.finished
    logged = read_events(tmp_path / LOG).Tags()
    assert not [tag for tag in logged["images"] + logged["scalars"] if tag.startswith("errors/")]


@pytest.mark.parametrize(
    "argument", ["every_n_epochs", "top_losses", "top_pairs", "worst_classes", "max_classes_shown"]
)
def test_bad_arguments_are_named(argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        ConfusionMonitor(**{argument: 0})
