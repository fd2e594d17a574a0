"""What the installed Lightning can serve: said once, at import, instead of a riddle later."""

from __future__ import annotations

import warnings
from importlib import metadata

__all__ = ["UNIFIED_LIGHTNING_FLOOR", "check_unified_lightning"]

#: The first ``lightning`` whose ``lightning.pytorch`` Trainer accepts callbacks built on
#: ``pytorch_lightning`` (older ones stop with "ValueError: Expected a parent").
UNIFIED_LIGHTNING_FLOOR = (2, 6)


def check_unified_lightning() -> bool:
    """Warn when the unified ``lightning`` package is installed at a version whose
    ``lightning.pytorch`` Trainer cannot take these callbacks. Returns whether it can (or
    ``lightning`` is not installed).

    Example:
        >>> check_unified_lightning()  # lightning >= 2.6, or none installed
        True
    """
    try:
        found = metadata.version("lightning")
    except metadata.PackageNotFoundError:
        return True
    try:
        major, minor = (int(part) for part in found.split(".")[:2])
    except ValueError:
        return True  # a version we cannot read: say nothing rather than guess
    if (major, minor) >= UNIFIED_LIGHTNING_FLOOR:
        return True
    floor = ".".join(map(str, UNIFIED_LIGHTNING_FLOOR))
    warnings.warn(
        f"lightning {found} is installed: its lightning.pytorch Trainer accepts the "
        f"lightning_convviz callbacks from lightning {floor} on (older ones stop with "
        "'ValueError: Expected a parent'). Use pytorch_lightning's Trainer (import "
        f"pytorch_lightning as pl), or upgrade: pip install 'lightning>={floor}'.",
        stacklevel=2,
    )
    return False
