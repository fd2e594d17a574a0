"""ActivationStatsMonitor: sparsity and dead filters of every conv block, tracked while training."""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

import torch
from pytorch_lightning import LightningModule, Trainer
from typing_extensions import override

from lightning_convviz import render
from lightning_convviz.callbacks.activity_counter import ActivityCounter
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.functional.activity import (
    add_positive_counts,
    dead_channels,
    dead_fraction,
    sparsity,
)
from lightning_convviz.functional.capture import LayerSpec, conv_layers
from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.sites import CallSites, Site, split_selector

__all__ = ["ActivationStatsMonitor"]

# One logging interval's accumulation: {site: (positive counts per channel, elements per channel)}
_Chunk = dict[Site, tuple[torch.Tensor, int]]


class ActivationStatsMonitor(ConvVizCallback):
    """Log how sparse each layer's activations are and which filters are dead, during training.

    On every training step, forward hooks (registered for that step only) count, per channel and
    on the model's device, the elements that are positive. Every ``every_n_steps`` steps the
    counts of the last ``window_steps`` steps are summed across DDP ranks, moved to the host once,
    and judged:

    * **sparsity**: the fraction of elements that are not positive (after a ReLU: the fraction of
      zeros);
    * **dead filters**: channels with no positive element for any input of the window. A rising
      dead fraction is the classic sign of a learning rate that is too high.

    Each call of a module is its own site: torchvision's ``Bottleneck`` calls one ``relu`` three
    times, and a channel dead after ``bn1`` but alive after the residual sum reads dead at
    ``layer1.0.relu:1`` and alive at ``layer1.0.relu:3`` (site names: see
    :mod:`lightning_convviz.functional.sites`). Sites default to every conv block's activation,
    found from the calls of the first training forward pass (see
    :data:`lightning_convviz.functional.ACTIVATION_SITES`; an info message lists them).

    Example:
        >>> from pytorch_lightning import Trainer
        >>> from pytorch_lightning.loggers import TensorBoardLogger
        >>> trainer = Trainer(
        ...     callbacks=[ActivationStatsMonitor(every_n_steps=10)],
        ...     logger=TensorBoardLogger("runs"),
        ... )

    Logged tags (``<layer>`` is the site: the module's ``named_modules()`` name, with ``:<k>``
    for the k-th call of a module called several times per forward pass):
        * ``activation_stats/sparsity/<layer>`` (scalar, every logger)
        * ``activation_stats/dead_fraction/<layer>`` (scalar, every logger)
        * ``activation_stats/dead_channels/<layer>`` (scalar count, every logger)
        * ``activation_stats/channel_activity/<layer>`` (histogram of the per-channel fraction of
          positive elements; TensorBoard)
        * ``activation_stats/channels/<layer>`` (image: one cell per channel, channel 0 top left,
          coloured by its activity with viridis, dead channels red; TensorBoard)

    All at the Trainer's ``global_step``.

    Args:
        layers: Which modules to watch: ``None`` (every conv block's activation), a
            ``named_modules()`` name or glob (with ``:<k>`` for the k-th call only), a module, a
            module type, or a list of those. Every call of a selected module is a site.
        every_n_steps: Log every this many training batches; ``None`` uses the Trainer's
            ``log_every_n_steps``.
        window_steps: How many recent training batches a channel must stay silent over to count
            as dead, rounded up to whole logging intervals; ``None`` means since the last log.
        log_histograms: Also log the per-channel activity histograms.
        log_images: Also log the per-channel activity pictures.
        detail_every_n_logs: Write histograms and pictures on the first logging step and then
            on every this many logging steps (1: every time). Scalars are cheap and always
            written; a picture costs a PNG encoding on the training thread.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger, a
            layer name is unknown, or the model has no convolution.
    """

    section = "activation_stats"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "dead fraction, every layer": ["activation_stats/dead_fraction/"],
        "sparsity, every layer": ["activation_stats/sparsity/"],
    }
    _collective_hooks = ("on_train_batch_end",)

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        every_n_steps: int | None = None,
        window_steps: int | None = None,
        log_histograms: bool = True,
        log_images: bool = True,
        detail_every_n_logs: int = 10,
    ) -> None:
        super().__init__()
        check_layers_argument(layers)
        check_positive_int("every_n_steps", every_n_steps, allow_none=True)
        check_positive_int("window_steps", window_steps, allow_none=True)
        check_positive_int("detail_every_n_logs", detail_every_n_logs)
        self.layers = layers
        self.every_n_steps = every_n_steps
        self.window_steps = window_steps
        self.log_histograms = log_histograms
        self.log_images = log_images
        self.detail_every_n_logs = detail_every_n_logs
        self._logs_written = 0
        self._sites: CallSites | None = None
        self._counter: ActivityCounter | None = None
        self._interval = 1
        self._window: deque[_Chunk] = deque(maxlen=1)
        self._current: _Chunk = {}
        self._batches_in_interval = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), every_n_steps=self.every_n_steps)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layers is None:  # the doctor's sites too: one count for both
            assert self._context is not None
            self._resolve(pl_module, None, conv_layers(pl_module))  # "no convolution" error
            self._counter = self._context.activity(pl_module)
        else:
            self._counter = ActivityCounter(
                self._call_sites(pl_module, self.layers, ACTIVATION_SITES)
            )
        self._sites = self._counter.sites
        self._interval = self.every_n_steps or max(
            1, int(getattr(trainer, "log_every_n_steps", 50))
        )
        intervals = 1 if self.window_steps is None else -(-self.window_steps // self._interval)
        self._window = deque(self._window, maxlen=intervals)

    # -- counting ------------------------------------------------------------------------------

    def _accumulate(self, site: Site, output: torch.Tensor) -> None:
        assert self._counter is not None
        add_positive_counts(self._current, site, *self._counter.counts(site, output))

    @override
    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._enabled and self._counter is not None:
            self._release_hooks()
            self._read_activity(self._counter, self._accumulate)

    @override
    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._release_hooks()
        if self._enabled and self._sites is not None:
            self._sites_found(self._sites)
        self._batches_in_interval += 1  # on a rank that failed too: the vote stays in step
        if self._batches_in_interval >= self._interval and self._ranks_agree(trainer):
            self._flush(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._release_hooks()

    # -- judging and logging -------------------------------------------------------------------

    def _window_totals(self) -> dict[str, tuple[torch.Tensor, int]]:
        """The window's counts per selected site, by site name, in call order."""
        totals: dict[Site, tuple[torch.Tensor, int]] = {}
        for chunk in self._window:
            for site, (counts, elements) in chunk.items():
                if site in totals and totals[site][0].shape == counts.shape:
                    summed = totals[site][0] + counts.to(totals[site][0].device)
                    totals[site] = (summed, totals[site][1] + elements)
                else:
                    totals[site] = (counts, elements)
        sites = self._sites
        if sites is None:
            return {}
        order = list(dict.fromkeys([*sites.order, *sorted(totals)]))
        return {
            sites.name(site): totals[site] for site in order if site in totals and sites.keeps(site)
        }

    def _flush(self, trainer: Trainer) -> None:
        self._window.append(self._current)
        self._current = {}
        self._batches_in_interval = 0
        totals = self._window_totals()
        if not totals:
            return
        names = list(totals)
        device = trainer.strategy.root_device
        elements = torch.tensor([totals[n][1] for n in names], dtype=torch.int64, device=device)
        flat = torch.cat([totals[n][0].to(device, torch.int64) for n in names] + [elements])
        flat = trainer.strategy.reduce(flat, reduce_op="sum")  # on every rank: alive anywhere
        host = flat.cpu()  # the one host transfer of this logging step
        detailed = self._logs_written % self.detail_every_n_logs == 0
        self._logs_written += 1
        if not trainer.is_global_zero:
            return
        sizes = [totals[n][0].numel() for n in names]
        per_layer = host[: sum(sizes)].split(sizes)
        host_elements = host[sum(sizes) :].tolist()
        stats = dict(zip(names, zip(per_layer, host_elements, strict=True), strict=True))
        self._log(trainer, stats, detailed)

    def _log(
        self, trainer: Trainer, stats: dict[str, tuple[torch.Tensor, int]], detailed: bool
    ) -> None:
        step = trainer.global_step
        metrics: dict[str, float] = {}
        writer = self._writer(trainer) if detailed else None
        activities: dict[str, torch.Tensor] = {}  # on the host already
        for name, (positive, elements) in stats.items():
            metrics[self._tag("sparsity", name)] = sparsity(positive, elements).item()
            metrics[self._tag("dead_fraction", name)] = dead_fraction(positive).item()
            metrics[self._tag("dead_channels", name)] = float(dead_channels(positive).sum())
            activities[name] = positive.double() / elements
        self._log_scalars(trainer, metrics, step)
        if writer is None or not (self.log_histograms or self.log_images):
            return
        histograms, images = self.log_histograms, self.log_images

        def render_and_write() -> None:
            assert writer is not None
            for name, activity in activities.items():
                if histograms:
                    writer.histogram(self._tag("channel_activity", name), activity.numpy(), step)
                if images:
                    picture = render.channel_activity_image(activity)
                    writer.image(self._tag("channels", name), render.to_uint8_hwc(picture), step)

        self._later(trainer, None, render_and_write)

    # -- checkpointing -------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        def to_cpu(chunk: _Chunk) -> dict[str, tuple[torch.Tensor, int]]:
            name = self._sites.name if self._sites is not None else lambda site: site.module
            return {
                name(site): (counts.cpu(), elements) for site, (counts, elements) in chunk.items()
            }

        return {
            "batches_in_interval": self._batches_in_interval,
            "logs_written": self._logs_written,
            "current": to_cpu(self._current),
            "window": [to_cpu(chunk) for chunk in self._window],
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._batches_in_interval = int(state_dict["batches_in_interval"])
        self._logs_written = int(state_dict.get("logs_written", 0))
        self._current = _sites_of(state_dict["current"])
        self._window = deque(
            (_sites_of(chunk) for chunk in state_dict["window"]), maxlen=self._window.maxlen
        )


def _sites_of(chunk: dict[str, tuple[torch.Tensor, int]]) -> _Chunk:
    """A checkpointed chunk, keyed by site names, with :class:`Site` keys."""
    sites = {name: split_selector(name) for name in chunk}
    return {Site(module, call or 1): chunk[name] for name, (module, call) in sites.items()}
