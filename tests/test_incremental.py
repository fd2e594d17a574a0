"""The incremental forward pass equals the model's own output on occluded images."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.testing import assert_close

import lightning_convviz.functional.incremental as incremental
from lightning_convviz.functional import occlusion, occlusion_scores
from lightning_convviz.functional.incremental import IncrementalForward


class Zoo(nn.Module):
    """Every locally handled operation, with odd geometry, an in-place ReLU whose input is read
    again afterwards, a residual sum and an unknown activation that ends the local part."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2, bias=False)
        self.conv3 = nn.Conv2d(8, 12, 1, stride=2)
        self.bn3 = nn.BatchNorm2d(12, affine=False)
        self.drop = nn.Dropout(0.5)
        self.conv4 = nn.Conv2d(12, 12, (3, 1), padding=(1, 0))
        self.act = nn.SiLU()
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(self.conv1(x)), inplace=True)
        b = self.pool(a)
        c = self.conv2(b)
        c.relu_()
        d = c + b  # reads c after its in-place ReLU
        e = torch.relu(self.bn3(self.conv3(d)))
        h = self.act(self.conv4(self.drop(e)))
        return self.head(h.mean(dim=(2, 3)))


def _ready(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        model.train()
        for _ in range(2):
            model(torch.randn(8, 3, 40, 36))
    return model.eval()


def _occluded(
    images: torch.Tensor,
    index: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    values: torch.Tensor,
) -> torch.Tensor:
    batch = images[index].clone()
    for b in range(len(index)):
        t, l_ = int(top[b]), int(left[b])
        batch[b, :, t : t + values.shape[2], l_ : l_ + values.shape[3]] = values[b]
    return batch


@pytest.mark.parametrize("window", [(5, 7), (12, 12), (1, 1), (40, 36)])
def test_zoo_equals_the_model_for_windows_anywhere(window: tuple[int, int]) -> None:
    model = _ready(Zoo())
    images = torch.randn(3, 3, 40, 36)
    forward = IncrementalForward.try_build(model, images)
    assert forward is not None
    generator = torch.Generator().manual_seed(0)
    count = 24
    index = torch.randint(0, 3, (count,), generator=generator)
    top = torch.randint(0, 40 - window[0] + 1, (count,), generator=generator)
    left = torch.randint(0, 36 - window[1] + 1, (count,), generator=generator)
    top[:2], left[:2] = 0, 0  # touching the top-left border
    top[2:4], left[2:4] = 40 - window[0], 36 - window[1]  # and the bottom-right one
    values = torch.randn(count, 3, *window, generator=generator)
    with torch.inference_mode():
        expected = model(_occluded(images, index, top, left, values))
        found = forward(index, top, left, values)
    assert_close(found, expected)


def test_resnet18_occlusion_equals_the_plain_computation() -> None:
    model = torchvision.models.resnet18(num_classes=5).eval()
    images = torch.randn(2, 3, 64, 64)
    fast = occlusion_scores(model, images, [1, 3], window=12, stride=5)
    plain = occlusion_scores(model, images, [1, 3], window=12, stride=5, incremental=False)
    assert_close(fast.occluded, plain.occluded)
    assert fast.row_starts == [0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55]  # last one cut


def test_models_it_cannot_serve_are_evaluated_whole() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.conv(x)
            if y.sum() > 0:  # data-dependent control flow cannot be traced
                y = -y
            return self.head(y.mean(dim=(2, 3)))

    images = torch.randn(2, 3, 10, 10)
    assert IncrementalForward.try_build(Branchy(), images) is None
    plain = _ready(Zoo())
    hooked = copy.deepcopy(plain)
    calls: list[int] = []
    hooked.conv4.register_forward_hook(lambda *_: calls.append(1))  # must not be skipped
    assert IncrementalForward.try_build(hooked, images) is None
    branchy = Branchy()
    with torch.no_grad():
        branchy.conv.bias.fill_(5.0)  # take the branch
    assert_close(
        occlusion(branchy, images, 0, 3, 2),
        occlusion(branchy, images, 0, 3, 2, incremental=False),
    )
    assert_close(occlusion(hooked, images, 0, 3, 2), occlusion(plain, images, 0, 3, 2))
    assert calls  # the hook saw the occluded images


def test_a_disagreement_is_caught_warned_and_the_plain_pass_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model = _ready(Zoo())
    images = torch.randn(2, 3, 40, 36)
    expected = occlusion(model, images, 1, 8, 8, incremental=False)
    original = IncrementalForward.__call__

    def wrong(self: IncrementalForward, *args: torch.Tensor) -> torch.Tensor:
        return original(self, *args) + 1.0  # type: ignore[no-any-return]

    monkeypatch.setattr(IncrementalForward, "__call__", wrong)
    with pytest.warns(RuntimeWarning, match="incremental forward pass disagrees"):
        found = occlusion(model, images, 1, 8, 8)
    assert_close(found, expected)


def test_a_traced_graph_that_fails_to_run_falls_back_to_the_plain_pass() -> None:
    class Wrapper(nn.Module):
        """Unwraps Hugging Face-style outputs: fx traces ``hasattr(proxy, "logits")`` as true,
        so the traced graph reads ``.logits`` of a tensor and fails when it runs."""

        def __init__(self) -> None:
            super().__init__()
            self.net = _ready(Zoo())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.net(x)
            return out.logits if hasattr(out, "logits") else out

    model, images = Wrapper(), torch.randn(2, 3, 40, 36)
    expected = occlusion(model, images, 1, 8, 8, incremental=False)
    with pytest.warns(RuntimeWarning, match="incremental forward pass failed .*AttributeError"):
        found = occlusion(model, images, 1, 8, 8)
    assert_close(found, expected)


def test_large_changed_regions_switch_to_full_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _ready(Zoo())
    images = torch.randn(2, 3, 40, 36)
    expected = occlusion(model, images, 2, 6, 3, incremental=False)
    for fraction in (0.0, 1.0):  # everything full-size at once, or as local as it gets
        monkeypatch.setattr(incremental, "DENSE_FRACTION", fraction)
        assert_close(occlusion(model, images, 2, 6, 3), expected)
