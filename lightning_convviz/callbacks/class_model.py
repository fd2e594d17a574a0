"""ClassModelMonitor: what each class looks like to the network, as training goes."""

from __future__ import annotations

import torch
from pytorch_lightning import LightningModule, Trainer

from lightning_convviz import render
from lightning_convviz.callbacks.arguments import check_positive_int
from lightning_convviz.callbacks.batches import to_host
from lightning_convviz.callbacks.probe import ProbeCallback
from lightning_convviz.functional.arguments import check_int
from lightning_convviz.functional.guard import preserved_state
from lightning_convviz.functional.inversion import class_model
from lightning_convviz.functional.sampling import spread_classes

__all__ = ["ClassModelMonitor"]


class ClassModelMonitor(ProbeCallback):
    """Synthesise one image per class by gradient ascent on its score (Simonyan et al.).

    Every ``every_n_epochs`` epochs (and at the start), from a blank image of the inputs' shape
    (taken from the probe images), Adam ascends each class score with an L2 penalty,
    a light blur and random shifts (:func:`~lightning_convviz.functional.inversion.
    class_model`). Early in training the images are noise; later the strokes that make a class
    appear.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> trainer = Trainer(callbacks=[ClassModelMonitor(classes=[0, 1, 7], every_n_epochs=5)])

    Logged tags:
        * ``class_model/images`` (image): one picture per class, captioned with the class and
          the probability the model gives it.

    Which classes: ``classes``, or by default every class when the model has at most
    ``max_classes`` of them, else the classes of the probe images (``max_classes`` validation
    images spread over the classes, see :mod:`lightning_convviz.callbacks.probe`; so on ImageNet
    16 classes spread over the 1000, not one image per class), filled up with an even spread.

    Args:
        classes: Which classes (``None``: see above).
        max_classes: Most class images per drawing when ``classes`` is ``None``.
        every_n_epochs: Draw after every this many training epochs.
        steps: Ascent steps (100: on the digits the class images after 100 steps look as
            after 200, at half the cost; after 50 they are visibly noisier).
        l2: Weight of the squared-norm penalty.
        blur_every: Blur every this many steps (0: never).
        jitter: Random shift per step, in pixels.
        tile_side: Smallest side of one picture, in pixels.

    Raises:
        ValueError: At construction, for an argument outside the allowed values; when drawing,
            for a class index the model does not have.
        MisconfigurationException: In ``setup``, when the Trainer has no logger.
    """

    section = "class_model"

    def __init__(
        self,
        classes: list[int] | None = None,
        max_classes: int = 16,
        every_n_epochs: int = 5,
        steps: int = 100,
        l2: float = 1e-3,
        blur_every: int = 4,
        jitter: int = 1,
        tile_side: int = 64,
    ) -> None:
        check_positive_int("max_classes", max_classes)
        # the probe: as many images as classes drawn, spread over the classes (their labels)
        super().__init__(None, None, max_classes, every_n_epochs, "true", tile_side)
        if classes is not None and not (
            isinstance(classes, (list, tuple))
            and classes
            and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in classes)
        ):
            raise ValueError(
                f"classes: expected None or a non-empty list of ints >= 0, got {classes!r}"
            )
        check_positive_int("steps", steps)
        if isinstance(l2, bool) or not l2 >= 0:
            raise ValueError(f"l2: expected a number >= 0, got {l2!r}")
        check_int("blur_every", blur_every, minimum=0)
        check_int("jitter", jitter, minimum=0)
        self.classes = None if classes is None else list(classes)
        self.max_classes = max_classes
        self.steps = steps
        self.l2 = float(l2)
        self.blur_every = blur_every
        self.jitter = jitter

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Any classifier has class models: nothing to resolve."""

    def _draw(self, trainer: Trainer, pl_module: LightningModule) -> None:
        writer = self._writer(trainer)
        probe = self._probe_on_device(trainer, pl_module)
        if writer is None or probe is None:
            return
        shape = tuple(probe[0].shape[1:])
        with preserved_state(pl_module), torch.no_grad():
            num_classes = pl_module(probe[0][:1]).shape[1]
        preferred = () if probe[1] is None else probe[1]
        classes = self.classes or spread_classes(num_classes, self.max_classes, preferred)
        images = class_model(
            pl_module,
            classes,
            shape,
            steps=self.steps,
            l2=self.l2,
            blur_every=self.blur_every,
            jitter=self.jitter,
            device=probe[0].device,
        )
        probabilities, _ = self._predict(pl_module, images, None)
        captions = [
            f"{self._class_name(c) if self._class_names else f'class {c}'}\n"
            f"p = {float(probabilities[i, c]):.2f}"
            for i, c in enumerate(classes)
        ]
        shown, step, tile_side = to_host(images), trainer.global_step, self.tile_side

        def render_and_write() -> None:
            picture = render.labelled_grid(
                render.thumbnails(shown, tile_side),
                captions,
                columns=min(10, len(classes)),
                min_side=tile_side,
            )
            writer.image(self._tag("images"), picture, step)

        self._later(trainer, pl_module, render_and_write)
