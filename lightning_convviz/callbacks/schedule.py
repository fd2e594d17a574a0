"""When: the epochs a callback draws or collects at (the same answer on every rank)."""

from __future__ import annotations

from pytorch_lightning import Trainer

__all__ = ["collecting_epoch", "last_epoch"]


def last_epoch(trainer: Trainer) -> bool:
    """Whether this is the last epoch of the fit, when ``max_epochs`` sets one."""
    limit = getattr(trainer, "max_epochs", None)
    return limit is not None and limit >= 1 and trainer.current_epoch >= limit - 1


def collecting_epoch(trainer: Trainer, every_n_epochs: int) -> bool:
    """Whether this validation epoch is one that a dataset callback collects: not the sanity
    check; every ``every_n_epochs``-th epoch and the last one (the same answer on every rank)."""
    if trainer.sanity_checking:
        return False
    return (trainer.current_epoch + 1) % every_n_epochs == 0 or last_epoch(trainer)
