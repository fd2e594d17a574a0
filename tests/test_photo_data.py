"""PhotoCropsDataModule: bundled photographs, no network, and no pixel in both sets."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch

from lightning_convviz.data import (
    DEFAULT_PHOTOS,
    PHOTOGRAPHS,
    CropBox,
    PhotoCropsDataModule,
    load_photographs,
)


def _no_network(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("PhotoCropsDataModule tried to reach the network")


@pytest.fixture(scope="module")
def bundled() -> PhotoCropsDataModule:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        patch.setattr(socket, "getaddrinfo", _no_network)
        data = PhotoCropsDataModule()
        data.setup("fit")
    return data


def test_every_photograph_loads_offline_as_rgb() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket, "getaddrinfo", _no_network)
        photos = load_photographs(tuple(PHOTOGRAPHS))
    assert set(photos) == set(PHOTOGRAPHS)
    for name, photo in photos.items():
        assert photo.ndim == 3 and photo.shape[0] == 3, name
        assert min(photo.shape[1:]) >= 300, name
        assert photo.min() >= 0.0 and photo.max() <= 1.0 and photo.std() > 0.05, name


def test_the_bundled_task_sizes_and_balance(bundled: PhotoCropsDataModule) -> None:
    assert bundled.train_set is not None and bundled.val_set is not None
    assert bundled.class_names == list(DEFAULT_PHOTOS) and bundled.num_classes == 14
    train_images, train_labels = bundled.train_set.tensors
    val_images, val_labels = bundled.val_set.tensors
    assert train_images.shape == (14 * 400, 3, 32, 32) and val_images.shape == (14 * 48, 3, 32, 32)
    assert Counter(train_labels.tolist()) == dict.fromkeys(range(14), 400)
    assert Counter(val_labels.tolist()) == dict.fromkeys(range(14), 48)
    # standardised with the training crops' statistics
    torch.testing.assert_close(train_images.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(train_images.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3, rtol=0)
    sides = [box.size for box in bundled.train_boxes]
    assert min(sides) == 40 and max(sides) == 96
    assert 0.4 < np.mean([box.flipped for box in bundled.train_boxes]) < 0.6
    assert not any(box.flipped for box in bundled.val_boxes)


def test_the_bundled_train_and_val_boxes_never_overlap(bundled: PhotoCropsDataModule) -> None:
    photos = load_photographs(DEFAULT_PHOTOS)
    for index, photo in enumerate(photos.values()):
        train = torch.tensor([_edges(b) for b in bundled.train_boxes if b.photo == index])
        val = torch.tensor([_edges(b) for b in bundled.val_boxes if b.photo == index])
        height, width = photo.shape[1:]
        for boxes in (train, val):
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] <= height).all()
            assert (boxes[:, 2] >= 0).all() and (boxes[:, 3] <= width).all()
        rows_meet = (train[:, None, 0] < val[None, :, 1]) & (val[None, :, 0] < train[:, None, 1])
        cols_meet = (train[:, None, 2] < val[None, :, 3]) & (val[None, :, 2] < train[:, None, 3])
        assert not (rows_meet & cols_meet).any(), DEFAULT_PHOTOS[index]
        # the held-out band is in the middle: training crops come from both sides of it
        if width >= height:
            assert train[:, 3].min() <= val[:, 2].min() and train[:, 2].max() >= val[:, 3].max()


def _edges(box: CropBox) -> tuple[int, int, int, int]:
    return box.top, box.top + box.size, box.left, box.left + box.size


def test_the_build_is_deterministic_and_the_seed_matters(bundled: PhotoCropsDataModule) -> None:
    assert bundled.train_set is not None and bundled.val_set is not None
    again = PhotoCropsDataModule()
    again.setup("fit")
    assert again.train_set is not None and again.val_set is not None
    assert again.train_boxes == bundled.train_boxes
    assert torch.equal(again.train_set.tensors[0], bundled.train_set.tensors[0])
    assert torch.equal(again.val_set.tensors[0], bundled.val_set.tensors[0])
    other = PhotoCropsDataModule(seed=1, train_crops_per_photo=4, val_crops_per_photo=2)
    other.setup("fit")
    assert other.train_boxes[:4] != bundled.train_boxes[:4]


def _coordinate_photo(height: int, width: int) -> np.ndarray:
    """Each pixel says where it is: red = row / height, green = column / width."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.stack([rows / height, cols / width, np.full_like(rows, 0.5, float)], axis=2)


@pytest.mark.parametrize("fraction", [0.2, 0.25, 0.4])
def test_no_pixel_is_in_both_sets_read_from_the_crops_themselves(fraction: float) -> None:
    shapes = {"landscape": (64, 150), "portrait": (140, 70), "square": (96, 96)}
    data = PhotoCropsDataModule(
        photos={name: _coordinate_photo(*shape) for name, shape in shapes.items()},
        image_size=16,
        crop_sides=(16, 16),  # crops are cut, not resized: their pixels are the photograph's
        train_crops_per_photo=300,
        val_crops_per_photo=60,
        held_out_fraction=fraction,
        batch_size=1000,
    )
    data.setup("fit")
    seen: dict[str, list[set[tuple[int, int]]]] = {name: [set(), set()] for name in shapes}
    for which, loader in enumerate((data.train_dataloader(), data.val_dataloader())):
        for images, labels in loader:
            raw = data.unstandardise(images)
            for image, label in zip(raw, labels.tolist(), strict=True):
                name = data.class_names[label]
                height, width = shapes[name]
                rows = torch.round(image[0] * height).long().flatten().tolist()
                cols = torch.round(image[1] * width).long().flatten().tolist()
                seen[name][which] |= set(zip(rows, cols, strict=True))
    for name, (train_pixels, val_pixels) in seen.items():
        assert train_pixels and val_pixels, name
        assert not train_pixels & val_pixels, name
        # and the validation pixels are a band of the longer side's middle
        height, width = shapes[name]
        along = [c for _, c in val_pixels] if width >= height else [r for r, _ in val_pixels]
        long = max(height, width)
        assert max(along) - min(along) + 1 <= round(long * fraction)
        assert abs((max(along) + min(along)) / 2 - (long - 1) / 2) <= long * fraction / 2


def test_each_crop_is_its_box_flipped_as_said() -> None:
    photo = _coordinate_photo(64, 128)
    data = PhotoCropsDataModule(
        photos={"a": photo, "b": photo[::-1].copy()},
        image_size=16,
        crop_sides=(16, 16),
        train_crops_per_photo=40,
        val_crops_per_photo=5,
    )
    data.setup("fit")
    assert data.train_set is not None
    raw = data.unstandardise(data.train_set.tensors[0])
    for image, box in zip(raw, data.train_boxes, strict=True):
        source = [photo, photo[::-1]][box.photo]
        expected = torch.from_numpy(
            source[box.top : box.top + 16, box.left : box.left + 16].copy()
        ).permute(2, 0, 1)
        expected = expected.flip(-1) if box.flipped else expected
        torch.testing.assert_close(image.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"photos": ["astronaut", "lena"]}, "photos"),
        ({"photos": "astronaut"}, "photos"),
        ({"photos": ["astronaut"]}, "photos"),
        ({"held_out_fraction": 1.0}, "held_out_fraction"),
        ({"crop_sides": (50, 40)}, "crop_sides"),
        ({"image_size": 0}, "image_size"),
        ({"train_crops_per_photo": 0}, "train_crops_per_photo"),
    ],
)
def test_bad_arguments_name_themselves(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}:"):
        PhotoCropsDataModule(**kwargs)


def test_a_crop_too_large_for_a_photograph_says_which_in_setup() -> None:
    data = PhotoCropsDataModule(
        photos={"wide": np.zeros((60, 400)), "small": np.zeros((80, 100))}, crop_sides=(20, 50)
    )
    with pytest.raises(ValueError, match=r"crop_sides: .*'small' \(80 x 100 px"):
        data.setup("fit")
