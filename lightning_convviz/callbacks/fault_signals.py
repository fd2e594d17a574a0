"""How the doctors read the signals of the fault checks while training: the first batches'
input channels, every batch's class scores against its labels (training and validation), and
on measured steps each weight's relative gradient, each parameter's change and each saturating
activation's share at its asymptotes.

Everything stays on the device as sums until an epoch's end (one collective, one host copy) or a
measured step (joined to the learning-rate measurement's own copy). The class scores of a few
batches are copied and summed together: the dozen small operations of a sum cost more than the
copy on a fast small model, where each batch's would be a few percent of the step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from pytorch_lightning import Trainer

from lightning_convviz.callbacks.batches import batch_labels
from lightning_convviz.callbacks.lr_records import StepSnapshot
from lightning_convviz.functional.run_signals import (
    SATURATING_RANGES,
    channel_moments,
    channel_sums,
    classification_sums,
    relative_gradient_norms,
    saturated_share,
)
from lightning_convviz.functional.sites import Site

__all__ = [
    "INPUT_BATCHES",
    "NEGLIGIBLE_GRADIENT",
    "EpochTotals",
    "FaultSignalReader",
]

#: The input check reads the first this many training batches.
INPUT_BATCHES = 4

#: A gradient below this times its parameter's norm moves nothing a float can hold (a bias
#: before a BatchNorm, whose gradient is zero but for rounding): not a frozen parameter.
NEGLIGIBLE_GRADIENT = 1e-6

#: The class scores of at most this many batches are summed together ...
SCORE_BATCHES_PER_SUM = 16
#: ... and of at most this many values (a megabyte or two of device memory held).
SCORE_VALUES_PER_SUM = 1 << 20


@dataclass(frozen=True)
class EpochTotals:
    """An epoch's sums over every rank, read on the host."""

    #: Each input channel's mean and standard deviation over the first batches (``None``: not
    #: read this epoch).
    input_moments: tuple[list[float], list[float]] | None
    #: The first batch's cross-entropy and class-score root mean square (``None``: not this
    #: epoch).
    first_batch: tuple[float, float] | None
    train: list[float] | None
    val: list[float] | None


class FaultSignalReader:
    """The device-side sums of the fault signals of one rank (see the module docstring)."""

    def __init__(self) -> None:
        self.classes: int | None = None
        self.input_channels: int | None = None
        self._scores: torch.Tensor | None = None
        self._input_sums: torch.Tensor | None = None
        self._input_batches = 0
        self._first: torch.Tensor | None = None
        self._first_pending = False
        self._train: torch.Tensor | None = None  # classification_sums, added up
        self._val: torch.Tensor | None = None
        # batches whose scores and labels are copied but not yet summed, by training or not
        self._unsummed: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {
            True: [],
            False: [],
        }
        self._saturation: dict[str, torch.Tensor] = {}
        self._saturation_limits: dict[str, tuple[float, float]] = {}

    # -- hooks ---------------------------------------------------------------------------------

    def keep_scores(self, _site: Site, output: torch.Tensor) -> None:
        """The model's output, where it can be class scores (``N x C``, C at least 2)."""
        if output.ndim == 2 and output.shape[1] >= 2 and output.is_floating_point():
            self._scores = output.detach()

    def keep_saturation(self, site: Site, output: torch.Tensor) -> None:
        """A saturating activation's share of outputs at its asymptotes (its first call in
        the step; :meth:`watch_saturation` says the layers)."""
        limits = self._saturation_limits.get(site.module)
        if limits is not None and site.module not in self._saturation:
            self._saturation[site.module] = saturated_share(output, *limits)

    def watch_saturation(self, layers: Mapping[str, torch.nn.Module]) -> None:
        """The saturating activations :meth:`keep_saturation` reads, by name."""
        self._saturation_limits = {
            name: SATURATING_RANGES[type(module)] for name, module in layers.items()
        }

    @property
    def saturation_names(self) -> list[str]:
        """The layers read this step, in the order :meth:`step_tensors` gives their shares."""
        return sorted(self._saturation)

    # -- batches -------------------------------------------------------------------------------

    def start_run(self, first_step: bool) -> None:
        """At the start of fit: the input check reads the next batches; the first batch's
        loss is read when the run starts at step 0 (not on a resume); what a fit that stopped
        within an epoch left unread is dropped."""
        self._input_batches = 0
        self._first_pending = first_step
        self._input_sums = self._first = self._train = self._val = None
        self._unsummed = {True: [], False: []}

    @property
    def reading_inputs(self) -> bool:
        """Whether the input check still reads training batches."""
        return self._input_batches < INPUT_BATCHES

    def read_inputs(self, inputs: torch.Tensor | None) -> None:
        """Add a training batch's input channels while the first batches are read."""
        if inputs is None or self._input_batches >= INPUT_BATCHES:
            return
        sums = channel_sums(inputs)
        if self.input_channels is None:
            self.input_channels = int(sums.shape[1])
        if sums.shape[1] != self.input_channels:
            return
        self._input_batches += 1
        self._input_sums = sums if self._input_sums is None else self._input_sums + sums

    def read_batch(self, batch: Any, training: bool) -> None:
        """Add the kept class scores against the batch's labels (the scores are then
        forgotten); copies of them wait to be summed with the next batches'."""
        scores, self._scores = self._scores, None
        if scores is None:
            return
        labels = batch_labels(batch)
        if labels is None or len(labels) != len(scores):
            return
        if self.classes is None:
            self.classes = int(scores.shape[1])
        if scores.shape[1] != self.classes:
            return
        if training and self._first_pending:  # the run's first batch, read on its own
            self._first_pending = False
            sums = classification_sums(scores, labels, self.classes)
            self._first = sums[:4]
            self._add_sums(sums, training=True)
            return
        # copies: a compiled model's outputs may be overwritten by its next call
        unsummed = self._unsummed[training]
        unsummed.append((scores.clone(), labels.clone()))
        values = sum(s.numel() for s, _ in unsummed)
        if len(unsummed) >= SCORE_BATCHES_PER_SUM or values >= SCORE_VALUES_PER_SUM:
            self._sum_scores(training)

    def _sum_scores(self, training: bool) -> None:
        """Add the waiting batches' classification sums to the epoch's."""
        unsummed, self._unsummed[training] = self._unsummed[training], []
        if not unsummed or self.classes is None:
            return
        scores = torch.cat([s for s, _ in unsummed])
        labels = torch.cat([labels.to(scores.device) for _, labels in unsummed])
        self._add_sums(classification_sums(scores, labels, self.classes), training)

    def _add_sums(self, sums: torch.Tensor, training: bool) -> None:
        if training:
            self._train = sums if self._train is None else self._train + sums
        else:
            self._val = sums if self._val is None else self._val + sums

    def forget_scores(self) -> None:
        self._scores = None

    # -- measured steps ------------------------------------------------------------------------

    def step_tensors(self, snapshot: StepSnapshot) -> list[torch.Tensor]:
        """The measured step's layer signals on the device, to join the step's host copy:
        each weight's relative gradient, each parameter's unchanged flag, each saturating
        layer's share (read with :meth:`step_values`)."""
        indices = list(snapshot.weights.values())
        relative = relative_gradient_norms(
            [snapshot.grads[i] for i in indices], [snapshot.before[i] for i in indices]
        )
        unchanged = [  # had a gradient that matters, and did not move
            (
                (p.detach() == b).all()
                & (g.float().norm() > NEGLIGIBLE_GRADIENT * b.float().norm())
            ).float()
            for p, b, g in zip(snapshot.params, snapshot.before, snapshot.grads, strict=True)
        ]
        device = snapshot.before[0].device if snapshot.before else torch.device("cpu")
        shares = [self._saturation[name].float() for name in sorted(self._saturation)]
        return [relative.to(device), torch.stack(unchanged), torch.stack(shares or [relative[:0]])]

    def clear_step(self) -> None:
        self._saturation = {}

    # -- epochs --------------------------------------------------------------------------------

    def epoch_totals(self, trainer: Trainer, device: torch.device) -> EpochTotals:
        """The epoch's sums over every rank in one collective and one host copy; the sums
        start again."""
        self._sum_scores(training=True)
        self._sum_scores(training=False)
        classes = self.classes or 0
        channels = self.input_channels or 0
        parts = [
            _or_zeros(self._input_sums, 3 * channels, device),
            _or_zeros(self._first, 4, device),
            _or_zeros(self._train, 4 + classes, device),
            _or_zeros(self._val, 4 + classes, device),
        ]
        flags = torch.tensor(
            [float(p is not None) for p in (self._input_sums, self._first)], device=device
        ).double()
        joined = torch.cat([flags, *parts])
        if trainer.world_size > 1:
            joined = trainer.strategy.reduce(joined, reduce_op="sum")
        values: list[float] = joined.tolist()  # the one host copy of the epoch's fault sums
        inputs_read, first_read = values[0] > 0, values[1] > 0
        values = values[2:]
        input_sums, values = values[: 3 * channels], values[3 * channels :]
        first, values = values[:4], values[4:]
        train, val = values[: 4 + classes], values[4 + classes :]
        moments = None
        if inputs_read and self._input_sums is not None:
            moments = channel_moments(torch.tensor(input_sums).reshape(3, channels))
        first_batch = None
        if first_read and first[0] > 0:
            first_batch = (first[2] / first[0], math.sqrt(max(first[3], 0.0) / first[0]))
        self._input_sums = self._first = None
        self._train = self._val = None
        return EpochTotals(
            moments,
            first_batch,
            train if classes and train[0] > 0 else None,
            val if classes and val[0] > 0 else None,
        )


def _or_zeros(sums: torch.Tensor | None, size: int, device: torch.device) -> torch.Tensor:
    if sums is None:
        return torch.zeros(size, dtype=torch.float64, device=device)
    return sums.flatten().to(device, torch.float64)
