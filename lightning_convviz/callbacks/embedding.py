"""EmbeddingMonitor: t-SNE maps of the network's codes for a fixed set of validation samples."""

from __future__ import annotations

import time
from concurrent.futures import Future
from concurrent.futures import wait as wait_for
from typing import Any, Literal

import numpy as np
import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from typing_extensions import override

from lightning_convviz import plots, render
from lightning_convviz.callbacks.arguments import (
    check_layers_argument,
    check_number,
    check_positive_int,
)
from lightning_convviz.callbacks.base import ConvVizCallback
from lightning_convviz.callbacks.batches import inputs_from_batch, labels_from_batch
from lightning_convviz.callbacks.embedding_maps import (
    EmbeddingJob,
    EmbeddingMap,
    MapSettings,
    make_map,
    picture_side,
    tsne_threads,
    write_map,
)
from lightning_convviz.callbacks.samples import SampleCollector
from lightning_convviz.callbacks.schedule import collecting_epoch
from lightning_convviz.functional.capture import LayerSpec, single_site_watch
from lightning_convviz.functional.defaults import CLASSIFIER
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["EmbeddingMonitor"]


class EmbeddingMonitor(ConvVizCallback):
    """Embed the CNN codes of fixed validation samples with t-SNE.

    Every ``every_n_epochs`` validation epochs the callback records the codes of ``max_samples``
    validation samples, spread over what the validation epoch shows and over its classes when the
    data set keeps its labels (``ImageFolder.targets``, ...), or reservoir-sampled from a stream
    (see :mod:`lightning_convviz.callbacks.samples`; the same ones every time: the validation loader
    must not shuffle): by default the input of the classifier (the last linear layer or convolution
    called that produces the classes), i.e. the penultimate representation, like AlexNet's 4096-d
    codes, averaged over the map when the classifier is a 1x1 convolution; with ``layer=`` the
    output of that module, flattened. openTSNE embeds them (PCA to 50 dimensions first, a fixed
    seed), starting from the previous map and rotated onto it so that the time-lapse does not jump
    or mirror. When training leaves cores free (a model on a GPU, or more CPU cores than PyTorch's
    threads) a background thread does it on those cores and the training loop only pays for moving
    the codes to the host (a few milliseconds); on a CPU that training keeps busy it is done at
    once on every core, because threads beside PyTorch's on busy cores slow both down (the
    same choice as every drawing's, :class:`~lightning_convviz.DiagnosticsBudget`'s
    ``background`` included; the t-SNE runs in the drawing worker's second lane).
    Results are logged at the step they belong to, as soon as they are ready; at the end of training
    the callback waits up to ``wait_timeout`` seconds for the last one and says so if it gives up.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[EmbeddingMonitor(max_samples=1000, every_n_epochs=5)])

    Logged tags:
        * ``embedding/scatter`` (image): the map, one colour per class, with a legend (over 20
          classes: a continuous colour map of the class index, with a colour bar).
        * ``embedding/grid`` (image): the map snapped to a ``grid_side`` grid, each cell showing
          the sample nearest to it (the CS231n picture); empty regions stay dark.
        * ``embedding/trustworthiness`` (scalar): scikit-learn's trustworthiness of the map
          (1.0: every map neighbour is a code neighbour).
        * ``embedding/knn_accuracy`` (scalar, with labels): leave-one-out k-NN accuracy in the
          map, how class-separable the codes are.
        * ``embedding/points``: the map's points with their labels, for loggers that plot tables
          (a W&B table with columns x, y, label, sample; a CSV file or artifact ``x,y,label``
          with MLflow and CSV loggers; nothing in TensorBoard, whose scatter picture shows them).
        * with ``projector=True``: TensorBoard's projector (``add_embedding``, tag
          ``embedding``) with the codes, labels and a sprite within the frontend's 8192 px.

    Args:
        layer: Module whose output is the code (name, with ``:<k>`` for its k-th call, module
            or type selecting one module), flattened; ``None``: the input of the classifier,
            the last linear layer or convolution called that produces the classes (averaged
            over the map for a 1x1-conv classifier such as SqueezeNet's; an info message names
            it).
        max_samples: How many validation samples to embed (per run, over all ranks).
        every_n_epochs: Embed every this many validation epochs (the sanity check is skipped).
        perplexity: t-SNE perplexity.
        n_jobs: Most threads for openTSNE; ``None``: the cores training leaves free, or every
            core when the embedding is done at once.
        seed: Seed for PCA and t-SNE.
        grid_side: Cells per side of the image grid.
        thumbnail_side: Side of each image in the grid and the projector sprite, in pixels;
            capped so that ``max_samples`` thumbnails fit the projector's 8192 px sprite and the
            grid stays within 2048 px. Kept as uint8 until the embedding is drawn.
        knn_neighbors: Neighbours of the k-NN accuracy and of trustworthiness.
        projector: Also write TensorBoard projector data.
        wait_timeout: Seconds to wait at the end of training for pending embeddings.

    Raises:
        ValueError: At construction, for an argument outside the allowed values.
        MisconfigurationException: In ``setup``, when the Trainer has no logger or
            the layer is unknown; at the first validation batch, when ``layer=None`` and the
            forward pass calls no linear layer or convolution.
    """

    section = "embedding"
    _collective_hooks = ("on_validation_epoch_end",)

    def __init__(
        self,
        layer: LayerSpec | None = None,
        max_samples: int = 2000,
        every_n_epochs: int = 1,
        perplexity: float = 30.0,
        n_jobs: int | None = None,
        seed: int = 0,
        grid_side: int = 20,
        thumbnail_side: int = 32,
        knn_neighbors: int = 5,
        projector: bool = False,
        wait_timeout: float = 300.0,
    ) -> None:
        super().__init__()
        if layer is not None:
            check_layers_argument(layer)
        check_positive_int("max_samples", max_samples)
        if max_samples < 8:
            raise ValueError(f"max_samples: expected an integer >= 8, got {max_samples!r}")
        check_positive_int("every_n_epochs", every_n_epochs)
        check_number("perplexity", perplexity, above=0.0)
        check_positive_int("n_jobs", n_jobs, allow_none=True)
        check_positive_int("grid_side", grid_side)
        check_positive_int("thumbnail_side", thumbnail_side)
        check_positive_int("knn_neighbors", knn_neighbors)
        if isinstance(wait_timeout, bool) or not wait_timeout >= 0:
            raise ValueError(f"wait_timeout: expected a number >= 0, got {wait_timeout!r}")
        self.layer = layer
        self.max_samples = max_samples
        self.every_n_epochs = every_n_epochs
        self.perplexity = float(perplexity)
        self.n_jobs = n_jobs
        self.seed = seed
        self.grid_side = grid_side
        self.thumbnail_side = thumbnail_side
        self.knn_neighbors = knn_neighbors
        self.projector = projector
        self.wait_timeout = float(wait_timeout)
        self._sites: CallSites | None = None
        self._latest: dict[Site, torch.Tensor] = {}
        self._samples = SampleCollector(max_samples, seed)
        self._embeddings: list[Future[EmbeddingMap]] = []
        self._chart: plots.Chart | None = None  # made by the worker thread, reused there
        self._previous: np.ndarray | None = None
        #: Seconds the training loop waited in this callback per embedding (the submission, or
        #: the whole embedding when it is made at once).
        self.stall_seconds: list[float] = []
        #: Seconds each embedding took (t-SNE, measures and pictures).
        self.embedding_seconds: list[float] = []
        #: Samples in each logged embedding (all ranks together).
        self.embedded_samples: list[int] = []

    @property
    def state_key(self) -> str:
        return self._generate_state_key(layer=repr(self.layer), every=self.every_n_epochs)

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.layer is None:
            self._sites = CallSites(pl_module, None, CLASSIFIER, collecting=True)
            return
        try:
            self._sites = single_site_watch(pl_module, self.layer, collecting=True)[0]
        except (ValueError, TypeError) as error:
            raise MisconfigurationException(f"EmbeddingMonitor: {error}") from None

    # -- collecting ----------------------------------------------------------------------------

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log_ready(trainer)
        if (
            not self._enabled
            or not collecting_epoch(trainer, self.every_n_epochs)
            or self._sites is None
        ):
            return
        self._samples.start(trainer)
        self._latest = {}

        def keep(site: Site, value: torch.Tensor) -> None:
            code = value.detach()
            if self.layer is None and code.ndim == 4:  # a 1x1-conv classifier reads a map
                code = code.mean(dim=(2, 3))
            self._latest[site] = code.flatten(1)

        read: Literal["output", "input"] = "input" if self.layer is None else "output"
        self._release_hooks()
        self._hook(self._sites, keep, read=read, eager=pl_module)  # compiled models: hooks run

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
        latest, self._latest = self._latest, {}
        sites = self._sites
        if not self._hooked or sites is None or not latest or dataloader_idx != 0:
            return
        self._announce_code(sites)
        codes = next((code for site, code in latest.items() if sites.keeps(site)), None)
        if codes is None:
            return
        kept = self._samples.rows_to_keep(len(codes))
        if not kept:
            return
        rows = torch.tensor([row for row, _ in kept])
        images = inputs_from_batch(batch)[rows.to(codes.device)]
        labels = labels_from_batch(batch, len(codes))
        side = picture_side(self.max_samples, self.thumbnail_side)
        pictures = (render.thumbnails(images, side) * 255).round().to(torch.uint8)
        self._samples.store(
            [slot for _, slot in kept],
            codes=codes[rows.to(codes.device)].float(),
            labels=None if labels is None else labels[rows],
            pictures=pictures,
        )

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if (
            not collecting_epoch(trainer, self.every_n_epochs)
            or not self._ranks_agree(trainer)
            or not self._hooked
        ):
            return
        start = time.perf_counter()
        self._release_hooks()
        gathered = self._gather(trainer)
        if gathered is not None and trainer.is_global_zero:
            codes, labels, pictures = gathered
            threads = tsne_threads(
                self._background,
                on_accelerator=pl_module.device.type != "cpu",
                busy_threads=torch.get_num_threads() * max(trainer.num_devices, 1),
                n_jobs=self.n_jobs,
            )
            step, epoch = trainer.global_step, trainer.current_epoch
            job = EmbeddingJob(step, epoch, codes, labels, pictures, threads, self._background)

            def hand_over() -> None:  # timed and charged as the drawing: what the loop waits
                if job.background:
                    self._submit(job)
                else:
                    self._embed_now(trainer, job)

            self._schedule(trainer, pl_module, hand_over)
        self.stall_seconds.append(time.perf_counter() - start)

    def _submit(self, job: EmbeddingJob) -> None:
        """Start embedding ``job`` in the drawing worker's second lane."""
        assert self._context is not None
        self._embeddings.append(self._context.worker.compute(lambda: self._embed(job)))
        rank_zero_info(
            f"EmbeddingMonitor: embedding {len(job.codes)} codes of {job.codes.shape[1]} "
            f"dimensions (epoch {job.epoch}, step {job.step}) in the background, "
            f"{job.threads} thread(s)"
        )

    def _embed_now(self, trainer: Trainer, job: EmbeddingJob) -> None:
        """Embed ``job`` now, on the training's thread, and log it."""
        rank_zero_info(
            f"EmbeddingMonitor: embedding {len(job.codes)} codes of {job.codes.shape[1]} "
            f"dimensions (epoch {job.epoch}, step {job.step}) now, {job.threads} thread(s); "
            "training goes on after it (its cores are busy, a background t-SNE would slow it)"
        )
        done: Future[EmbeddingMap] = Future()
        try:
            done.set_result(self._embed(job))
        except Exception as error:
            done.set_exception(error)
        self._embeddings.append(done)
        self._log_ready(trainer)

    def _gather(
        self, trainer: Trainer
    ) -> tuple[np.ndarray, np.ndarray | None, torch.Tensor] | None:
        """Codes, labels and pictures of every rank (collectives on every rank)."""
        found = self._samples.gathered(
            trainer,
            empty={
                "codes": torch.zeros(0, 0),
                "labels": torch.zeros(0, dtype=torch.long),
                "pictures": torch.zeros(0, 0, 0, 0, dtype=torch.uint8),
            },
        )
        codes, labels, pictures = found["codes"], found["labels"], found["pictures"]
        if codes is None or pictures is None or not len(codes):
            return None
        labels_np = None if labels is None else labels.cpu().numpy()
        return codes.cpu().numpy(), labels_np, pictures.cpu()

    # -- the background work -------------------------------------------------------------------

    def _embed(self, job: EmbeddingJob) -> EmbeddingMap:
        self._chart = self._chart or plots.Chart()  # made and used by one thread at a time
        settings = MapSettings(self.perplexity, self.seed, self.knn_neighbors, self.grid_side)
        made = make_map(job, self._previous, settings, self._chart, self._class_names)
        self._previous = made.points
        return made

    def _log_ready(self, trainer: Trainer, wait: float | None = None) -> None:
        """Log every finished embedding (waiting up to ``wait`` seconds for the pending ones)."""
        deadline = None if wait is None else time.monotonic() + wait
        still_pending = []
        for future in self._embeddings:
            if deadline is not None and not future.done():
                wait_for([future], timeout=max(0.0, deadline - time.monotonic()))
            if not future.done():
                still_pending.append(future)
            elif future.exception() is not None:
                rank_zero_warn(f"EmbeddingMonitor: an embedding failed: {future.exception()!r}")
            else:
                self._write(trainer, future.result())
        self._embeddings = still_pending

    def _write(self, trainer: Trainer, made: EmbeddingMap) -> None:
        self.embedding_seconds.append(made.seconds)
        self.embedded_samples.append(len(made.job.codes))
        rank_zero_info(
            f"EmbeddingMonitor: embedding of step {made.step} done in {made.seconds:.1f} s"
        )
        writer = self._writer(trainer)
        beside = made.seconds if made.job.background else 0.0
        projector = self.section if self.projector else None
        if writer is not None:
            self._later(
                trainer, None, lambda: write_map(writer, made, self._tag, projector), beside
            )

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, *args: Any, **kwargs: Any
    ) -> None:
        if self._embeddings and self._embeddings[0].done():
            self._log_ready(trainer)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._draw_last(trainer, pl_module)  # a postponed embedding, now
        if not self._embeddings:
            return
        self._log_ready(trainer, wait=self.wait_timeout)
        if self._embeddings:
            rank_zero_warn(
                f"EmbeddingMonitor: {len(self._embeddings)} embedding(s) not finished after "
                f"waiting {self.wait_timeout:.0f} s at the end of training; they are not logged. "
                "Raise wait_timeout, lower max_samples or embed less often."
            )

    # -- cleanup -------------------------------------------------------------------------------

    def _announce_code(self, sites: CallSites) -> None:
        """Say once which layer gives the codes (the default rule's choice)."""
        if sites.rule is not None and not sites.announced and sites.chosen:
            sites.announced = True
            rank_zero_info(
                f"EmbeddingMonitor: the codes are the input of {sites.name(sites.chosen[0])!r}, "
                "the classifier (the last linear layer or convolution producing the classes), "
                "averaged over the map when it reads one"
            )
        self._sites_found(sites)

    @override
    def _release_hooks(self) -> None:
        super()._release_hooks()
        self._latest = {}

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().teardown(trainer, pl_module, stage)
        self._samples = SampleCollector(self.max_samples, self.seed)
        self._embeddings = []  # those not finished were cancelled with the context

    # -- checkpointing -------------------------------------------------------------------------

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"previous": self._previous}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._previous = state_dict.get("previous")
