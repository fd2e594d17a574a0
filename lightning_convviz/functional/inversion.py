"""What a code keeps of an image (Mahendran & Vedaldi, 2015), and what a class looks like to the
network (Simonyan et al., 2014): images optimised by gradient descent through a frozen model.

Both start from a fixed point (noise from their own generator, or a blank image), run a bounded
number of Adam steps on the image only, with the model in eval mode and every ``.training``
flag, the parameters' ``.grad`` and the global RNG restored afterwards. Pure torch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightning_convviz.functional.arguments import Target, check_images, check_int, target_indices
from lightning_convviz.functional.capture import LayerSpec, single_site_watch
from lightning_convviz.functional.guard import grad_enabled, preserved_state
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["CodeSpec", "Inversion", "class_model", "invert", "invert_codes", "total_variation"]


class Inversion(NamedTuple):
    """Reconstructions from a layer's code and how well their code matches."""

    #: ``N x C x H x W`` reconstructed images.
    images: torch.Tensor
    #: ``(N,)`` ``||code(reconstruction) - code(input)|| / ||code(input)||``.
    code_error: torch.Tensor


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between neighbouring pixels, per image ``(N,)``."""
    rows = (images[:, :, 1:, :] - images[:, :, :-1, :]).pow(2).flatten(1).mean(dim=1)
    columns = (images[:, :, :, 1:] - images[:, :, :, :-1]).pow(2).flatten(1).mean(dim=1)
    return rows + columns


def _check_steps(steps: int) -> None:
    check_int("steps", steps, maximum=100_000)


def _jittered(images: torch.Tensor, jitter: int, generator: torch.Generator) -> torch.Tensor:
    if jitter <= 0:
        return images
    shift = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist()
    return torch.roll(images, shifts=(shift[0], shift[1]), dims=(2, 3))


#: A code to reconstruct from: a layer, and whether its ``"output"`` or its ``"input"`` is read.
CodeSpec = tuple[LayerSpec, Literal["output", "input"]]


def invert(
    model: nn.Module,
    layer: LayerSpec,
    inputs: torch.Tensor,
    steps: int = 200,
    learning_rate: float = 0.1,
    tv_weight: float = 0.05,
    norm_weight: float = 1e-4,
    jitter: int = 0,
    generator: torch.Generator | None = None,
    read: Literal["output", "input"] = "output",
    tolerance: float = 0.0,
) -> Inversion:
    """Reconstruct images from their code at ``layer`` (the output of that module, or with
    ``read="input"`` its input: the input of the classifier is the network's code).

    Minimises ``||code(x) - code(inputs)||^2 / ||code(inputs)||^2 + tv_weight * TV(x) +
    norm_weight * mean(x^6)`` over ``x`` with Adam, from Gaussian noise (std 0.1 times the
    inputs' std) drawn from ``generator`` (default: seeded with 0). ``jitter`` rolls the image by
    up to that many pixels at random each step (a natural-image prior). See
    :func:`invert_codes` to reconstruct from several codes in one optimisation.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                       nn.Linear(64, 2))
        >>> result = invert(model, "0", torch.randn(2, 1, 4, 4), steps=5)
        >>> tuple(result.images.shape), tuple(result.code_error.shape)
        ((2, 1, 4, 4), (2,))

    Args:
        model: The network.
        layer: The module (a name, module or type selecting one module; ``"name:k"`` reads its
            k-th call, a name without a call number its last call).
        inputs: The images whose codes are matched.
        steps: Most Adam steps.
        learning_rate: Adam step size, in units of the inputs' standard deviation.
        tv_weight: Weight of the total-variation prior.
        norm_weight: Weight of the sixth-power norm prior.
        jitter: Random shift in pixels per step.
        generator: Source of the starting noise and the shifts (default seeded with 0).
        read: Match the layer's ``"output"`` or its first ``"input"``.
        tolerance: Stop early once no image's objective fell by more than this fraction over
            the last ``CHECK_EVERY`` steps (0: run every step).

    Raises:
        ValueError: Bad ``inputs``; the layer is unknown or ambiguous or not reached; ``steps``
            outside [1, 100000]; a negative weight, jitter or tolerance.
    """
    return invert_codes(
        model,
        [(layer, read)],
        inputs,
        steps=steps,
        learning_rate=learning_rate,
        tv_weight=tv_weight,
        norm_weight=norm_weight,
        jitter=jitter,
        generator=generator,
        tolerance=tolerance,
    )[0]


#: Steps between two checks of the early stop (one host synchronisation each).
CHECK_EVERY = 20


def invert_codes(
    model: nn.Module,
    codes: Sequence[CodeSpec],
    inputs: torch.Tensor,
    steps: int = 200,
    learning_rate: float = 0.1,
    tv_weight: float = 0.05,
    norm_weight: float = 1e-4,
    jitter: int = 0,
    generator: torch.Generator | None = None,
    tolerance: float = 0.0,
) -> list[Inversion]:
    """Reconstruct ``inputs`` from each of several codes, in one optimisation.

    One image set per code, stacked into one batch, so each step is one forward and backward
    pass for every code (the model in eval mode treats the images independently): the same
    result as :func:`invert` per code, for about the cost of one. With ``tolerance`` the
    optimisation stops once every image's objective has settled (it fell by less than that
    fraction over the last ``CHECK_EVERY`` steps), for every code at once.

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
        ...                       nn.Linear(64, 2))
        >>> found = invert_codes(model, [("1", "output"), ("3", "input")], torch.randn(2, 1, 4, 4),
        ...                      steps=5)
        >>> [tuple(result.images.shape) for result in found]
        [(2, 1, 4, 4), (2, 1, 4, 4)]

    Args:
        model: The network.
        codes: ``(layer, read)`` pairs, as ``layer`` and ``read`` of :func:`invert`.
        inputs: The images whose codes are matched.
        steps, learning_rate, tv_weight, norm_weight, jitter, generator, tolerance: As in
            :func:`invert`.

    Returns:
        One :class:`Inversion` per code, in order.

    Raises:
        ValueError: As :func:`invert`; ``codes`` is empty.
    """
    check_images(inputs)
    _check_steps(steps)
    for name, value in (
        ("tv_weight", tv_weight),
        ("norm_weight", norm_weight),
        ("tolerance", tolerance),
    ):
        if isinstance(value, bool) or not value >= 0:
            raise ValueError(f"{name}: expected a number >= 0, got {value!r}")
    check_int("jitter", jitter, minimum=0)
    if not codes:
        raise ValueError("codes: expected at least one (layer, read) pair")
    readers = [_CodeReader(model, layer, read) for layer, read in codes]
    generator = generator or torch.Generator().manual_seed(0)
    count, sets = len(inputs), len(readers)

    def forward(images: torch.Tensor) -> list[torch.Tensor]:
        for reader in readers:
            reader.start()
        model(images)
        return [reader.code() for reader in readers]

    with preserved_state(model), grad_enabled(), contextlib.ExitStack() as hooks:
        for reader in readers:
            hooks.enter_context(reader.hooked())
        with torch.no_grad():
            goals = [code.detach().flatten(1).float().clone() for code in forward(inputs.detach())]
        scales = [goal.pow(2).sum(dim=1).clamp_min(1e-12) for goal in goals]
        spread = float(inputs.detach().float().std()) or 1.0
        shape = (sets * count, *inputs.shape[1:])
        noise = torch.randn(shape, generator=generator) * 0.1 * spread
        images = noise.to(inputs.device, inputs.dtype).requires_grad_(True)
        optimiser = torch.optim.Adam([images], lr=learning_rate * spread)

        def objective(batch: torch.Tensor) -> torch.Tensor:
            """Per image: its code's relative error at its own layer, plus the priors."""
            found = forward(batch)
            match = torch.cat(
                [
                    (code[j * count : (j + 1) * count].flatten(1).float() - goals[j]).pow(2).sum(1)
                    / scales[j]
                    for j, code in enumerate(found)
                ]
            )
            prior = tv_weight * total_variation(images) / spread**2 + norm_weight * (
                images / spread
            ).pow(6).flatten(1).mean(dim=1)
            return match + prior

        previous: torch.Tensor | None = None
        for step in range(steps):
            loss = objective(_jittered(images, jitter, generator))
            (gradient,) = torch.autograd.grad(loss.sum(), images)
            optimiser.zero_grad(set_to_none=True)
            images.grad = gradient
            optimiser.step()
            if tolerance and (step + 1) % CHECK_EVERY == 0:
                current = loss.detach()
                if previous is not None:
                    fallen = (previous - current) / previous.abs().clamp_min(1e-12)
                    if float(fallen.max()) < tolerance:  # one host sync per check
                        break
                previous = current
        with torch.no_grad():
            found = forward(images)
    results = []
    for j, code in enumerate(found):
        rows = slice(j * count, (j + 1) * count)
        error = (code[rows].flatten(1).float() - goals[j]).norm(dim=1) / scales[j].sqrt()
        results.append(Inversion(images[rows].detach(), error))
    return results


class _CodeReader:
    """Reads one code (a layer's output or input, at one call) during each forward pass, through
    the layer's :class:`~lightning_convviz.functional.sites.CallSites` (the last call when the
    layer names no call)."""

    def __init__(self, model: nn.Module, layer: LayerSpec, read: str) -> None:
        if read not in ("output", "input"):
            raise ValueError(f"read: expected 'output' or 'input', got {read!r}")
        self.sites = single_site_watch(model, layer)[0]
        self.layer, self.read = layer, read
        self.found: torch.Tensor | None = None

    def hooked(self) -> contextlib.AbstractContextManager[CallSites]:
        return self.sites.attached(self._keep, read="input" if self.read == "input" else "output")

    def _keep(self, _site: Site, value: torch.Tensor) -> None:
        self.found = value

    def start(self) -> None:
        self.found = None

    def code(self) -> torch.Tensor:
        if self.found is None:
            missing = self.sites.unmatched()
            raise ValueError(
                f"layer: {self.layer!r} was not called by the model's forward pass"
                if not missing
                else f"layer: no such call: {'; '.join(missing)}"
            )
        return self.found


def class_model(
    model: nn.Module,
    target: Target,
    image_shape: Sequence[int],
    steps: int = 200,
    learning_rate: float = 0.1,
    l2: float = 1e-3,
    blur_every: int = 0,
    jitter: int = 0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Images that maximise each target class's score (Simonyan et al., 2014).

    Gradient ascent with Adam on ``score[target] - l2 * ||x||^2`` from a blank (zero) image;
    optionally a 3 x 3 blur every ``blur_every`` steps and random shifts of up to ``jitter``
    pixels (from ``generator``), two common regularisers that make the images smoother.

    Example:
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
        >>> class_model(model, [0, 2], image_shape=(1, 2, 2), steps=3).shape
        torch.Size([2, 1, 2, 2])

    Args:
        model: Maps images to class scores.
        target: The classes, one image each (an int gives one image).
        image_shape: ``(C, H, W)`` of the model's inputs.
        steps: Ascent steps.
        learning_rate: Adam step size.
        l2: Weight of the squared-norm penalty.
        blur_every: Blur the image every this many steps (0: never).
        jitter: Random shift in pixels per step (0: none).
        generator: Source of the shifts (default seeded with 0).
        device: Where to build the images (default: the model's parameters' device).

    Raises:
        ValueError: ``target`` out of range; a bad ``image_shape``; ``steps`` outside
            [1, 100000]; a negative ``l2``, ``blur_every`` or ``jitter``.
    """
    _check_steps(steps)
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"image_shape: expected (C, H, W) of ints >= 1, got {image_shape!r}")
    if isinstance(l2, bool) or not l2 >= 0:
        raise ValueError(f"l2: expected a number >= 0, got {l2!r}")
    check_int("blur_every", blur_every, minimum=0)
    check_int("jitter", jitter, minimum=0)
    if device is None:
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
    count = 1 if isinstance(target, int) else len(torch.as_tensor(target).flatten())
    generator = generator or torch.Generator().manual_seed(0)
    blur = torch.full((shape[0], 1, 3, 3), 1 / 9, device=device)
    with preserved_state(model), grad_enabled():
        images = torch.zeros((count, *shape), device=device, requires_grad=True)
        with torch.no_grad():
            classes = model(images).shape[1]
        wanted = target_indices(target, count, classes).to(device)
        optimiser = torch.optim.Adam([images], lr=learning_rate)
        for step in range(steps):
            scores = model(_jittered(images, jitter, generator))
            objective = scores.gather(1, wanted[:, None]).sum() - l2 * images.pow(2).sum()
            (gradient,) = torch.autograd.grad(-objective, images)
            optimiser.zero_grad(set_to_none=True)
            images.grad = gradient
            optimiser.step()
            if blur_every and (step + 1) % blur_every == 0:
                with torch.no_grad():
                    images.copy_(F.conv2d(images, blur, padding=1, groups=shape[0]))
    return images.detach()
