"""Every callback at its defaults on a representative set of real architectures.

The full sweep (every torchvision classifier, a dozen timm families) is ``make zoo``
(``benchmarks/model_zoo.py``); this is the part that runs in CI time, at small inputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from zoo import run

#: (architecture, input side): one of each family the issue named, at small inputs.
REPRESENTATIVE = [
    ("resnet50", 32),  # one relu module called three times per block
    ("densenet121", 32),  # torch.cat, pre-activation
    ("googlenet", 32),  # auxiliary heads, F.relu in BasicConv2d
    ("squeezenet1_1", 48),  # 1x1-conv classifier, no nn.Linear
    ("mobilenet_v3_small", 32),  # squeeze-and-excitation, Hardswish
    ("efficientnet_b0", 32),  # squeeze-and-excitation, SiLU
    ("convnext_tiny", 32),  # GELU, channels-last LayerNorm and Linear, 4x4 stem
    ("shufflenet_v2_x0_5", 32),  # chunk and channel shuffle
    ("timm:dla34", 32),  # timm, 1x1-conv classifier after global pooling
    ("timm:tf_efficientnet_b0", 32),  # timm, "same" padding computed in forward
]


@pytest.mark.parametrize(("name", "side"), REPRESENTATIVE)
def test_every_callback_serves_the_architecture(name: str, side: int, tmp_path: Path) -> None:
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    result = run(name, side, tmp_path)
    assert not result.error, result.error
    assert result.hooks_left == 0
    assert {kind: status for kind, status in result.statuses.items() if status != "ok"} == {}
