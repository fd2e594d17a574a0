"""Every callback under bf16-mixed precision and with channels_last inputs (CPU)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TinyCNN, every_callback, hook_count, make_trainer, read_events
from torch.utils.data import DataLoader, TensorDataset

import lightning_convviz as convviz
from lightning_convviz.functional import Site


def channels_last_data(seed: int) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(16, 3, 16, 16, generator=generator)
    images = images.contiguous(memory_format=torch.channels_last)
    return DataLoader(TensorDataset(images, (images[:, 0].mean((1, 2)) > 0).long()), batch_size=8)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_every_callback_with_channels_last_inputs(tmp_path: Path, precision: str) -> None:
    model = TinyCNN().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    with pytest.warns() as caught:
        trainer = make_trainer(
            tmp_path, every_callback(), precision=precision, max_epochs=2, limit_val_batches=2
        )
        trainer.fit(model, channels_last_data(0), channels_last_data(1))
    failures = [str(w.message) for w in caught if "failed in" in str(w.message)]
    assert failures == []  # no diagnostic switched itself off
    assert hook_count(model) == 0
    images = read_events(tmp_path / "run/version_0").Tags()["images"]
    for tag in (
        "attribution/guided_backprop",
        "occlusion/probability_drop",
        "embedding/grid",
        "inversion/reconstructions",
        "class_model/images",
        "max_activation/conv2",
    ):
        assert tag in images, tag


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_every_callback_with_1_3_and_4_channel_images(tmp_path: Path, channels: int) -> None:
    from helpers import loaders

    model = TinyCNN(in_channels=channels)
    train, val = loaders(channels=channels)
    with pytest.warns() as caught:
        trainer = make_trainer(tmp_path, every_callback(), max_epochs=1, limit_val_batches=2)
        trainer.fit(model, train, val)
    assert [str(w.message) for w in caught if "failed in" in str(w.message)] == []
    images = read_events(tmp_path / "run/version_0").Tags()["images"]
    assert {"filters/conv1", "attribution/saliency", "embedding/grid"} <= set(images)


@pytest.mark.skipif(
    os.environ.get("ATEN_CPU_CAPABILITY") in ("default", "avx2"),
    reason="torch's inductor under a forced ATEN_CPU_CAPABILITY: with 'default' its C++ kernels "
    "do not compile ('at::vec' has not been declared); with 'avx2' on an AVX-512 CPU it computes "
    "this model wrongly without any callback (the compiled loss of a batch 0.694 against the "
    "eager 0.686, torch 2.14.1): limitations of torch, not of lightning_convviz",
)
@pytest.mark.skipif(
    tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 4),
    reason="torch.compile before torch 2.4 fails in the model's own self.log in "
    "validation_step, no lightning_convviz code in the path (dynamo traces into Lightning's "
    "logging: 'twice with different arguments' on torch 2.1 and 2.2, '_Metadata has no "
    "attribute fx' on 2.3)",
)
def test_every_callback_with_a_compiled_model(tmp_path: Path) -> None:
    """Diagnostics run the original forward (no recompilation from probes); training runs the
    compiled one."""
    model = TinyCNN()
    compiled = torch.compile(model)
    with pytest.warns() as caught:
        trainer = make_trainer(tmp_path, every_callback(), max_epochs=1, limit_val_batches=2)
        trainer.fit(compiled, channels_last_data(0), channels_last_data(1))  # type: ignore[arg-type]
    assert [str(w.message) for w in caught if "failed in" in str(w.message)] == []
    assert hook_count(model) == 0
    images = read_events(tmp_path / "run/version_0").Tags()["images"]
    assert {"inversion/reconstructions", "attribution/guided_backprop", "embedding/grid"} <= set(
        images
    )
    # validation-time hooks see the (eager) forward: every top-k slot is filled
    top = next(c for c in trainer.callbacks if isinstance(c, convviz.MaxActivationMonitor))
    assert (top._states[Site("conv2", 1)].ids >= 0).all()
