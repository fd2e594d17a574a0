"""The classes' names, when the data says them: captions and legends use them."""

from __future__ import annotations

from pytorch_lightning import Trainer

__all__ = ["class_names_of"]


def class_names_of(trainer: Trainer) -> list[str] | None:
    """The classes' names, when the fit's datamodule says them in ``class_names`` or ``classes``
    (torchvision's datasets' attribute): a sequence of strings, one per class index."""
    datamodule = getattr(trainer, "datamodule", None)
    for attribute in ("class_names", "classes"):
        names = getattr(datamodule, attribute, None)
        if (
            isinstance(names, list | tuple)
            and names
            and all(isinstance(name, str) for name in names)
        ):
            return list(names)
    return None
