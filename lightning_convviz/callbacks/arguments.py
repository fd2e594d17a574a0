"""Argument checks of the callbacks: each raises ``ValueError`` at construction, naming the
argument and what it allows."""

from __future__ import annotations

import math

from torch import nn

from lightning_convviz.functional.arguments import check_int

__all__ = ["check_layers_argument", "check_number", "check_positive_int"]


def check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (or None if allowed)."""
    check_int(name, value, allow_none=allow_none)


def check_layers_argument(layers: object) -> None:
    """Raise ``ValueError`` unless ``layers`` has a shape :func:`resolve_layers` accepts."""
    if layers is None:
        return
    items = list(layers) if isinstance(layers, (list, tuple)) else [layers]
    valid = bool(items) and all(
        isinstance(item, (str, nn.Module))
        or (isinstance(item, type) and issubclass(item, nn.Module))
        for item in items
    )
    if not valid:
        raise ValueError(
            "layers: expected None, a module name or glob, a module, a module type, or a "
            f"non-empty list of those; got {layers!r}"
        )


def check_number(
    name: str, value: object, above: float = -math.inf, at_most: float = math.inf
) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is a number (not a bool) in
    ``(above, at_most]``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not above < value <= at_most
    ):
        raise ValueError(f"{name}: expected a number in ({above}, {at_most}], got {value!r}")
