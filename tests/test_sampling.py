"""Probes and embedded samples spread over a class-sorted validation set (as on disk)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import make_trainer
from torch.utils.data import ConcatDataset, DataLoader, IterableDataset, Subset, TensorDataset

from lightning_convviz import EmbeddingMonitor, SaliencyMonitor
from lightning_convviz.data import load_digits_tensors
from lightning_convviz.demo import DigitsConvNet
from lightning_convviz.functional.sampling import Reservoir, dataset_labels, spread_indices


def sorted_digits(per_class: int = 30) -> TensorDataset:
    """The digits listed class by class, ``per_class`` of each (like an ImageFolder)."""
    images, labels = load_digits_tensors(32)
    images = (images - images.mean()) / images.std()
    keep = torch.cat([(labels == c).nonzero().flatten()[:per_class] for c in range(10)])
    return TensorDataset(images[keep], labels[keep])


class Stream(IterableDataset):  # type: ignore[type-arg]
    """The same samples as a stream: cannot be indexed."""

    def __init__(self, data: TensorDataset) -> None:
        self.data = data

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return (self.data[i] for i in range(len(self.data)))


def fit_sorted(tmp_path: Path, callbacks: list[Any], val: Any) -> None:
    data = sorted_digits()
    trainer = make_trainer(tmp_path, callbacks, limit_train_batches=2, limit_val_batches=None)
    trainer.fit(DigitsConvNet(), DataLoader(data, batch_size=32, shuffle=True), val)


def test_probes_and_embedded_codes_cover_the_classes_of_a_sorted_set(tmp_path: Path) -> None:
    saliency = SaliencyMonitor(methods=("saliency",), num_probe_images=8)
    embedding = EmbeddingMonitor(max_samples=100, n_jobs=1, projector=True)
    fit_sorted(tmp_path, [saliency, embedding], DataLoader(sorted_digits(), batch_size=32))
    probe_labels = saliency.state_dict()["probe_labels"]
    assert len(set(probe_labels.tolist())) == 8  # the first 8 images were all zeros
    metadata = next((tmp_path / "run/version_0").rglob("metadata.tsv")).read_text().split()
    assert len(metadata) == 100
    assert Counter(metadata) == {str(digit): 10 for digit in range(10)}  # 10 of each digit


def test_a_stream_is_reservoir_sampled_over_the_first_validation_epoch(tmp_path: Path) -> None:
    saliency = SaliencyMonitor(methods=("saliency",), num_probe_images=8)
    embedding = EmbeddingMonitor(max_samples=100, n_jobs=1, projector=True)
    fit_sorted(tmp_path, [saliency, embedding], DataLoader(Stream(sorted_digits()), batch_size=32))
    assert len(set(saliency.state_dict()["probe_labels"].tolist())) >= 5  # not one class
    metadata = next((tmp_path / "run/version_0").rglob("metadata.tsv")).read_text().split()
    assert len(metadata) == 100 and len(set(metadata)) == 10


def test_a_loader_without_automatic_batching_is_read_by_index(tmp_path: Path) -> None:
    """A loader with ``batch_size=None`` whose sampler yields whole batches of indices (as a
    data set that lives on a GPU is read): its collate function gets batches, not samples, so
    the probe collates single samples itself and spreads over the classes as for any loader."""

    class Batched(TensorDataset):
        def __getitem__(self, index: Any) -> Any:  # an index tensor, or one int
            return tuple(tensor[index] for tensor in self.tensors)

    data = sorted_digits()
    batches = [torch.arange(start, min(start + 32, len(data))) for start in range(0, 300, 32)]
    val = DataLoader(Batched(*data.tensors), batch_size=None, sampler=batches)
    saliency = SaliencyMonitor(methods=("saliency",), num_probe_images=8)
    fit_sorted(tmp_path, [saliency], val)
    assert len(set(saliency.state_dict()["probe_labels"].tolist())) == 8  # read by index


def test_spread_indices_cover_classes_round_robin() -> None:
    labels = torch.arange(10).repeat_interleave(30)  # sorted by class
    picked = spread_indices(300, 8, labels)
    assert len({int(labels[i]) for i in picked}) == 8
    picked = spread_indices(300, 25, labels)
    assert [int(labels[i]) for i in picked[:10]] == list(range(10))  # one per class first
    assert Counter(int(labels[i]) for i in picked) == {c: 3 if c < 5 else 2 for c in range(10)}
    # a class with too few samples gives its share to the others
    uneven = torch.tensor([0] * 2 + [1] * 20)
    assert Counter(int(uneven[i]) for i in spread_indices(22, 10, uneven)) == {0: 2, 1: 8}
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="labels: expected 4 labels"):
        spread_indices(4, 2, [0, 1])


def test_labels_are_read_without_loading_samples() -> None:
    class Folder(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.targets = [0, 0, 1, 2]

        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> Any:
            raise AssertionError("no sample is loaded")

    assert dataset_labels(Folder()).tolist() == [0, 0, 1, 2]
    assert dataset_labels(Subset(Folder(), [3, 1])).tolist() == [2, 0]
    assert dataset_labels(ConcatDataset([Folder(), Folder()])).tolist() == [0, 0, 1, 2] * 2
    floats = TensorDataset(torch.zeros(3, 1), torch.rand(3))
    assert dataset_labels(floats) is None  # regression targets are not classes


def test_the_reservoir_is_uniform_and_deterministic() -> None:
    counts: Counter[int] = Counter()
    for seed in range(400):
        reservoir, slots = Reservoir(5, seed=seed), list(range(5))
        for start in range(0, 50, 10):  # 50 items in batches of 10
            for row, slot in reservoir.offer(10):
                slots[slot] = start + row
        counts.update(slots)
    # each of 50 items is kept with probability 5/50: 40 times in 400 runs (sd 6)
    assert all(20 < counts[item] < 60 for item in range(50)), counts
    first, second = Reservoir(3, seed=1), Reservoir(3, seed=1)
    assert [first.offer(7) for _ in range(3)] == [second.offer(7) for _ in range(3)]
