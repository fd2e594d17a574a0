"""Each call of a module is its own site: statistics per call, read back from TensorBoard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from helpers import make_trainer, read_events
from torch.utils.data import DataLoader
from zoo import CLASSES, Classifier, random_data

from lightning_convviz import ActivationMapMonitor, ActivationStatsMonitor, LearningRateDoctor

LOG = "run/version_0"


def half_dead_first_call(architecture: str) -> Classifier:
    """A ResNet whose ``layer1.0.bn1`` gives -1 everywhere in its first half of channels:
    the first call of ``layer1.0.relu`` (right after it) is dead there; the later calls (after
    ``bn2``, after the residual sum) see other values."""
    net = torchvision.models.get_model(architecture, num_classes=CLASSES)
    norm = net.layer1[0].bn1
    half = norm.num_features // 2
    with torch.no_grad():
        norm.weight[:half] = 0.0
        norm.bias[:half] = -1.0
    return Classifier(net)


@pytest.mark.parametrize(
    ("architecture", "calls"),
    [("resnet18", 2), ("resnet50", 3)],  # BasicBlock: 2 calls of relu, Bottleneck: 3
)
def test_half_of_one_call_forced_dead_reads_half_dead(
    architecture: str, calls: int, tmp_path: Path
) -> None:
    model = half_dead_first_call(architecture)
    stats = ActivationStatsMonitor(every_n_steps=1, log_images=False, log_histograms=False)
    trainer = make_trainer(
        tmp_path, [stats, LearningRateDoctor(every_n_steps=1)], num_sanity_val_steps=0
    )
    data = DataLoader(random_data(32, count=16), batch_size=8)
    trainer.fit(model, data, DataLoader(random_data(32, seed=1), batch_size=8))
    events = read_events(tmp_path / LOG)

    def dead(call: int, section: str = "activation_stats") -> list[float]:
        tag = f"{section}/dead_fraction/net.layer1.0.relu:{call}"
        return [event.value for event in events.Scalars(tag)]

    assert dead(1) == [0.5, 0.5]  # steps 1 and 2
    for later in range(2, calls + 1):  # the same module's other calls are alive
        assert dead(later) == [0.0, 0.0]
    assert dead(1, "lr_doctor") == [0.5]  # the doctor reads the same sites, per epoch
    scalars = events.Tags()["scalars"]
    assert f"activation_stats/dead_fraction/net.layer1.0.relu:{calls + 1}" not in scalars
    assert "activation_stats/dead_fraction/net.layer1.0.relu" not in scalars


def test_one_call_selected_by_name_and_drawn_on_its_own(tmp_path: Path) -> None:
    model = half_dead_first_call("resnet50")
    maps = ActivationMapMonitor(layers=["net.layer1.0.relu:1", "net.layer1.0.relu:3"])
    stats = ActivationStatsMonitor(layers="net.layer1.0.relu:1", every_n_steps=1)
    trainer = make_trainer(tmp_path, [maps, stats])
    data = DataLoader(random_data(32, count=16), batch_size=8)
    trainer.fit(model, data, DataLoader(random_data(32, seed=1), batch_size=8))
    events = read_events(tmp_path / LOG)
    assert sorted(events.Tags()["images"]) == [
        "activation_maps/net.layer1.0.relu:1",
        "activation_maps/net.layer1.0.relu:3",
        "activation_stats/channels/net.layer1.0.relu:1",
    ]
    assert {tag for tag in events.Tags()["scalars"] if "dead_fraction" in tag} == {
        "activation_stats/dead_fraction/net.layer1.0.relu:1"
    }


def test_a_call_that_is_not_made_is_a_clear_configuration_error(tmp_path: Path) -> None:
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    stats = ActivationStatsMonitor(layers="net.layer1.0.relu:4", every_n_steps=1)
    trainer = make_trainer(tmp_path, [stats])
    data = DataLoader(random_data(32, count=8), batch_size=8)
    message = r"no such call: net.layer1.0.relu:4 \(net.layer1.0.relu is called 3 times"
    with pytest.raises(MisconfigurationException, match=message):
        trainer.fit(half_dead_first_call("resnet50"), data)


def test_a_site_that_returns_a_tensor_replaces_that_call_only() -> None:
    """Grad-CAM's way in: a callback's tensor replaces the call's output; other calls of the
    same module, and callbacks that return something else, leave the forward pass alone."""
    from torch import nn

    from lightning_convviz.functional import CallSites

    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(3, 3), relu, nn.Linear(3, 3), relu)
    inputs = torch.randn(4, 3)
    plain = model(inputs)
    first_call_zeroed = nn.Sequential(*list(model)[2:])(torch.zeros(4, 3))
    with CallSites(model, {"1:1": relu}).attached(lambda site, out: torch.zeros_like(out)):
        replaced = model(inputs)
    with CallSites(model, {"1": relu}).attached(lambda site, out: "not a tensor"):  # type: ignore[arg-type,return-value]
        untouched = model(inputs)
    assert torch.equal(replaced, first_call_zeroed) and not torch.equal(replaced, plain)
    assert torch.equal(untouched, plain)
