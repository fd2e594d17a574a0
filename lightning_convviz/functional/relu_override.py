"""Swap the backward pass of every ReLU a model calls, whether module or function.

Guided backprop and deconvnet differ from the plain gradient only in how the gradient passes
through a ReLU. Peers (Captum, torch-cam) hook ``nn.ReLU`` *modules*, so a model that calls
``F.relu`` in its ``forward`` silently gets the plain gradient. :func:`modified_relu_backward`
instead intercepts the ReLU *calls* with a :class:`torch.overrides.TorchFunctionMode`, which sees
every torch function called from Python while it is active:

Covered (forward unchanged, backward replaced): ``nn.ReLU`` (also ``inplace=True``, because it
calls ``F.relu``), ``F.relu`` (either ``inplace``), ``F.relu_``, ``torch.relu``,
``torch.relu_``, ``Tensor.relu`` and ``Tensor.relu_``.

Not covered: ReLU written another way (``torch.clamp(x, min=0)``, ``torch.maximum``), ReLUs
inside TorchScript, ``torch.compile`` graphs or C++ extensions. Other activations
(:data:`OTHER_ACTIVATIONS`: LeakyReLU, GELU, SiLU, ReLU6, ...) keep their ordinary gradient,
and a warning names them (Python shows it once per place by default).

Pure torch: no Lightning, no logging.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch.overrides import TorchFunctionMode

__all__ = ["OTHER_ACTIVATIONS", "ReluRule", "modified_relu_backward"]

#: How the gradient passes a ReLU: ``"guided"`` (Springenberg et al.: only positive gradient
#: where the input was positive) or ``"deconvnet"`` (Zeiler & Fergus: the ReLU of the gradient).
ReluRule = Literal["guided", "deconvnet"]

#: Names of torch functions that are activations but not ReLU: passed through with a warning.
OTHER_ACTIVATIONS = frozenset(
    {
        "celu",
        "celu_",
        "elu",
        "elu_",
        "gelu",
        "glu",
        "hardshrink",
        "hardsigmoid",
        "hardswish",
        "hardtanh",
        "hardtanh_",
        "leaky_relu",
        "leaky_relu_",
        "logsigmoid",
        "mish",
        "prelu",
        "relu6",
        "rrelu",
        "rrelu_",
        "selu",
        "selu_",
        "sigmoid",
        "silu",
        "softplus",
        "softshrink",
        "softsign",
        "tanh",
        "tanhshrink",
        "threshold",
        "threshold_",
    }
)


def _guided_gradient(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return grad_output.clamp(min=0) * (output > 0)


def _deconvnet_gradient(grad_output: torch.Tensor, output: torch.Tensor) -> torch.Tensor:
    return grad_output.clamp(min=0)


_RULES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "guided": _guided_gradient,
    "deconvnet": _deconvnet_gradient,
}


class _ReLU(torch.autograd.Function):
    """ReLU forward (out of place) with a chosen backward rule."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rule: str) -> torch.Tensor:
        output = tensor.clamp(min=0)
        ctx.save_for_backward(output)
        ctx.rule = rule
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (output,) = ctx.saved_tensors
        return _RULES[ctx.rule](grad_output, output), None


class _InplaceReLU(torch.autograd.Function):
    """ReLU forward in place (the caller may rely on the mutation) with a chosen backward rule."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, rule: str) -> torch.Tensor:
        tensor.clamp_(min=0)
        ctx.mark_dirty(tensor)
        ctx.save_for_backward(tensor)
        ctx.rule = rule
        return tensor

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        (output,) = ctx.saved_tensors
        return _RULES[ctx.rule](grad_output, output), None


class _ReluBackwardMode(TorchFunctionMode):
    def __init__(self, rule: ReluRule) -> None:
        super().__init__()
        self.rule = rule
        self.other_activations: set[str] = set()

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in ("relu", "relu_") and args and isinstance(args[0], torch.Tensor):
            tensor = args[0]
            if torch.is_grad_enabled() and tensor.requires_grad:
                inplace = name == "relu_" or bool(kwargs.get("inplace", args[1:2] == (True,)))
                relu = _InplaceReLU if inplace else _ReLU
                return relu.apply(tensor, self.rule)
        elif name in OTHER_ACTIVATIONS:
            self.other_activations.add(name)
        return func(*args, **kwargs)


@contextmanager
def modified_relu_backward(rule: ReluRule) -> Iterator[None]:
    """Inside the block, every ReLU call keeps its forward value but back-propagates by ``rule``.

    Example:
        >>> x = torch.tensor([-1.0, 2.0], requires_grad=True)
        >>> with modified_relu_backward("deconvnet"):
        ...     y = torch.relu(x)
        >>> torch.autograd.grad(y, x, torch.tensor([3.0, -4.0]))[0]
        tensor([3., 0.])

    Args:
        rule: ``"guided"`` or ``"deconvnet"``.

    Raises:
        ValueError: ``rule`` is neither.

    Warns:
        UserWarning: The block called activations other than ReLU; their gradient is unchanged.
    """
    if rule not in _RULES:
        raise ValueError(f"rule: expected one of {sorted(_RULES)}, got {rule!r}")
    mode = _ReluBackwardMode(rule)
    with mode:
        yield
    if mode.other_activations:
        warnings.warn(
            f"{rule}: the model calls activations other than ReLU "
            f"({', '.join(sorted(mode.other_activations))}); their gradient passes unchanged. "
            "Only ReLU (nn.ReLU, F.relu, torch.relu, Tensor.relu and their in-place forms) is "
            "modified.",
            UserWarning,
            stacklevel=3,
        )
