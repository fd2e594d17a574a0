"""MaxActivationMonitor: the validation image patches that excite chosen channels the most."""

from __future__ import annotations

from typing import Any

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from typing_extensions import override

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_layers_argument, check_positive_int
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.callbacks.batches import inputs_from_batch, to_host
from lightning_convviz.callbacks.schedule import collecting_epoch
from lightning_convviz.functional.capture import LayerSpec
from lightning_convviz.functional.defaults import FEATURE_CONVOLUTIONS
from lightning_convviz.functional.guard import eager_forward
from lightning_convviz.functional.receptive_field import (
    ReceptiveField,
    crop_receptive_field,
    receptive_fields,
)
from lightning_convviz.functional.sites import SITE_SEPARATOR, CallSites, Site
from lightning_convviz.functional.topk import (
    ChannelMaxima,
    TopK,
    channel_maxima,
    topk_merge,
    topk_update,
)

__all__ = ["MaxActivationMonitor"]


class MaxActivationMonitor(ConvVizCallback):
    """Log, per layer, the top-k validation patches of each chosen channel (Girshick et al.).

    Every ``every_n_epochs`` epochs, while the validation loop runs, the callback streams every
    validation batch through forward hooks and keeps, per chosen channel, the ``k`` images
    whose largest activation in that channel is the largest, with where it occurred: memory is
    ``k`` entries per channel, never the data set. Under DDP each rank keeps its own top-k and
    they are merged at the end of the epoch. The winning unit's receptive field (found once by
    following one validation image through the model, see
    :func:`~lightning_convviz.functional.receptive_fields`; through residual sums,
    concatenations, functional pooling and squeeze-and-excitation gates) is cropped from the
    original image; one picture per layer has a row per channel with its ``k`` patches,
    captioned with the channel and the activation value. A receptive field at least as large as
    the image, or one that cannot be computed (a warning says why), shows the whole image.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[MaxActivationMonitor(channels=[0, 3, 7], k=6)])

    Logged tags:
        * ``max_activation/<layer>`` (image, TensorBoard) at the ``global_step`` of the
          validation epoch; ``<layer>`` is the site name (``:<k>`` for the k-th call of a
          module called several times per forward pass).

    Args:
        layers: Which modules: ``None`` picks a middle and the last convolution called by the
            validation forward pass with a map larger than 1x1 (leaving out a 1x1-conv
            classifier, see :func:`~lightning_convviz.functional.feature_convolutions`); or a
            name, glob (with ``:<k>`` for one call), module, type or list of those (4-D outputs
            only). A container's site is its output (``"layer3"``).
        channels: How many channels (the first ones) or which channel indices to show.
        k: Patches per channel.
        every_n_epochs: Collect during every this many validation epochs (not the sanity check).
        tile_side: Smallest side of one patch in the picture, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger, a
            layer is unknown, the model has no convolution, or a channel index is out of range.
    """

    whole_model_needed = (
        "finds each layer's receptive field with a pass of its own through the model"
    )

    section = "max_activation"
    _collective_hooks = ("on_validation_epoch_end",)

    def __init__(
        self,
        layers: LayerSpec | list[LayerSpec] | None = None,
        channels: int | list[int] = 8,
        k: int = 9,
        every_n_epochs: int = 1,
        tile_side: int = 64,
    ) -> None:
        super().__init__()
        check_layers_argument(layers)
        if isinstance(channels, int) and not isinstance(channels, bool):
            check_positive_int("channels", channels)
        elif not (
            isinstance(channels, (list, tuple))
            and channels
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in channels)
            and len(set(channels)) == len(channels)
        ):
            raise ValueError(
                "channels: expected a count >= 1 or a non-empty list of distinct channel "
                f"indices >= 0, got {channels!r}"
            )
        check_positive_int("k", k)
        check_positive_int("every_n_epochs", every_n_epochs)
        check_positive_int("tile_side", tile_side)
        self.layers = layers
        self.channels = channels
        self.k = k
        self.every_n_epochs = every_n_epochs
        self.tile_side = tile_side
        self._sites: CallSites | None = None
        self._channels: dict[Site, torch.Tensor] = {}
        self._fields: dict[Site, ReceptiveField | None] = {}
        self._states: dict[Site, TopK] = {}
        self._crops: dict[Site, torch.Tensor] = {}
        self._maxima: dict[Site, ChannelMaxima] = {}
        self._seen = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), channels=repr(self.channels))

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layers is None:
            self._sites = self._call_sites(pl_module, None, FEATURE_CONVOLUTIONS)
            return
        selected = self._resolve(pl_module, self.layers)
        for name, module in selected.items():
            width = getattr(module, "out_channels", None)
            if (
                isinstance(self.channels, list)
                and width is not None
                and max(self.channels) >= width
            ):
                raise MisconfigurationException(
                    f"MaxActivationMonitor: channel {max(self.channels)} does not exist in "
                    f"{name!r}, which has {width} channels"
                )
        self._sites = CallSites(pl_module, selected, None, collecting=True)

    def _channel_indices(self, site: Site, width: int) -> torch.Tensor:
        """The channels shown for a site with ``width`` channels (found at its first call)."""
        found = self._channels.get(site)
        if found is None:
            if isinstance(self.channels, int):
                found = torch.arange(min(self.channels, width))
            else:
                if max(self.channels) >= width:
                    raise MisconfigurationException(
                        f"MaxActivationMonitor: channel {max(self.channels)} does not exist in "
                        f"{self._site_name(site)!r}, which has {width} channels"
                    )
                found = torch.tensor(self.channels)
            self._channels[site] = found
        return found

    def _site_name(self, site: Site) -> str:
        return site.module if self._sites is None else self._sites.name(site)

    # -- collecting ----------------------------------------------------------------------------

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not self._enabled
            or not collecting_epoch(trainer, self.every_n_epochs)
            or self._sites is None
        ):
            return
        self._states = {}
        self._crops = {}
        self._seen = 0

        sites = self._sites

        def measure(site: Site, output: torch.Tensor) -> None:
            if output.ndim == 4:
                output = output.detach().movedim(sites.channel_dim(site), 1)
                channels = self._channel_indices(site, output.shape[1]).to(output.device)
                self._maxima[site] = channel_maxima(output[:, channels])

        self._release_hooks()
        self._hook(sites, measure, eager=pl_module)  # compiled models: hooks must run

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
        sites = self._sites
        if not self._hooked or dataloader_idx != 0 or sites is None:
            self._maxima.clear()
            return
        self._sites_found(sites)
        images = inputs_from_batch(batch)
        # the j-th sample of rank r is sample j * world_size + r (DistributedSampler's order)
        ids = (self._seen + torch.arange(len(images))) * trainer.world_size + trainer.global_rank
        self._seen += len(images)
        measured = [site for site in sites.order if site in self._maxima]
        self._find_fields(
            pl_module, [site for site in measured if site not in self._fields], images
        )
        for site in measured:
            maxima = self._maxima[site]
            state = self._states.get(site)
            if state is None:
                state = TopK.empty(maxima.values.shape[1], self.k, maxima.values.device)
            state, order = topk_update(state, maxima, ids)
            self._crops[site] = self._carry_crops(site, images, state, order)
            self._states[site] = state
        self._maxima.clear()

    def _find_fields(
        self, pl_module: LightningModule, sites: list[Site], images: torch.Tensor
    ) -> None:
        """Each new site's receptive field, from one image (whole images where it has none)."""
        if not sites:
            return
        modules = dict(pl_module.named_modules())
        wanted = {
            f"{site.module}{SITE_SEPARATOR}{site.call}": modules[site.module] for site in sites
        }
        try:  # a diagnostic pass: the collecting hooks ignore it
            with eager_forward(pl_module):
                fields = receptive_fields(pl_module, wanted, images)
        except ValueError as error:
            fields = {site: error for site in sites}
        for site in sites:
            field = fields.get(site, ValueError("layer: not reached by the forward pass"))
            if isinstance(field, ValueError):
                rank_zero_warn(
                    f"MaxActivationMonitor: showing whole images for {self._site_name(site)!r}: "
                    f"{field}"
                )
                self._fields[site] = None
            else:
                self._fields[site] = field

    def _carry_crops(
        self, site: Site, images: torch.Tensor, state: TopK, order: torch.Tensor
    ) -> torch.Tensor:
        """Crops for the new state: kept ones reordered, new winners cut from ``images``."""
        field = self._fields.get(site)
        size = (
            images.shape[2:]
            if field is None
            or (field.size[0] >= images.shape[2] and field.size[1] >= images.shape[3])
            else field.size
        )
        old = self._crops.get(site)
        if old is None:
            old = images.new_zeros((*order.shape, images.shape[1], *size))
        new = old.gather(
            1,
            order.clamp(max=self.k - 1).view(*order.shape, 1, 1, 1).expand(-1, -1, *old.shape[2:]),
        )
        fresh = order >= self.k
        channel, slot = fresh.nonzero(as_tuple=True)
        if len(channel):
            samples = (order[channel, slot] - self.k).to(images.device)
            if size == images.shape[2:] or field is None:
                crops = images[samples]
            else:
                crops = crop_receptive_field(
                    images[samples], field, state.rows[channel, slot], state.columns[channel, slot]
                )
            new[channel, slot] = crops.to(new.dtype)
        return new

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not collecting_epoch(trainer, self.every_n_epochs)
            or not self._ranks_agree(trainer)
            or not self._hooked
        ):
            return
        self._release_hooks()
        if trainer.world_size > 1:  # every rank takes part in the gathers
            self._states, self._crops = self._merge_ranks(trainer, self._states, self._crops)
        writer = self._writer(trainer)
        if writer is None:
            return
        states, crops, step = dict(self._states), dict(self._crops), trainer.global_step

        def draw() -> None:
            shown = {
                self._tag(self._site_name(site)): (
                    site,
                    TopK(*(to_host(part) for part in state)),
                    to_host(crops[site]),
                )
                for site, state in states.items()
                if site in crops
            }

            def render_and_write() -> None:
                for tag, (site, state, site_crops) in shown.items():
                    writer.image(tag, self._picture(site, state, site_crops), step)

            self._later(trainer, pl_module, render_and_write)

        self._schedule(trainer, pl_module, draw)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw_last(trainer, pl_module)

    def _merge_ranks(
        self, trainer: Trainer, states: dict[Site, TopK], crops: dict[Site, torch.Tensor]
    ) -> tuple[dict[Site, TopK], dict[Site, torch.Tensor]]:
        merged_states, merged_crops = {}, {}
        for name, state in states.items():
            gathered = TopK(*(trainer.strategy.all_gather(part) for part in state))
            payload = trainer.strategy.all_gather(crops[name])
            ranks = gathered.values.shape[0]
            merged, order = topk_merge(
                [TopK(*(part[r] for part in gathered)) for r in range(ranks)]
            )
            merged_states[name] = merged
            joined = torch.cat(list(payload), dim=1)
            merged_crops[name] = joined.gather(
                1, order.view(*order.shape, 1, 1, 1).expand(-1, -1, *joined.shape[2:])
            )
        return merged_states, merged_crops

    def _picture(self, site: Site, state: TopK, crops: torch.Tensor) -> Any:
        channels = self._channels[site].tolist()
        tiles, captions = [], []
        for row, channel in enumerate(channels):
            for slot in range(self.k):
                found = bool(state.ids[row, slot] >= 0)
                tiles.append(
                    render.thumbnails(crops[row, slot][None], max(crops.shape[-2:]))[0]
                    if found
                    else torch.full((3, *crops.shape[-2:]), render.GRID_COLOR)
                )
                value = float(state.values[row, slot])
                captions.append(f"ch {channel}: {value:.2f}" if found else f"ch {channel}: -")
        return render.labelled_grid(
            torch.stack(tiles), captions, columns=self.k, min_side=self.tile_side
        )

    # -- cleanup -------------------------------------------------------------------------------

    @override
    def _release_hooks(self) -> None:
        super()._release_hooks()
        self._maxima.clear()
