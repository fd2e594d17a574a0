"""The demos' data, bundled with packages so that nothing is downloaded.

- :class:`DigitsDataModule`: scikit-learn's 1797 handwritten digits, 8 x 8, upsampled.
- :class:`PhotoCropsDataModule`: crops of photographs shipped inside scikit-image and
  scikit-learn, labelled by the photograph they come from (needs scikit-image: the ``demo``
  extra).
"""

from lightning_convviz.data.digits import DigitsDataModule, load_digits_tensors
from lightning_convviz.data.photos import (
    DEFAULT_PHOTOS,
    PHOTOGRAPHS,
    CropBox,
    PhotoCropsDataModule,
    load_photographs,
)

__all__ = [
    "DEFAULT_PHOTOS",
    "PHOTOGRAPHS",
    "CropBox",
    "DigitsDataModule",
    "PhotoCropsDataModule",
    "load_digits_tensors",
    "load_photographs",
]
