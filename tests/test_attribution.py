"""Attribution functions against Captum, by hand, for safety and for bad input."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    Deconvolution,
    GuidedBackprop,
    LayerAttribution,
    LayerGradCam,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from helpers import TinyCNN, hook_count
from torch import nn
from torch.testing import assert_close

from lightning_convviz.functional import (
    deconvnet,
    grad_cam,
    guided_backprop,
    occlusion,
    occlusion_scores,
    saliency,
    smoothgrad,
)


def small_cnn() -> nn.Module:
    """Conv-BN-ReLU(inplace) twice with pooling, trained a little so BN statistics are real.

    Returned in train mode, as a model is when a callback runs.
    """
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(32, 5),
    )
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 12, 12))
    return model.train()


def tiny_cnn() -> nn.Module:
    model = TinyCNN()
    with torch.no_grad():
        model(torch.randn(8, 3, 16, 16))
    return model.train()


MODELS = {"sequential": (small_cnn, (4, 3, 12, 12), 5), "tiny": (tiny_cnn, (3, 3, 16, 16), 2)}


@pytest.fixture(params=sorted(MODELS))
def case(request: pytest.FixtureRequest) -> tuple[nn.Module, nn.Module, torch.Tensor, list[int]]:
    """(model in train mode, its eval-mode copy for Captum, inputs, one target per image)."""
    factory, shape, classes = MODELS[request.param]
    model = factory()
    reference = copy.deepcopy(model).eval()
    inputs = torch.randn(shape)
    targets = [index % classes for index in range(shape[0])]
    return model, reference, inputs, targets


# -- equal to Captum -----------------------------------------------------------------------------


@pytest.mark.parametrize("use_abs", [True, False])
def test_saliency_equals_captum(case: Any, use_abs: bool) -> None:
    model, reference, inputs, targets = case
    expected = Saliency(reference).attribute(inputs, target=targets, abs=use_abs)
    assert_close(saliency(model, inputs, targets, abs=use_abs), expected)


def test_smoothgrad_equals_captum_noise_tunnel_with_the_same_noise(case: Any) -> None:
    model, reference, inputs, targets = case
    torch.manual_seed(7)
    expected = NoiseTunnel(Saliency(reference)).attribute(
        inputs, nt_type="smoothgrad", nt_samples=5, stdevs=0.3, target=targets
    )
    generator = torch.Generator().manual_seed(7)
    ours = smoothgrad(model, inputs, targets, n_samples=5, stdev=0.3, generator=generator)
    assert_close(ours, expected)
    # batching the noisy copies changes nothing
    again = smoothgrad(
        model,
        inputs,
        targets,
        n_samples=5,
        stdev=0.3,
        generator=torch.Generator().manual_seed(7),
        batch_size=3,
    )
    assert_close(again, ours)


def test_deconvnet_and_guided_backprop_equal_captum(case: Any) -> None:
    model, reference, inputs, targets = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns that it sets hooks
        expected_deconv = Deconvolution(reference).attribute(inputs, target=targets)
        expected_guided = GuidedBackprop(reference).attribute(inputs, target=targets)
    assert_close(deconvnet(model, inputs, targets), expected_deconv)
    assert_close(guided_backprop(model, inputs, targets), expected_guided)
    # and they are not just the gradient
    plain = saliency(model, inputs, targets, abs=False)
    assert not torch.allclose(expected_guided, plain)
    assert not torch.allclose(expected_deconv, plain)


@pytest.mark.parametrize("relu", [True, False])
def test_grad_cam_equals_captum_at_the_last_conv(case: Any, relu: bool) -> None:
    model, reference, inputs, targets = case
    last_conv = [m for m in reference.modules() if isinstance(m, nn.Conv2d)][-1]
    expected = LayerGradCam(reference, last_conv).attribute(
        inputs, target=targets, relu_attributions=relu
    )
    result = grad_cam(model, inputs, targets, relu=relu)
    assert_close(result.layer_map, expected)
    upsampled = LayerAttribution.interpolate(expected, tuple(inputs.shape[2:]), "bilinear")
    assert_close(result.input_map, upsampled)
    assert result.input_map.shape == (inputs.shape[0], 1, *inputs.shape[2:])


def test_grad_cam_reads_a_chosen_layer_before_its_in_place_relu() -> None:
    model = tiny_cnn()
    reference = copy.deepcopy(model).eval()
    inputs = torch.randn(2, 3, 16, 16)
    expected = LayerGradCam(reference, reference.bn1).attribute(
        inputs, target=1, relu_attributions=True
    )
    assert_close(grad_cam(model, inputs, 1, layer="bn1").layer_map, expected)
    assert_close(grad_cam(model, inputs, 1, layer=model.bn1).layer_map, expected)


@pytest.mark.parametrize(
    ("window", "stride", "baseline", "score"),
    [
        ((3, 4), (2, 3), 0.0, "probability"),  # strides that do not divide: cut windows
        (4, 4, 0.5, "logit"),
        ((12, 12), 1, 0.0, "probability"),  # the whole image at once
        (3, 1, -1.0, "probability"),
    ],
)
def test_occlusion_equals_captum(window: Any, stride: Any, baseline: float, score: str) -> None:
    model = small_cnn()
    reference = copy.deepcopy(model).eval()
    inputs = torch.randn(3, 3, 12, 12)
    targets = [0, 3, 4]
    window_hw = window if isinstance(window, tuple) else (window, window)
    stride_hw = stride if isinstance(stride, tuple) else (stride, stride)

    def softmax_model(images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(reference(images), dim=1)

    forward = softmax_model if score == "probability" else reference
    expected = Occlusion(forward).attribute(
        inputs,
        target=targets,
        sliding_window_shapes=(3, *window_hw),
        strides=(3, *stride_hw),
        baselines=baseline,
    )
    ours = occlusion(model, inputs, targets, window, stride, baseline, score)  # type: ignore[arg-type]
    assert_close(ours, expected)
    assert_close(
        occlusion(model, inputs, targets, window, stride, baseline, score, batch_size=1),  # type: ignore[arg-type]
        expected,
    )


def test_occlusion_skips_windows_that_already_equal_the_baseline() -> None:
    model = small_cnn()
    reference = copy.deepcopy(model).eval()
    inputs = torch.zeros(2, 3, 12, 12)
    inputs[:, :, 4:8, 4:8] = torch.randn(2, 3, 4, 4)  # a small object on a zero background
    calls: list[int] = []
    model.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    scores = occlusion_scores(model, inputs, 1, window=4, stride=2, batch_size=100)
    # 5 x 5 windows per image; the 4 corner-most rows/columns of windows miss the object
    touching = sum(
        1
        for r in range(5)
        for c in range(5)
        if 2 * r < 8 and 2 * r + 4 > 4 and 2 * c < 8 and 2 * c + 4 > 4
    )
    assert calls == [2, 2 * touching]
    assert torch.equal(scores.occluded[0, 0, 0], scores.base[0])
    expected = Occlusion(lambda x: torch.softmax(reference(x), 1)).attribute(
        inputs, target=1, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2)
    )
    assert_close(occlusion(model, inputs, 1, window=4, stride=2), expected)


# -- by hand -------------------------------------------------------------------------------------


def linear_model() -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.arange(24.0).view(3, 8) - 12)
    return model


def test_saliency_of_a_linear_model_is_the_weight_row() -> None:
    model = linear_model()
    inputs = torch.randn(2, 2, 2, 2)
    weight = model[1].weight.detach()
    result = saliency(model, inputs, [2, 0])
    assert torch.equal(result[0].flatten(), weight[2].abs())
    assert torch.equal(result[1].flatten(), weight[0].abs())
    assert torch.equal(saliency(model, inputs, 0, abs=False)[0].flatten(), weight[0])


def test_occlusion_logit_of_a_pixel_sum_by_hand() -> None:
    """With f = sum of pixels and non-overlapping windows, a pixel's attribution is the sum of
    its window; the occluded score per position is the total minus that sum."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
    image = torch.arange(16.0).view(1, 1, 4, 4)
    result = occlusion(model, image, 0, window=2, stride=2, score="logit")
    window_sums = image.view(2, 2, 2, 2).permute(0, 2, 1, 3).sum(dim=(2, 3))  # [[10,18],[42,50]]
    expected = window_sums.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(result[0, 0], expected)
    scores = occlusion_scores(model, image, 0, window=2, stride=2, score="logit")
    assert torch.equal(scores.occluded[0], 120.0 - window_sums)


# -- guided backprop and deconvnet cover functional ReLU -----------------------------------------


class ModuleReLUNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(3 if i == 0 else 6, 6, 3, padding=1) for i in range(5))
        self.relus = nn.ModuleList(
            [nn.ReLU(inplace=True), nn.ReLU(), nn.ReLU(), nn.ReLU(inplace=True), nn.ReLU()]
        )
        self.head = nn.Linear(6 * 64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, relu in zip(self.convs, self.relus, strict=True):
            x = relu(conv(x))
        return self.head(x.flatten(1))


class FunctionalReLUNet(ModuleReLUNet):
    """The same network, its ReLUs written as every functional form torch has."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.convs
        x = F.relu(c[0](x), inplace=True)
        x = torch.relu(c[1](x))
        x = c[2](x).relu()
        x = c[3](x)
        x.relu_()
        x = F.relu_(c[4](x))
        return self.head(x.flatten(1))


@pytest.mark.parametrize("method", [guided_backprop, deconvnet])
def test_functional_relu_model_equals_its_module_twin(method: Callable[..., torch.Tensor]) -> None:
    modules = ModuleReLUNet()
    functional = FunctionalReLUNet()
    functional.load_state_dict(modules.state_dict())
    inputs = torch.randn(2, 3, 8, 8)
    expected = method(modules, inputs, [0, 2])
    assert_close(method(functional, inputs, [0, 2]), expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        captum = {guided_backprop: GuidedBackprop, deconvnet: Deconvolution}[method]
        assert_close(captum(modules).attribute(inputs, target=[0, 2]), expected)
        # Captum hooks modules only: on the functional twin it returns the plain gradient
        missed = captum(functional).attribute(inputs, target=[0, 2])
    assert_close(missed, saliency(functional, inputs, [0, 2], abs=False))
    assert not torch.allclose(missed, expected)


def test_other_activations_pass_unchanged_with_a_warning() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.GELU(),
        nn.Conv2d(4, 4, 3),
        nn.LeakyReLU(),
        nn.Flatten(),
        nn.Linear(64, 2),
    )
    inputs = torch.randn(2, 3, 8, 8)
    with pytest.warns(UserWarning, match=r"other than ReLU \(gelu, leaky_relu\)"):
        result = guided_backprop(model, inputs, 1)
    assert_close(result, saliency(model, inputs, 1, abs=False))


# -- safety --------------------------------------------------------------------------------------


def _state(model: nn.Module) -> dict[str, Any]:
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "rng": torch.get_rng_state(),
        "hooks": hook_count(model),
    }


def _assert_unchanged(before: dict[str, Any], model: nn.Module) -> None:
    after = _state(model)
    for key, value in before["tensors"].items():
        assert torch.equal(value, after["tensors"][key]), key
    for old, new in zip(before["grads"], after["grads"], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)
    assert before["training"] == after["training"]
    assert torch.equal(before["rng"], after["rng"])
    assert before["hooks"] == after["hooks"]


ALL_METHODS: dict[str, Callable[[nn.Module, torch.Tensor, Any], Any]] = {
    "saliency": saliency,
    "smoothgrad": lambda m, x, t: smoothgrad(m, x, t, n_samples=3),
    "deconvnet": deconvnet,
    "guided_backprop": guided_backprop,
    "grad_cam": grad_cam,
    "occlusion": lambda m, x, t: occlusion(m, x, t, window=4, stride=4),
}


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
def test_methods_leave_the_model_as_they_found_it(name: str) -> None:
    model = tiny_cnn()
    model.eval().conv2.train()  # mixed flags must come back mixed
    half = list(model.parameters())[::2]
    for param in half:
        param.grad = torch.randn_like(param)  # a gradient mid-accumulation
    inputs = torch.randn(2, 3, 16, 16)
    before = _state(model)
    ALL_METHODS[name](model, inputs, 1)
    _assert_unchanged(before, model)
    with pytest.raises(ValueError, match="target"):
        ALL_METHODS[name](model, inputs, 7)
    _assert_unchanged(before, model)


@pytest.mark.parametrize("name", sorted(ALL_METHODS))
def test_methods_work_under_no_grad_and_inference_mode(name: str) -> None:
    model = tiny_cnn()
    inputs = torch.randn(2, 3, 16, 16)
    expected = ALL_METHODS[name](model, inputs, 1)
    with torch.no_grad():
        under_no_grad = ALL_METHODS[name](model, inputs, 1)
    with torch.inference_mode():
        frozen = inputs.clone()  # an inference tensor, as Lightning's validate() hands out
        under_inference = ALL_METHODS[name](model, frozen, 1)
    for result in (under_no_grad, under_inference):
        if isinstance(result, tuple):
            for ours, reference in zip(result, expected, strict=True):
                assert_close(ours, reference)
        else:
            assert_close(result, expected)


def test_smoothgrad_default_noise_is_repeatable_and_leaves_global_rng() -> None:
    model = tiny_cnn()
    inputs = torch.randn(2, 3, 16, 16)
    state = torch.get_rng_state()
    first = smoothgrad(model, inputs, 0, n_samples=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(smoothgrad(model, inputs, 0, n_samples=4), first)
    other = smoothgrad(model, inputs, 0, n_samples=4, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other, first)


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: saliency(m, x[0], 0), r"^inputs: expected a tensor N x C x H x W"),
        (lambda m, x: saliency(m, x.long(), 0), r"^inputs: expected a floating point"),
        (lambda m, x: saliency(m, x, 2), r"^target: class indices must lie in \[0, 1\]"),
        (lambda m, x: saliency(m, x, -1), r"^target: class indices"),
        (lambda m, x: guided_backprop(m, x, [0, 1, 1]), r"^target: expected an int or 2 ints"),
        (lambda m, x: deconvnet(m, x, [0.5, 1.0]), r"^target: expected integer"),
        (lambda m, x: smoothgrad(m, x, 0, n_samples=0), r"^n_samples: expected"),
        (lambda m, x: smoothgrad(m, x, 0, stdev=-1.0), r"^stdev: expected"),
        (lambda m, x: grad_cam(m, x, 0, layer="conv9"), r"^layers: .*Available layers"),
        (lambda m, x: grad_cam(m, x, 0, layer="conv*"), r"^layer: expected exactly one module"),
        (lambda m, x: grad_cam(m, x, 0, layer="head"), r"^layer: expected an output N x C"),
        (lambda m, x: occlusion(m, x, 0, window=17, stride=1), r"^window: \(17, 17\) is larger"),
        (lambda m, x: occlusion(m, x, 0, window=4, stride=0), r"^stride: expected an int >= 1"),
        (lambda m, x: occlusion(m, x, 0, window=4, stride=5), r"^stride: the height stride 5"),
        (lambda m, x: occlusion(m, x, 0, window=(2, 3, 4), stride=1), r"^window: expected"),
        (lambda m, x: occlusion(m, x, 3, window=4, stride=4), r"^target: class indices"),
        (lambda m, x: occlusion(m, x, 0, 4, 4, score="odds"), r"^score: expected"),  # type: ignore[arg-type]
        (lambda m, x: occlusion(m, x, 0, 4, 4, batch_size=0), r"^batch_size: expected"),
    ],
)
def test_bad_input_gets_a_clear_value_error(call: Any, message: str) -> None:
    model = tiny_cnn()
    inputs = torch.randn(2, 3, 16, 16)
    before = _state(model)
    with pytest.raises(ValueError, match=message):
        call(model, inputs)
    _assert_unchanged(before, model)


def test_grad_cam_needs_a_conv_or_a_layer() -> None:
    with pytest.raises(ValueError, match=r"^layer: the forward pass of Sequential calls no conv"):
        grad_cam(linear_model(), torch.randn(1, 2, 2, 2), 0)


def test_a_model_that_does_not_return_class_scores_is_named() -> None:
    model = nn.Sequential(nn.Conv2d(3, 2, 3))
    with pytest.raises(ValueError, match=r"^model: expected class scores N x classes"):
        saliency(model, torch.randn(1, 3, 8, 8), 0)


def test_grad_cam_on_a_frozen_layer_and_on_one_that_does_not_reach_the_scores() -> None:
    class Frozen(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1).requires_grad_(False)
            self.unused = nn.Conv2d(3, 2, 3, padding=1)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.unused(x)
            return self.head(torch.relu(self.stem(x)).mean(dim=(2, 3)))

    model = Frozen()
    inputs = torch.randn(2, 3, 8, 8)
    reference = LayerGradCam(model, model.stem).attribute(inputs, target=1, relu_attributions=True)
    assert_close(grad_cam(model, inputs, 1, layer="stem").layer_map, reference)
    assert torch.equal(
        grad_cam(model, inputs, 1, layer="unused").layer_map, torch.zeros(2, 1, 8, 8)
    )
