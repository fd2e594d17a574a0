"""Layer selection, call sites and activation capture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from helpers import PositionBiasCNN, TinyCNN, hook_count
from torch import nn

from lightning_convviz.functional import (
    ACTIVATION_SITES,
    CallSites,
    Site,
    capture_activations,
    conv_layers,
    resolve_layers,
    resolve_single_site,
    site_name,
    split_selector,
    survey,
)
from lightning_convviz.functional.defaults import (
    choose_activation_sites,
    classifier_call,
    last_feature_convolution,
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


def default_sites(model: nn.Module, side: int = 32, batch: int = 1) -> list[str]:
    with torch.no_grad(), capture_activations(model.eval()) as acts:
        model(torch.randn(batch, 3, side, side))
    return list(acts)


def test_default_layers_are_each_conv_blocks_activation() -> None:
    assert default_sites(TinyCNN(), 16) == ["relu1", "relu2"]


def test_default_layers_without_activation_modules_take_conv_or_norm_output() -> None:
    assert default_sites(FunctionalReluNet()) == ["bn1", "conv2"]


def test_default_sites_follow_the_calls_of_resnet_blocks() -> None:
    # BasicBlock: relu after bn1, relu after the residual sum; the downsample shares the second
    assert default_sites(torchvision.models.resnet18())[:5] == [
        "relu",
        "layer1.0.relu:1",
        "layer1.0.relu:2",
        "layer1.1.relu:1",
        "layer1.1.relu:2",
    ]
    # Bottleneck: three calls, 64, 64 and 256 channels; no BatchNorm output stands in for them
    model = torchvision.models.resnet50().eval()
    with torch.no_grad(), capture_activations(model) as acts:
        model(torch.randn(1, 3, 64, 64))
    assert [acts[f"layer1.0.relu:{k}"].shape[1] for k in (1, 2, 3)] == [64, 64, 256]
    assert len(acts) == 1 + 16 * 3 and not any("bn" in name for name in acts)


def test_channels_last_blocks_are_read_with_their_channels_first() -> None:
    # ConvNeXt: depthwise conv, channels-last LayerNorm, Linear, GELU, Linear: the GELU is the
    # block's activation, on a N x H x W x 4C map, captured as N x 4C x H x W
    model = torchvision.models.convnext_tiny().eval()
    with torch.no_grad(), capture_activations(model) as acts:
        model(torch.randn(1, 3, 64, 64))
    assert next(iter(acts)) == "features.1.0.block.4"
    assert tuple(acts["features.1.0.block.4"].shape) == (1, 4 * 96, 16, 16)
    assert len(acts) == 3 + 3 + 9 + 3
    # selected by name, the first pass tells its layout the same way
    with torch.no_grad(), capture_activations(model, "features.1.0.block.4") as acts:
        model(torch.randn(1, 3, 64, 64))
    assert tuple(acts["features.1.0.block.4"].shape) == (1, 4 * 96, 16, 16)


def test_a_module_called_twice_gives_two_sites_with_their_own_outputs() -> None:
    relu = nn.ReLU()
    model = nn.Sequential(nn.Conv2d(1, 2, 3), relu, nn.Conv2d(2, 3, 1), relu)
    with capture_activations(model, "1") as acts:
        model(torch.randn(2, 1, 6, 6))
    assert {name: a.shape[1] for name, a in acts.items()} == {"1:1": 2, "1:2": 3}
    with capture_activations(model, "1:2") as acts:
        model(torch.randn(2, 1, 6, 6))
    assert list(acts) == ["1:2"]
    with (
        pytest.raises(ValueError, match=r"no such call: 1:3 \(1 is called 2 times per forward"),
        capture_activations(model, "1:3"),
    ):
        model(torch.randn(2, 1, 6, 6))


def test_calls_are_counted_per_forward_pass_of_the_outermost_module() -> None:
    # a LightningModule-like wrapper that calls its submodule, twice per step here
    inner = torchvision.models.resnet18().eval()
    wrapper = nn.Module()
    wrapper.net = inner
    sites = CallSites(wrapper, resolve_layers(wrapper, "net.layer1.0.relu"), None)
    seen: list[Site] = []
    with sites.attached(lambda site, output: seen.append(site)):
        for _ in range(2):
            inner(torch.randn(1, 3, 32, 32))
    assert [site.call for site in seen] == [1, 2, 1, 2]
    assert sites.calls == {"net.layer1.0.relu": 2}
    assert [sites.name(site) for site in seen[:2]] == ["net.layer1.0.relu:1", "net.layer1.0.relu:2"]


def test_hooks_are_removed_after_a_forward_that_raises() -> None:
    model = torchvision.models.resnet18().eval()
    sites = CallSites(model, None, ACTIVATION_SITES)
    before = hook_count(model)
    with pytest.raises(RuntimeError), sites.attached():
        assert hook_count(model) > before
        model(torch.randn(1, 5, 32, 32))  # wrong channel count: the stem raises
    assert hook_count(model) == before
    # a later pass still starts counting at 1 (the always-called hook closed the failed one)
    with torch.no_grad(), sites.attached():
        model(torch.randn(1, 3, 32, 32))
    assert sites.chosen is not None and Site("layer1.0.relu", 2) in sites.chosen


def test_site_names_and_selectors() -> None:
    assert site_name("relu", 1, 1) == "relu" and site_name("relu", 2, 3) == "relu:2"
    assert split_selector("layer1.0.relu:3") == ("layer1.0.relu", 3)
    assert split_selector("layer1.*") == ("layer1.*", None)
    model = torchvision.models.resnet18()
    assert list(resolve_layers(model, "layer1.*.relu:2")) == ["layer1.0.relu:2", "layer1.1.relu:2"]
    assert resolve_single_site(model, "layer2.0.relu:1")[::2] == ("layer2.0.relu", 1)


def test_survey_sees_what_eval_mode_calls() -> None:
    googlenet = torchvision.models.googlenet(aux_logits=True, init_weights=False)
    calls, output_shape = survey(googlenet, torch.randn(1, 3, 64, 64))
    called = {call.site.module for call in calls}
    assert "aux1.conv.conv" not in called and "inception5b.branch1.conv" in called
    assert output_shape == (2, 1000)  # one image, passed twice
    assert googlenet.training  # as before
    sites = choose_activation_sites(calls)
    assert all(name.endswith(".bn") for name, _ in sites)  # BasicConv2d calls F.relu


def test_tensors_that_do_not_follow_the_batch_are_not_default_sites() -> None:
    model = PositionBiasCNN().eval()
    image = torch.randn(1, 3, 16, 16)
    # not bias_mlp.1, called first (its table has one row; a batch of two tells it apart)
    assert default_sites(model, 16, batch=2) == ["relu1", "relu2"]
    assert last_feature_convolution(model, image) == "conv2"
    calls, output_shape = survey(model, image)
    assert {call.output_shape[0] for call in calls if call.site.module.startswith("bias")} == {1}
    assert list(choose_activation_sites(calls, output_shape)) == [
        Site("relu1", 1),
        Site("relu2", 1),
    ]
    swin = torchvision.models.swin_v2_t(num_classes=10).eval()
    calls, output_shape = survey(swin, torch.randn(1, 3, 64, 64))
    first = next(iter(choose_activation_sites(calls, output_shape)))
    assert first.module == "features.1.0.mlp.1"  # not attn.cpb_mlp.1, the position-bias MLP


def test_no_conv_selects_nothing() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
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
    with pytest.raises(ValueError, match=r"no module named 'conv9'"):
        resolve_layers(TinyCNN(), "conv9:2")


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
        assert hook_count(model) > before
        model(x)
    assert hook_count(model) == before
    assert set(acts) == {"conv1", "relu2"}
    assert acts["relu2"].shape == (2, 8, 16, 16)
    assert not acts["conv1"].requires_grad
    torch.testing.assert_close(acts["conv1"], model.conv1(x).detach())


def test_hooks_removed_when_body_raises() -> None:
    model = TinyCNN()
    before = hook_count(model)
    with pytest.raises(RuntimeError, match="boom"), capture_activations(model):
        assert hook_count(model) > before
        raise RuntimeError("boom")
    assert hook_count(model) == before


@pytest.mark.parametrize(
    ("name", "grad_cam_layer", "classifier"),
    [
        ("resnet50", "layer4.2.conv3", "fc"),
        ("googlenet", "inception5b.branch4.1.conv", "fc"),  # not the aux heads' convs
        ("squeezenet1_1", "features.12.expand3x3", "classifier.1"),  # not the 1x1-conv logits
        ("mobilenet_v3_small", "features.12.0", "classifier.3"),
    ],
)
def test_default_layers_of_real_architectures(
    name: str, grad_cam_layer: str, classifier: str
) -> None:
    extra = {"aux_logits": True, "init_weights": False} if name == "googlenet" else {}
    model = torchvision.models.get_model(name, num_classes=10, **extra)
    image = torch.randn(1, 3, 64, 64)
    assert last_feature_convolution(model, image) == grad_cam_layer
    found = classifier_call(*survey(model, image))
    assert found is not None and found.site.module == classifier


def test_the_classifier_is_the_layer_that_produces_the_classes() -> None:
    class SideBranch(TinyCNN):
        """A convolution called after the head, on a side branch: not the classifier."""

        def __init__(self) -> None:
            super().__init__()
            self.side = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) + 0 * self.side(x).mean()

    found = classifier_call(*survey(SideBranch(), torch.randn(2, 3, 16, 16)))
    assert found is not None and found.site.module == "head"
