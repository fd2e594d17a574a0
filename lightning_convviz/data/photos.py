"""PhotoCropsDataModule: crops of photographs that ship inside scikit-image and scikit-learn.

A classification task on natural-image statistics with nothing to download: each class is one
photograph, each sample a square crop of it at a random position and scale, shrunk to
``image_size``. A band across the middle of every photograph's longer side is held out:
validation crops come only from there, training crops only from the two parts beside it, so no
pixel is in both sets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from lightning_convviz.data.in_memory import InMemoryDataModule

__all__ = ["DEFAULT_PHOTOS", "PHOTOGRAPHS", "CropBox", "PhotoCropsDataModule", "load_photographs"]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        try:
            import skimage.data
        except ImportError as error:  # pragma: no cover - the dev extras install it
            raise ImportError(
                "PhotoCropsDataModule needs scikit-image for its photographs: "
                "pip install 'lightning_convviz[demo]' (or scikit-image)"
            ) from error
        if name == "motorcycle":
            image: np.ndarray = skimage.data.stereo_motorcycle()[0]  # type: ignore[no-untyped-call]
        else:
            image = getattr(skimage.data, name)()
        return image

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        image: np.ndarray = load_sample_image(filename)
        return image

    return load


#: Every photograph the module can load, by name: 14 from scikit-image, 2 from scikit-learn.
PHOTOGRAPHS: dict[str, Callable[[], np.ndarray]] = {
    **{
        name: _skimage(name)
        for name in (
            "astronaut",
            "chelsea",
            "coffee",
            "rocket",
            "motorcycle",
            "immunohistochemistry",
            "hubble_deep_field",
            "retina",
            "brick",
            "grass",
            "gravel",
            "camera",
            "coins",
            "moon",
        )
    },
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}

#: The demo's classes: seven colour photographs (a person, a cat, a cup, a rocket, a motorcycle,
#: a temple, a flower), a stained tissue and six grey ones (brick, grass and gravel textures,
#: a cameraman, coins, the moon). Within the grey ones only texture and shape tell the classes
#: apart. Left out: the Hubble deep field and the retina, whose crops are mostly black.
DEFAULT_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle",
    "china",
    "flower",
    "immunohistochemistry",
    "brick",
    "grass",
    "gravel",
    "camera",
    "coins",
    "moon",
)


def load_photographs(names: Sequence[str] = DEFAULT_PHOTOS) -> dict[str, torch.Tensor]:
    """The named photographs as ``3 x H x W`` floats in ``[0, 1]`` (grey ones repeated to RGB).

    Raises:
        ValueError: A name that is not in :data:`PHOTOGRAPHS`.
    """
    _check_names(names)
    return {name: _as_rgb_tensor(PHOTOGRAPHS[name](), name) for name in names}


def _check_names(names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in PHOTOGRAPHS]
    if unknown or not names or isinstance(names, str):
        raise ValueError(f"photos: expected names of {sorted(PHOTOGRAPHS)}, got {names!r}")


def _as_rgb_tensor(image: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"photos[{name!r}]: expected H x W (x 3), got shape {array.shape}")
    array = array[:, :, :3]
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    return torch.from_numpy(np.array(array)).permute(2, 0, 1).float() / scale


@dataclass(frozen=True)
class CropBox:
    """Where a crop was cut: ``photo[:, top : top + size, left : left + size]``, maybe flipped."""

    photo: int
    top: int
    left: int
    size: int
    flipped: bool = False

    def overlaps(self, other: CropBox) -> bool:
        """Whether the two boxes share a pixel of the same photograph."""
        return (
            self.photo == other.photo
            and self.top < other.top + other.size
            and other.top < self.top + self.size
            and self.left < other.left + other.size
            and other.left < self.left + self.size
        )


@dataclass(frozen=True)
class _Region:
    top: int
    left: int
    height: int
    width: int


def _split(height: int, width: int, held_out_fraction: float) -> tuple[list[_Region], _Region]:
    """The held-out band across the middle of the longer side, and the two parts beside it."""
    long, short = max(height, width), min(height, width)
    band = round(long * held_out_fraction)
    start = (long - band) // 2
    spans = [(0, start), (start + band, long - start - band)]
    if width >= height:
        return [_Region(0, a, short, n) for a, n in spans], _Region(0, start, short, band)
    return [_Region(a, 0, n, short) for a, n in spans], _Region(start, 0, band, short)


def _draw_boxes(
    photo: int,
    regions: Sequence[_Region],
    count: int,
    sides: tuple[int, int],
    flips: bool,
    generator: torch.Generator,
) -> list[CropBox]:
    """``count`` boxes, each inside one of ``regions`` (chosen in proportion to its area)."""
    low, high = sides
    areas = torch.tensor([float(r.height * r.width) for r in regions])
    which = torch.multinomial(areas, count, replacement=True, generator=generator)
    size = torch.randint(low, high + 1, (count,), generator=generator)
    top = torch.rand(count, generator=generator)
    left = torch.rand(count, generator=generator)
    flipped = torch.rand(count, generator=generator) < 0.5
    boxes = []
    for r, s, t, x, f in zip(which.tolist(), size.tolist(), top, left, flipped, strict=True):
        region = regions[r]
        boxes.append(
            CropBox(
                photo,
                region.top + int(t * (region.height - s + 1)),
                region.left + int(x * (region.width - s + 1)),
                s,
                bool(f) and flips,
            )
        )
    return boxes


def _cut(photos: Sequence[torch.Tensor], boxes: Sequence[CropBox], image_size: int) -> torch.Tensor:
    crops = torch.empty(len(boxes), 3, image_size, image_size)
    for index, box in enumerate(boxes):
        crop = photos[box.photo][:, box.top : box.top + box.size, box.left : box.left + box.size]
        if box.size != image_size:
            crop = F.interpolate(
                crop[None], size=(image_size, image_size), mode="bilinear", antialias=True
            )[0]
        crops[index] = crop.flip(-1) if box.flipped else crop
    return crops.clamp_(0.0, 1.0)


class PhotoCropsDataModule(InMemoryDataModule):
    """Crops of bundled photographs, one class per photograph, with a held-out band of each.

    Training crops: ``train_crops_per_photo`` squares per photograph at random positions, with
    sides drawn from ``crop_sides`` (in the photograph's pixels), half of them flipped left to
    right, shrunk to ``image_size``. Validation crops (``val_crops_per_photo``, not flipped) are
    drawn the same way from a band across the middle of the photograph's longer side,
    ``held_out_fraction`` of it wide, where no training crop reaches (they come from the two
    parts beside it): no pixel is in both sets (``train_boxes`` and ``val_boxes``
    say where each crop was cut). Both sets are drawn once, in ``setup``, from ``seed``, and
    standardised per channel with the training crops' mean and deviation. Nothing is
    downloaded: the photographs ship inside scikit-image (the ``demo`` extra) and scikit-learn.
    ``class_names`` names the classes; the callbacks' captions and legends use it.

    Example:
        >>> data = PhotoCropsDataModule(train_crops_per_photo=8, val_crops_per_photo=2)
        >>> data.setup("fit")
        >>> images, labels = next(iter(data.val_dataloader()))
        >>> tuple(images.shape), data.num_classes
        ((28, 3, 32, 32), 14)

    Args:
        photos: Names of :data:`PHOTOGRAPHS` (the classes, in order), or your own photographs by
            name (``H x W`` or ``H x W x 3`` arrays or tensors; uint8, or floats in ``[0, 1]``).
        batch_size: Crops per batch.
        image_size: Side of the crops the model sees.
        crop_sides: Smallest and largest side of a crop in the photograph's pixels.
        train_crops_per_photo: Training crops cut from each photograph.
        val_crops_per_photo: Validation crops cut from each photograph's held-out band.
        held_out_fraction: Width of the held-out band, as a share of each photograph's longer
            side.
        centre_crops: Subtract each crop's own mean colour (before standardising), so that
            the mean colour of a crop, often enough to tell its photograph, is gone.
        seed: Seed of the crops and of the training loader's shuffling.
    """

    def __init__(
        self,
        photos: Sequence[str] | Mapping[str, np.ndarray | torch.Tensor] = DEFAULT_PHOTOS,
        batch_size: int = 64,
        image_size: int = 32,
        crop_sides: tuple[int, int] = (40, 96),
        train_crops_per_photo: int = 400,
        val_crops_per_photo: int = 48,
        held_out_fraction: float = 0.25,
        centre_crops: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(batch_size, seed)
        if isinstance(photos, Mapping):
            self.class_names = list(photos)
            self._given: dict[str, torch.Tensor] | None = {
                name: _as_rgb_tensor(np.asarray(image), name) for name, image in photos.items()
            }
        else:
            _check_names(photos)
            self.class_names = list(photos)
            self._given = None
        if len(self.class_names) < 2:
            raise ValueError(f"photos: expected at least 2 photographs, got {self.class_names}")
        if not 0.0 < held_out_fraction < 1.0:
            raise ValueError(
                f"held_out_fraction: expected a number in (0, 1), got {held_out_fraction!r}"
            )
        low, high = crop_sides
        if not 1 <= low <= high:
            raise ValueError(f"crop_sides: expected (smallest, largest) >= 1, got {crop_sides!r}")
        for name, value in (
            ("batch_size", batch_size),
            ("image_size", image_size),
            ("train_crops_per_photo", train_crops_per_photo),
            ("val_crops_per_photo", val_crops_per_photo),
        ):
            if value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        self.image_size = image_size
        self.crop_sides = (int(low), int(high))
        self.train_crops_per_photo = train_crops_per_photo
        self.val_crops_per_photo = val_crops_per_photo
        self.held_out_fraction = held_out_fraction
        self.centre_crops = centre_crops
        self.train_boxes: list[CropBox] = []
        self.val_boxes: list[CropBox] = []
        self.mean = torch.zeros(3)
        self.std = torch.ones(3)

    @property
    def num_classes(self) -> int:
        """How many photographs, that is classes."""
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        photos = list((self._given or load_photographs(self.class_names)).values())
        generator = torch.Generator().manual_seed(self.seed)
        for index, (name, photo) in enumerate(zip(self.class_names, photos, strict=True)):
            height, width = photo.shape[1:]
            train_regions, val_region = _split(height, width, self.held_out_fraction)
            for part, region in (
                ("held-out band", val_region),
                ("training part", train_regions[0]),
            ):
                narrowest = min(region.height, region.width)
                if narrowest < self.crop_sides[1]:
                    raise ValueError(
                        f"crop_sides: the largest side {self.crop_sides[1]} does not fit in "
                        f"photograph {name!r} ({photo.shape[1]} x {photo.shape[2]} px; each "
                        f"{part} is {narrowest} px across); lower it or change held_out_fraction"
                    )
            self.train_boxes += _draw_boxes(
                index, train_regions, self.train_crops_per_photo, self.crop_sides, True, generator
            )
            self.val_boxes += _draw_boxes(
                index, [val_region], self.val_crops_per_photo, self.crop_sides, False, generator
            )
        train_images = _cut(photos, self.train_boxes, self.image_size)
        val_images = _cut(photos, self.val_boxes, self.image_size)
        if self.centre_crops:
            train_images -= train_images.mean(dim=(2, 3), keepdim=True)
            val_images -= val_images.mean(dim=(2, 3), keepdim=True)
        self.mean = train_images.mean(dim=(0, 2, 3))
        self.std = train_images.std(dim=(0, 2, 3)).clamp_min(1e-6)
        self.train_set = TensorDataset(
            self.standardise(train_images), torch.tensor([b.photo for b in self.train_boxes])
        )
        self.val_set = TensorDataset(
            self.standardise(val_images), torch.tensor([b.photo for b in self.val_boxes])
        )

    def standardise(self, images: torch.Tensor) -> torch.Tensor:
        """Images in ``[0, 1]`` as the model sees them (the training crops' statistics)."""
        return (images - self.mean[:, None, None]) / self.std[:, None, None]

    def unstandardise(self, images: torch.Tensor) -> torch.Tensor:
        """The model's inputs back in ``[0, 1]`` (around 0 with ``centre_crops``)."""
        return images * self.std[:, None, None] + self.mean[:, None, None]
