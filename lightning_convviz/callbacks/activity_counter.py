"""One count of each watched activation's positive elements per training batch, read by every
callback that asks for it.

:class:`~lightning_convviz.ActivationStatsMonitor` and
:class:`~lightning_convviz.LearningRateDoctor` both read which filters are dead from the same
default sites (every conv block's activation). With an :class:`ActivityCounter` from the
Trainer's context (:meth:`~lightning_convviz.callbacks.context.TrainerContext.activity`) both
read one set of hooks and one count per call (a doctor and a monitor on the same batch see the
same numbers, counted once); the hooks are on the model only while some callback reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import torch

from lightning_convviz.functional.activity import channel_positive_counts
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["ActivityCounter", "CountReader"]

#: Called with a site and its output tensor; it asks :meth:`ActivityCounter.counts` for the
#: numbers (inside the reader, so that a failure is the reader's own).
CountReader = Callable[[Site, torch.Tensor], None]


class ActivityCounter:
    """Hooks ``sites`` while at least one reader is subscribed, and counts each call's positive
    elements per channel at most once for all of them.

    Example:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
        >>> counter = ActivityCounter(CallSites(model, {"1": model[1]}))
        >>> seen = []
        >>> with counter.reading("me", lambda site, out: seen.append(counter.counts(site, out))):
        ...     _ = model(torch.ones(1, 1, 4, 4))
        >>> [(tuple(counts.shape), elements) for counts, elements in seen]
        [((2,), 4)]
    """

    def __init__(self, sites: CallSites) -> None:
        self.sites = sites
        self._readers: dict[object, CountReader] = {}
        self._hooks = ExitStack()
        self._reading = False
        self._counted: tuple[torch.Tensor, tuple[torch.Tensor, int]] | None = None

    @contextmanager
    def reading(self, owner: object, reader: CountReader) -> Iterator[None]:
        """Inside the block, call ``owner``'s ``reader`` at every watched call (the hooks go on
        with the first reader and come off with the last, also when the block raises)."""
        if not self._readers:
            self._hooks.enter_context(self.sites.attached(self._read))
        self._readers[owner] = reader
        try:
            yield
        finally:
            self._readers.pop(owner, None)
            if not self._readers:
                self._hooks.close()

    def close(self) -> None:
        """Take every hook off, whoever still reads."""
        self._readers.clear()
        self._hooks.close()

    def counts(self, site: Site, output: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(positive elements per channel, elements per channel)`` of the call being read,
        channels moved to dim 1 as the site's layout says; counted at its first reader."""
        if self._counted is not None and self._counted[0] is output:
            return self._counted[1]
        activation = output.detach().movedim(self.sites.channel_dim(site), 1)
        elements = activation.numel() // max(activation.shape[1], 1)
        counted = (channel_positive_counts(activation), elements)
        if self._reading:  # kept for the call's other readers only
            self._counted = (output, counted)
        return counted

    def _read(self, site: Site, output: torch.Tensor) -> None:
        if output.ndim < 2:
            return
        self._reading, self._counted = True, None
        try:
            for reader in list(self._readers.values()):
                reader(site, output)
        finally:
            self._reading, self._counted = False, None
