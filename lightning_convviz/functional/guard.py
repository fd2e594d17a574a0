"""Context managers that let a diagnostic run without disturbing training.

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = [
    "RandomState",
    "eager_forward",
    "grad_enabled",
    "in_diagnostic",
    "preserved_state",
    "random_state",
    "replayed_random_state",
    "silent_replay",
]

#: The global torch random state: CPU, and every initialised CUDA device (or ``None``).
RandomState = tuple[torch.Tensor, list[torch.Tensor] | None]

_diagnostics_running = 0


def in_diagnostic() -> bool:
    """Whether a diagnostic is running (inside :func:`preserved_state`): hooks that collect
    statistics of training or validation passes ignore the forward passes it makes."""
    return _diagnostics_running > 0


@contextmanager
def preserved_state(
    model: nn.Module,
    *,
    eval_mode: bool = True,
    inputs: Sequence[torch.Tensor] = (),
    buffers: bool = False,
) -> Iterator[nn.Module]:
    """Run a diagnostic on ``model`` and put everything it could touch back as it was.

    On exit, also when the block raises: every module's ``.training`` flag, each of ``inputs``'
    ``requires_grad``, the global torch RNG state (CPU and every initialised CUDA device) and
    every parameter's ``.grad`` (values and ``None``-ness) are as on entry. Inside the block
    :func:`in_diagnostic` is true, so that collecting hooks ignore the block's forward passes,
    and cuDNN's autotuner is off (``torch.backends.cudnn.benchmark``, restored on exit): a
    diagnostic's batches have shapes that training never runs, and with the autotuner on, each
    new shape times every convolution algorithm of every layer first (seconds on a ResNet-50,
    while training waits).

    Example:
        >>> model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
        >>> with preserved_state(model):
        ...     _ = model(torch.randn(1, 1, 5, 5))  # eval mode: BatchNorm stats untouched
        >>> model.training
        True

    Args:
        model: The network to protect.
        eval_mode: Put the model in eval mode for the block (no dropout, no BatchNorm update).
        inputs: Tensors whose ``requires_grad`` the block may change.
        buffers: Also put every buffer's values back (for a forward pass in training mode,
            which updates BatchNorm's running statistics and batch count).

    Yields:
        ``model``.
    """
    training_flags = [(module, module.training) for module in model.modules()]
    requires_grad = [(tensor, tensor.requires_grad) for tensor in inputs]
    rng = random_state()
    saved_buffers = [(b, b.detach().clone()) for b in model.buffers()] if buffers else []
    grads = [
        (param, None if param.grad is None else param.grad.detach().clone())
        for param in model.parameters()
    ]
    compiled_forward = _use_original_forward(model)
    autotuning = torch.backends.cudnn.benchmark
    global _diagnostics_running
    _diagnostics_running += 1
    try:
        torch.backends.cudnn.benchmark = False
        if eval_mode:
            model.eval()
        yield model
    finally:
        _diagnostics_running -= 1
        torch.backends.cudnn.benchmark = autotuning
        if compiled_forward is not None:
            model.forward = compiled_forward
        for module, flag in training_flags:
            module.training = flag
        for tensor, flag in requires_grad:
            if tensor.is_leaf:
                tensor.requires_grad_(flag)
        _set_random_state(rng)
        with torch.no_grad():
            for buffer, value in saved_buffers:
                buffer.copy_(value)
        for param, grad in grads:
            if grad is None:
                param.grad = None
            elif param.grad is None or param.grad.shape != grad.shape:
                param.grad = grad
            else:
                param.grad.copy_(grad)  # keeps the tensor object the optimizer may hold


def random_state() -> RandomState:
    """The global torch random state now (CPU, and every initialised CUDA device)."""
    cuda = (
        torch.cuda.get_rng_state_all()
        if torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        else None
    )
    return torch.get_rng_state(), cuda


def _set_random_state(state: RandomState) -> None:
    cpu, cuda = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


@contextmanager
def replayed_random_state(state: RandomState) -> Iterator[None]:
    """Run the block from an earlier random state (the same dropout masks as then); on exit the
    random state is as on entry.

    Example:
        >>> earlier = random_state()
        >>> first = torch.rand(2)
        >>> with replayed_random_state(earlier):
        ...     again = torch.rand(2)
        >>> bool((first == again).all())
        True
    """
    now = random_state()
    _set_random_state(state)
    try:
        yield
    finally:
        _set_random_state(now)


@contextmanager
def eager_forward(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, a LightningModule compiled by Lightning runs its original forward.

    ``torch.compile`` does not watch forward hooks added after compilation (Dynamo skips hook
    guards by default), so hooks that must see a forward pass need the eager forward. Other
    models are left as they are.
    """
    compiled = _use_original_forward(model)
    try:
        yield model
    finally:
        if compiled is not None:
            model.forward = compiled


def _use_original_forward(model: nn.Module) -> Callable[..., Any] | None:
    """Swap a Lightning-compiled ``forward`` for the original; return the compiled one."""
    context = getattr(model, "_compiler_ctx", None)
    original = context.get("original_forward") if isinstance(context, dict) else None
    compiled: Callable[..., Any] | None = model.__dict__.get("forward")
    if original is None or compiled is None:
        return None
    model.forward = original
    return compiled


@contextmanager
def grad_enabled() -> Iterator[None]:
    """Enable autograd inside the block, even under Lightning's ``no_grad`` / ``inference_mode``.

    Tensors created under inference mode cannot enter autograd: clone them inside this block.
    """
    with torch.inference_mode(False), torch.enable_grad():
        yield


@contextmanager
def silent_replay(module: nn.Module) -> Iterator[None]:
    """A step replayed inside the block (a LightningModule's ``training_step`` called once more)
    leaves no trace: ``self.log`` / ``self.log_dict`` do nothing, and torchmetrics states and
    the module's list attributes (outputs collected for an epoch end) are put back as they were.
    Use it beside :func:`preserved_state` (parameters, buffers, flags, RNG).

    Example:
        >>> module = nn.Linear(1, 1)
        >>> module.outputs = [1]
        >>> with silent_replay(module):
        ...     module.outputs.append(2)
        >>> module.outputs
        [1]
    """
    metrics = [m for m in module.modules() if _is_metric(m)]
    saved_metrics = [(m, _metric_state(m)) for m in metrics]
    lists = {name: len(value) for name, value in vars(module).items() if isinstance(value, list)}
    missing = object()
    had = {name: vars(module).get(name, missing) for name in ("log", "log_dict")}
    vars(module).update(log=_nothing, log_dict=_nothing)  # the instance's, over the class's
    try:
        yield
    finally:
        for name, value in had.items():  # the class's methods again, or what the instance had
            if value is missing:
                vars(module).pop(name, None)
            else:
                vars(module)[name] = value
        for metric, state in saved_metrics:
            for key, value in state.items():
                setattr(metric, key, value)
        for name, length in lists.items():
            value = vars(module).get(name)
            if isinstance(value, list):
                del value[length:]


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _is_metric(module: nn.Module) -> bool:
    return any(
        cls.__name__ == "Metric" and cls.__module__.startswith("torchmetrics")
        for cls in type(module).__mro__
    )


def _metric_state(metric: nn.Module) -> dict[str, Any]:
    """A copy of a torchmetrics metric's accumulated state (tensors cloned, lists copied)."""
    keys = [*getattr(metric, "_defaults", {}), "_update_count", "_computed", "_forward_cache"]
    state: dict[str, Any] = {}
    for key in keys:
        if hasattr(metric, key):
            value = getattr(metric, key)
            if isinstance(value, torch.Tensor):
                value = value.clone()
            elif isinstance(value, list):
                value = list(value)
            state[key] = value
    return state
