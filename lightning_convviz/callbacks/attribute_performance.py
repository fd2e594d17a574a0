"""AttributePerformanceMonitor: accuracy per bin of image attributes (brightness, size, ...)."""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning import LightningModule, Trainer
from typing_extensions import override

from lightning_convviz import plots
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.callbacks.distributed import gather_rows
from lightning_convviz.callbacks.schedule import collecting_epoch
from lightning_convviz.callbacks.validation_scores import ValidationScores
from lightning_convviz.functional.attributes import (
    BUILTIN_ATTRIBUTES,
    Attribute,
    BinnedPerformance,
    binned_performance,
    evaluate_attribute,
)

__all__ = ["AttributePerformanceMonitor"]


class AttributePerformanceMonitor(ConvVizCallback):
    """Plot validation accuracy as a function of image attributes, every validation epoch.

    The ImageNet challenge analysis in the CS231n notes: which images does the model get
    wrong? For every validation image the callback measures each attribute (built in:
    ``brightness`` = mean value, ``contrast`` = standard deviation, ``foreground`` = share of
    pixels far from the border colour; or your own ``name -> function(images) -> one value per
    image``), and whether the model's prediction (read from the LightningModule's own forward
    call in ``validation_step``) is right. At the end of the epoch the values are split into
    quantile bins and one chart per attribute shows the accuracy and mean true-class
    probability per bin with the sample counts: a model that fails on faint or small digits
    shows it at once. Under DDP the measurements of all ranks are gathered.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> import torch
        >>> monitor = AttributePerformanceMonitor(
        ...     attributes={"brightness": None, "ink": lambda x: (x > 0).float().mean((1, 2, 3))})
        >>> trainer = Trainer(callbacks=[monitor])

    Logged tags:
        * ``performance/<attribute>`` (image): the chart.
        * ``performance/<attribute>/worst_bin_accuracy`` (scalar): the lowest bin accuracy.

    Args:
        attributes: ``None`` for the built-ins, or ``{name: function}``; ``None`` as a function
            picks the built-in of that name.
        bins: Quantile bins per attribute.
        every_n_epochs: Measure during every this many validation epochs.

    Raises:
        ValueError: At construction, for an unknown built-in or a non-callable attribute; during
            validation, when an attribute function returns the wrong number of values, NaN or
            infinity.
        MisconfigurationException: In ``setup``, when the Trainer has no logger.
    """

    section = "performance"
    _collective_hooks = ("on_validation_epoch_end",)

    def __init__(
        self,
        attributes: dict[str, Attribute | None] | None = None,
        bins: int = 5,
        every_n_epochs: int = 1,
    ) -> None:
        super().__init__()
        chosen: dict[str, Attribute] = {}
        for name, function in (attributes or dict.fromkeys(BUILTIN_ATTRIBUTES)).items():
            if function is None and name not in BUILTIN_ATTRIBUTES:
                raise ValueError(
                    f"attributes: {name!r} is not built in; built in are "
                    f"{sorted(BUILTIN_ATTRIBUTES)} (or pass a function)"
                )
            resolved = BUILTIN_ATTRIBUTES[name] if function is None else function
            if not callable(resolved) or not isinstance(name, str) or not name:
                raise ValueError(
                    f"attributes: expected {{name: function(images) -> values}}, got {name!r}: "
                    f"{function!r}"
                )
            chosen[name] = resolved
        if not chosen:
            raise ValueError("attributes: expected at least one attribute")
        check_positive_int("bins", bins)
        check_positive_int("every_n_epochs", every_n_epochs)
        self.attributes = chosen
        self.bins = bins
        self.every_n_epochs = every_n_epochs
        self._scores = ValidationScores("AttributePerformanceMonitor")
        self._records: list[dict[str, torch.Tensor]] = []
        #: The last epoch's results per attribute (on global rank zero).
        self.results: dict[str, BinnedPerformance] = {}
        self._chart: plots.Chart | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(attributes=sorted(self.attributes), bins=self.bins)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Any classifier can be measured: nothing to resolve."""

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled or not collecting_epoch(trainer, self.every_n_epochs):
            return
        self._records = []
        self._release_hooks()
        self._hook(self._scores.model_calls(pl_module), self._scores.keep)

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self._hooked or dataloader_idx != 0:
            self._scores.clear()
            return
        taken = self._scores.take(pl_module, batch)
        if taken is None:
            return
        images, scores, labels = taken
        probabilities = scores.float().softmax(dim=1)
        labels = labels.to(probabilities.device)
        record = {
            "correct": (probabilities.argmax(dim=1) == labels).float(),
            "true_probability": probabilities.gather(1, labels[:, None]).squeeze(1),
        }
        for name, function in self.attributes.items():
            record[name] = evaluate_attribute(name, function, images).to(probabilities.device)
        self._records.append(record)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not collecting_epoch(trainer, self.every_n_epochs)
            or not self._ranks_agree(trainer)
            or not self._hooked
        ):
            return
        self._release_hooks()
        keys = ["correct", "true_probability", *self.attributes]
        records, self._records = self._records, []
        # every rank takes part in the gathers, also one that saw no labelled batch
        joined = {
            key: gather_rows(
                trainer, torch.cat([r[key] for r in records]) if records else torch.zeros(0)
            )
            for key in keys
        }
        writer = self._writer(trainer)
        if writer is None or not len(joined["correct"]):
            return
        step, epoch = trainer.global_step, trainer.current_epoch
        self._schedule(
            trainer, pl_module, lambda: self._chart_all(trainer, writer, joined, step, epoch)
        )

    def _chart_all(
        self,
        trainer: Trainer,
        writer: Any,
        joined: dict[str, torch.Tensor],
        step: int,
        epoch: int,
    ) -> None:
        metrics = {}
        results = {}
        for name in self.attributes:
            result = binned_performance(
                joined[name], joined["correct"], joined["true_probability"], self.bins
            )
            self.results[name] = results[name] = result
            metrics[self._tag(name, "worst_bin_accuracy")] = float(result.accuracy.min())
        self._log_scalars(trainer, metrics, step)

        def chart_and_write() -> None:
            self._chart = self._chart or plots.Chart()  # made and used by one thread
            for name, result in results.items():
                picture = plots.binned_bars(
                    result.edges.numpy(),
                    result.accuracy.numpy(),
                    result.true_probability.numpy(),
                    result.counts.numpy(),
                    attribute=name,
                    title=f"epoch {epoch}: {int(result.counts.sum())} images",
                    chart=self._chart,
                )
                writer.image(self._tag(name), picture, step)

        self._later(trainer, None, chart_and_write)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw_last(trainer, pl_module)

    @override
    def _release_hooks(self) -> None:
        super()._release_hooks()
        self._scores.clear()
