"""preserved_state and grad_enabled: the diagnostic leaves no trace."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyCNN

from lightning_convviz.functional import grad_enabled, preserved_state


def _grads(model: torch.nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in model.parameters()]


def test_restores_flags_rng_grads_and_buffers_even_on_error() -> None:
    model = TinyCNN()
    model.train()
    model.bn2.eval()  # a mixed state must come back exactly
    model(torch.randn(4, 3, 16, 16)).sum().backward()
    model.head.bias.grad = None
    grads = _grads(model)
    flags = [m.training for m in model.modules()]
    buffers = {k: v.clone() for k, v in model.state_dict().items()}
    inputs = torch.randn(2, 3, 16, 16)
    rng = torch.get_rng_state()
    with (
        pytest.raises(RuntimeError, match="diagnostic failed"),
        preserved_state(model, inputs=[inputs]),
    ):
        assert not model.training and not model.bn1.training
        inputs.requires_grad_(True)
        torch.randn(100)  # consumes global RNG
        model(inputs).sum().backward()  # the kind of thing a diagnostic must never do
        raise RuntimeError("diagnostic failed")
    assert [m.training for m in model.modules()] == flags
    assert not inputs.requires_grad
    assert torch.equal(torch.get_rng_state(), rng)
    for before, param in zip(grads, model.parameters(), strict=True):
        if before is None:
            assert param.grad is None
        else:
            assert torch.equal(param.grad, before)
    for key, value in model.state_dict().items():
        assert torch.equal(value, buffers[key]), key


@pytest.mark.parametrize("autotuning", [True, False])
def test_cudnn_autotuner_is_off_inside_and_restored_even_on_error(
    monkeypatch: pytest.MonkeyPatch, autotuning: bool
) -> None:
    """A diagnostic's odd batch shapes must not start cuDNN's autotuner (issue 35: seconds of
    algorithm timing per new shape on a GPU, while training waits)."""
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", autotuning)
    model = TinyCNN()
    with pytest.raises(RuntimeError, match="diagnostic failed"), preserved_state(model):
        assert torch.backends.cudnn.benchmark is False
        raise RuntimeError("diagnostic failed")
    assert torch.backends.cudnn.benchmark is autotuning


def test_grad_enabled_under_inference_mode() -> None:
    model = TinyCNN()
    with torch.inference_mode():
        images = torch.randn(2, 3, 16, 16)
        with grad_enabled():
            x = images.clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(model(x).sum(), x)
    assert gradient.shape == images.shape
    assert gradient.abs().sum() > 0
