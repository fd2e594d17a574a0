"""Layer selection and activation capture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import TinyCNN, hook_count
from torch import nn

from lightning_convviz.functional import (
    capture_activations,
    conv_layers,
    default_activation_layers,
    hook_outputs,
    resolve_layers,
)


class FunctionalReluNet(nn.Module):
    """Calls F.relu: no activation modules to hook."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.conv2(x))
        return self.fc(x.mean(dim=(2, 3)))


def test_default_layers_are_each_conv_blocks_activation() -> None:
    assert list(default_activation_layers(TinyCNN())) == ["relu1", "relu2"]


def test_default_layers_without_activation_modules_take_conv_or_norm_output() -> None:
    assert list(default_activation_layers(FunctionalReluNet())) == ["bn1", "conv2"]


def test_default_layers_on_resnet_select_shared_relu_once() -> None:
    names = list(default_activation_layers(torchvision.models.resnet18()))
    assert names[:4] == ["relu", "layer1.0.relu", "layer1.0.bn2", "layer1.1.relu"]
    assert len(names) == len(set(names))
    assert "layer2.0.downsample.1" in names


def test_no_conv_selects_nothing() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    assert default_activation_layers(model) == {}
    with pytest.raises(ValueError, match="no convolution layer"), capture_activations(model):
        pass


def test_select_by_name_glob_type_and_module() -> None:
    model = TinyCNN()
    assert list(resolve_layers(model, "conv2")) == ["conv2"]
    assert list(resolve_layers(model, "relu*")) == ["relu1", "relu2"]
    assert list(resolve_layers(model, nn.Conv2d)) == ["conv1", "conv2"]
    assert list(resolve_layers(model, [model.bn2, "conv1"])) == ["conv1", "bn2"]
    assert list(conv_layers(model)) == ["conv1", "conv2"]


def test_unknown_name_lists_available_layers() -> None:
    with pytest.raises(ValueError, match=r"no module named 'conv9'.*conv1 \(Conv2d\)"):
        resolve_layers(TinyCNN(), "conv9")


def test_foreign_module_and_bad_selector_are_rejected() -> None:
    with pytest.raises(ValueError, match="not part of"):
        resolve_layers(TinyCNN(), nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError, match="has no LSTM"):
        resolve_layers(TinyCNN(), nn.LSTM)
    with pytest.raises(TypeError, match="got int"):
        resolve_layers(TinyCNN(), [3])  # type: ignore[list-item]


def test_capture_returns_detached_outputs_and_removes_hooks() -> None:
    model = TinyCNN()
    before = hook_count(model)
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    with capture_activations(model, ["conv1", "relu2"]) as acts:
        assert hook_count(model) == before + 2
        model(x)
    assert hook_count(model) == before
    assert set(acts) == {"conv1", "relu2"}
    assert acts["relu2"].shape == (2, 8, 16, 16)
    assert not acts["conv1"].requires_grad
    torch.testing.assert_close(acts["conv1"], model.conv1(x).detach())


def test_hooks_removed_when_body_raises() -> None:
    model = TinyCNN()
    before = hook_count(model)
    with (
        pytest.raises(RuntimeError, match="boom"),
        hook_outputs(resolve_layers(model), lambda name, out: None),
    ):
        assert hook_count(model) > before
        raise RuntimeError("boom")
    assert hook_count(model) == before
