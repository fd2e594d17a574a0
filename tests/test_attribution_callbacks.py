"""SaliencyMonitor and OcclusionMonitor in a real Trainer, logs read back from TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers import TinyCNN, fit, loaders, logged_image, read_events
from lightning_fabric.utilities.exceptions import MisconfigurationException

from lightning_convviz import OcclusionMonitor, SaliencyMonitor
from lightning_convviz.callbacks.saliency import ATTRIBUTION_METHODS
from lightning_convviz.functional.sampling import dataset_labels, spread_indices

LOG = "run/version_0"


def test_saliency_monitor_logs_every_method_as_a_time_lapse(tmp_path: Path) -> None:
    monitor = SaliencyMonitor(methods=ATTRIBUTION_METHODS, num_probe_images=4)
    fit(tmp_path, [monitor], max_epochs=2)
    events = read_events(tmp_path / LOG)
    tags = sorted(tag for tag in events.Tags()["images"] if tag.startswith("attribution/"))
    assert tags == sorted(f"attribution/{method}" for method in ATTRIBUTION_METHODS)
    for tag in tags:
        assert [event.step for event in events.Images(tag)] == [0, 2, 4]
        # 4 tiles of 16 px enlarged to 96, 2 px gaps, a two-line caption strip of 28 px
        assert logged_image(events, tag).shape == (2 + 96 + 28 + 2, 2 + 4 * (96 + 2), 3)
    # the probe: read from the validation set, spread over it and its two classes
    _, val = loaders()
    dataset = val.dataset
    images, labels = dataset[spread_indices(len(dataset), 4, dataset_labels(dataset))]
    assert torch.equal(monitor.state_dict()["probe"], images)
    assert torch.equal(monitor.state_dict()["probe_labels"], labels)
    assert labels.tolist() in ([0, 1, 0, 1], [1, 0, 1, 0])


@pytest.mark.training_outcome
def test_maps_change_as_the_model_trains(tmp_path: Path) -> None:
    fit(tmp_path, [SaliencyMonitor(methods=("saliency",), num_probe_images=2)], max_epochs=2)
    events = read_events(tmp_path / LOG)
    first = logged_image(events, "attribution/saliency", 0)
    last = logged_image(events, "attribution/saliency", -1)
    assert first.shape == last.shape
    assert not np.array_equal(first, last)


class QuadrantNet(TinyCNN):
    """Class 0's evidence is the mean of channel 0 over the top-left quadrant, nothing else."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        evidence = 40 * x[:, 0, :8, :8].mean(dim=(1, 2)) - 20
        scores = torch.stack([evidence, torch.zeros_like(evidence)], dim=1)
        return scores + 0 * super().forward(x)  # keeps the parameters in the graph for training


def test_occlusion_heat_is_red_where_the_evidence_is_and_blue_elsewhere(tmp_path: Path) -> None:
    probe = torch.ones(1, 3, 16, 16)
    monitor = OcclusionMonitor(
        window=0.5, stride=0.5, probe_images=probe, probe_labels=torch.tensor([0])
    )
    fit(tmp_path, [monitor], QuadrantNet(), limit_val_batches=0)
    picture = logged_image(read_events(tmp_path / LOG), "occlusion/probability_drop").astype(float)
    # the tile starts at (2, 2) and is 96 px: its top-left quadrant is [2:50, 2:50]
    evidence = picture[4:48, 4:48].mean(axis=(0, 1))
    elsewhere = picture[52:96, 52:96].mean(axis=(0, 1))
    assert evidence[0] > 100 and evidence[2] < 80  # jet(1) = dark red blended with grey
    assert elsewhere[2] > 100 and elsewhere[0] < 80  # jet(0) = dark blue


def test_occlusion_monitor_tags_and_steps(tmp_path: Path) -> None:
    fit(
        tmp_path,
        [OcclusionMonitor(num_probe_images=3, score="logit", every_n_epochs=2)],
        max_epochs=2,
    )
    events = read_events(tmp_path / LOG)
    assert [e.step for e in events.Images("occlusion/logit_drop")] == [0, 4]
    assert logged_image(events, "occlusion/logit_drop").shape == (128, 2 + 3 * 98, 3)


def test_without_labels_the_prediction_is_explained(tmp_path: Path) -> None:
    monitor = SaliencyMonitor(methods=("grad_cam",), probe_images=torch.randn(2, 3, 16, 16))
    fit(tmp_path, [monitor], limit_val_batches=0)
    picture = logged_image(read_events(tmp_path / LOG), "attribution/grad_cam")
    assert picture.shape == (2 + 96 + 15 + 2, 2 + 2 * 98, 3)  # one caption line: "pred k (p)"


def test_unknown_grad_cam_layer_fails_in_setup(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"SaliencyMonitor: layers: .*conv9"):
        fit(tmp_path, [SaliencyMonitor(grad_cam_layer="conv9")])
    # without Grad-CAM the layer is not needed
    fit(tmp_path / "b", [SaliencyMonitor(methods=("saliency",), grad_cam_layer=None)])


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda: SaliencyMonitor(methods=("saliency", "lime")), "methods"),
        (lambda: SaliencyMonitor(methods=()), "methods"),
        (lambda: SaliencyMonitor(methods=("saliency", "saliency")), "methods"),
        (lambda: SaliencyMonitor(target="best"), "target"),  # type: ignore[arg-type]
        (lambda: SaliencyMonitor(smoothgrad_noise=-0.1), "smoothgrad_noise"),
        (lambda: SaliencyMonitor(smoothgrad_samples=0), "smoothgrad_samples"),
        (lambda: SaliencyMonitor(grad_cam_layer=3), "layers"),  # type: ignore[arg-type]
        (lambda: SaliencyMonitor(probe_labels=torch.tensor([1])), "probe_labels"),
        (
            lambda: SaliencyMonitor(
                probe_images=torch.zeros(2, 1, 8, 8), probe_labels=torch.tensor([1])
            ),
            "probe_labels",
        ),
        (lambda: OcclusionMonitor(window=0), "window"),
        (lambda: OcclusionMonitor(window=1.5), "window"),
        (lambda: OcclusionMonitor(stride=(1, 2, 3)), "stride"),
        (lambda: OcclusionMonitor(score="odds"), "score"),
        (lambda: OcclusionMonitor(batch_size=0), "batch_size"),
        (lambda: OcclusionMonitor(every_n_epochs=0), "every_n_epochs"),
        (lambda: OcclusionMonitor(probe_images=torch.zeros(8, 8)), "probe_images"),
    ],
)
def test_bad_arguments_name_the_argument(factory: Any, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        factory()


def test_window_larger_than_the_probe_is_a_clear_warning_and_training_goes_on(
    tmp_path: Path,
) -> None:
    with pytest.warns(RuntimeWarning, match=r"window: \(20, 20\) is larger than the image"):
        trainer, _ = fit(tmp_path, [OcclusionMonitor(window=20, stride=4)])
    assert trainer.state.finished


class ExplainsWhileValidating(TinyCNN):
    """Calls every attribution function from validation_step, where Lightning has turned
    autograd off (no_grad in fit's validation, inference_mode in trainer.validate)."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        from lightning_convviz import functional

        images, labels = batch
        self.explained = {
            "saliency": functional.saliency(self, images, labels),
            "smoothgrad": functional.smoothgrad(self, images, labels, n_samples=2),
            "guided_backprop": functional.guided_backprop(self, images, labels),
            "deconvnet": functional.deconvnet(self, images, labels),
            "grad_cam": functional.grad_cam(self, images, labels).input_map,
            "occlusion": functional.occlusion(self, images, labels, window=4, stride=4),
        }


def test_functions_work_inside_trainer_validate(tmp_path: Path) -> None:
    from helpers import make_trainer

    from lightning_convviz import functional

    model = ExplainsWhileValidating()
    _, val = loaders()
    make_trainer(tmp_path, [], limit_val_batches=1).validate(model, val, verbose=False)
    images, labels = next(iter(val))
    expected = {
        "saliency": functional.saliency(model, images, labels),
        "guided_backprop": functional.guided_backprop(model, images, labels),
        "grad_cam": functional.grad_cam(model, images, labels).input_map,
        "occlusion": functional.occlusion(model, images, labels, window=4, stride=4),
    }
    for name, value in expected.items():
        torch.testing.assert_close(model.explained[name], value, msg=name)
    assert model.explained["saliency"].abs().sum() > 0


class ScoresTurnNaN(TinyCNN):
    """The head's weights become NaN at the end of the first epoch (a diverged run), after the
    callbacks' epoch-end drawings (Lightning calls the module's hook after theirs)."""

    def on_train_epoch_end(self) -> None:
        if self.current_epoch == 0:
            with torch.no_grad():
                self.head.weight.fill_(float("nan"))


def test_scores_that_turn_nan_are_said_once_and_nothing_is_drawn_of_them(tmp_path: Path) -> None:
    monitors = [SaliencyMonitor(num_probe_images=2), OcclusionMonitor(num_probe_images=2)]
    with pytest.warns(UserWarning) as caught:
        fit(tmp_path, monitors, ScoresTurnNaN(), max_epochs=3)
    messages = [str(w.message) for w in caught]
    assert not [m for m in messages if "failed in" in m]  # neither switched off with an error
    for name in ("SaliencyMonitor", "OcclusionMonitor"):
        told = [m for m in messages if m.startswith(f"{name}: the model's class scores")]
        assert len(told) == 1 and "NaN or infinite at step 4" in told[0], told
    events = read_events(tmp_path / LOG)
    for tag in ("attribution/saliency", "occlusion/probability_drop"):
        assert [e.step for e in events.Images(tag)] == [0, 2]  # while the scores were finite
