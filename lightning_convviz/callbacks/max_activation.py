"""MaxActivationMonitor: the validation image patches that excite chosen channels the most."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_convviz import render
from lightning_convviz.callbacks.base import (
    ConvVizCallback,
    check_layers_argument,
    check_positive_int,
    collecting_epoch,
    inputs_from_batch,
)
from lightning_convviz.functional.capture import LayerSpec, conv_layers, hook_outputs
from lightning_convviz.functional.guard import eager_forward
from lightning_convviz.functional.receptive_field import (
    ReceptiveField,
    crop_receptive_field,
    receptive_field,
)
from lightning_convviz.functional.topk import TopK, channel_maxima, topk_merge, topk_update

__all__ = ["MaxActivationMonitor"]


class MaxActivationMonitor(ConvVizCallback):
    """Log, per layer, the top-k validation patches of each chosen channel (Girshick et al.).

    Every ``every_n_epochs`` epochs, while the validation loop runs, the callback streams every
    validation batch through forward hooks and keeps, per chosen channel, the ``k`` images
    whose largest activation in that channel is the largest, with where it occurred: memory is
    ``k`` entries per channel, never the data set. Under DDP each rank keeps its own top-k and
    they are merged at the end of the epoch. The winning unit's receptive field (computed from
    the layer geometry, see :func:`~lightning_convviz.functional.receptive_field`) is cropped
    from the original image; one picture per layer has a row per channel with its ``k``
    patches, captioned with the channel and the activation value. A receptive field at least
    as large as the image shows the whole image.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[MaxActivationMonitor(channels=[0, 3, 7], k=6)])

    Logged tags:
        * ``max_activation/<layer>`` (image, TensorBoard) at the ``global_step`` of the
          validation epoch.

    Args:
        layers: Which modules: ``None`` picks a middle and the last convolution; or a name,
            glob, module, type or list of those (4-D outputs only).
        channels: How many channels (the first ones) or which channel indices to show.
        k: Patches per channel.
        every_n_epochs: Collect during every this many validation epochs (not the sanity check).
        tile_side: Smallest side of one patch in the picture, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no TensorBoard logger, a
            layer is unknown, the model has no convolution, or a channel index is out of range.
    """

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
        self._layers: dict[str, nn.Module] = {}
        self._channels: dict[str, torch.Tensor] = {}
        self._fields: dict[str, ReceptiveField | None] = {}
        self._states: dict[str, TopK] = {}
        self._crops: dict[str, torch.Tensor] = {}
        self._maxima: dict[str, torch.Tensor] = {}
        self._hooks: Any = None
        self._seen = 0

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=repr(self.layers), channels=repr(self.channels))

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layers is None:
            convs = conv_layers(pl_module)
            names = list(convs)
            chosen = {names[len(names) // 2], names[-1]} if names else set()
            default = {name: module for name, module in convs.items() if name in chosen}
            self._layers = self._resolve(pl_module, None, default)
        else:
            self._layers = self._resolve(pl_module, self.layers)
        for name, module in self._layers.items():
            width = getattr(module, "out_channels", None)
            wanted = list(range(self.channels)) if isinstance(self.channels, int) else self.channels
            if width is not None:
                if isinstance(self.channels, int):
                    wanted = wanted[:width]
                elif max(wanted) >= width:
                    raise MisconfigurationException(
                        f"MaxActivationMonitor: channel {max(wanted)} does not exist in {name!r}, "
                        f"which has {width} channels"
                    )
            self._channels[name] = torch.tensor(wanted)
            try:
                self._fields[name] = receptive_field(pl_module, module)
            except ValueError as error:
                rank_zero_warn(f"MaxActivationMonitor: showing whole images for {name!r}: {error}")
                self._fields[name] = None

    # -- collecting ----------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._enabled or not collecting_epoch(trainer, self.every_n_epochs):
            return
        device = pl_module.device
        self._states = {
            name: TopK.empty(len(channels), self.k, device)
            for name, channels in self._channels.items()
        }
        self._crops = {}
        self._seen = 0

        def measure(name: str, output: torch.Tensor) -> None:
            if output.ndim == 4:
                self._maxima[name] = output.detach()[:, self._channels[name].to(output.device)]

        self._hooks = contextlib.ExitStack()
        self._hooks.enter_context(eager_forward(pl_module))  # compiled models: hooks must run
        self._hooks.enter_context(hook_outputs(self._layers, self._safe(measure)))

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._hooks is None or dataloader_idx != 0:
            self._maxima.clear()
            return
        images = inputs_from_batch(batch)
        # the j-th sample of rank r is sample j * world_size + r (DistributedSampler's order)
        ids = (self._seen + torch.arange(len(images))) * trainer.world_size + trainer.global_rank
        self._seen += len(images)
        for name, activation in self._maxima.items():
            maxima = channel_maxima(activation)
            state, order = topk_update(self._states[name], maxima, ids)
            self._crops[name] = self._carry_crops(name, images, state, order)
            self._states[name] = state
        self._maxima.clear()

    def _carry_crops(
        self, name: str, images: torch.Tensor, state: TopK, order: torch.Tensor
    ) -> torch.Tensor:
        """Crops for the new state: kept ones reordered, new winners cut from ``images``."""
        field = self._fields[name]
        size = (
            images.shape[2:]
            if field is None
            or (field.size[0] >= images.shape[2] and field.size[1] >= images.shape[3])
            else field.size
        )
        old = self._crops.get(name)
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

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not collecting_epoch(trainer, self.every_n_epochs)
            or not self._ranks_agree(trainer)
            or self._hooks is None
        ):
            return
        self._release_hooks()
        if trainer.world_size > 1:  # every rank takes part in the gathers
            self._states, self._crops = self._merge_ranks(trainer, self._states, self._crops)
        writer = self._writer(trainer)
        if writer is None:
            return
        for name, state in self._states.items():
            if name not in self._crops:
                continue
            picture = self._picture(name, state, self._crops[name])
            writer.add_image(self._tag(name), picture, trainer.global_step, dataformats="HWC")

    def _merge_ranks(
        self, trainer: Trainer, states: dict[str, TopK], crops: dict[str, torch.Tensor]
    ) -> tuple[dict[str, TopK], dict[str, torch.Tensor]]:
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

    def _picture(self, name: str, state: TopK, crops: torch.Tensor) -> Any:
        channels = self._channels[name].tolist()
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

    def _release_hooks(self) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None
        self._maxima.clear()
