"""Callbacks in a real Trainer, logs read back with TensorBoard's EventAccumulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import TinyCNN, every_callback, hook_count, loaders, make_trainer, read_events
from helpers import fit as _fit
from helpers import logged_image as _image
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from lightning_convviz import (
    ActivationMapMonitor,
    ActivationStatsMonitor,
    FilterMonitor,
)
from lightning_convviz.functional import (
    Site,
    filter_chromatic_share,
    filter_noise_score,
    filter_orientedness,
)
from lightning_convviz.functional.sampling import dataset_labels, spread_indices

LOG = "run/version_0"


# -- ActivationStatsMonitor ------------------------------------------------------------------


def test_dead_layer_reads_100_percent_dead_and_healthy_layer_0(tmp_path: Path) -> None:
    _fit(
        tmp_path,
        [ActivationStatsMonitor(every_n_steps=1, detail_every_n_logs=2)],
        TinyCNN(dead_layer=True),
        limit_train_batches=3,
    )
    events = read_events(tmp_path / LOG)
    dead = events.Scalars("activation_stats/dead_fraction/dead_relu")
    assert [e.step for e in dead] == [1, 2, 3]
    assert [e.value for e in dead] == [1.0, 1.0, 1.0]
    assert [e.value for e in events.Scalars("activation_stats/sparsity/dead_relu")] == [1.0] * 3
    assert [e.value for e in events.Scalars("activation_stats/dead_channels/dead_relu")] == [
        4.0
    ] * 3
    assert [e.value for e in events.Scalars("activation_stats/dead_fraction/relu2")] == [0.0] * 3
    sparsity = events.Scalars("activation_stats/sparsity/relu2")[0].value
    assert 0.2 < sparsity < 0.8  # BatchNorm then ReLU: about half the values are zero
    # the picture: 4 channels in a 2 x 2 grid of 8 px cells, all red (dead)
    pictures = events.Images("activation_stats/channels/dead_relu")
    assert [e.step for e in pictures] == [1, 3]  # details on the 1st log and every 2nd after
    picture = _image(events, "activation_stats/channels/dead_relu")
    assert picture.shape == (1 + 2 * 9, 1 + 2 * 9, 3)
    red = picture[1 + 4, 1 + 4]
    assert red[0] > 200 and red[1] < 50 and red[2] < 50
    histogram = events.Histograms("activation_stats/channel_activity/relu2")[-1]
    assert histogram.histogram_value.num == 8


def test_stats_window_and_default_interval(tmp_path: Path) -> None:
    # default: the Trainer's log_every_n_steps (2 here); 4 batches -> logs at steps 2 and 4
    _fit(
        tmp_path,
        [ActivationStatsMonitor(window_steps=4, log_histograms=False, log_images=False)],
        limit_train_batches=4,
        log_every_n_steps=2,
    )
    events = read_events(tmp_path / LOG)
    assert [e.step for e in events.Scalars("activation_stats/sparsity/relu1")] == [2, 4]
    assert events.Tags()["images"] == [] and events.Tags()["histograms"] == []


def test_stats_state_dict_round_trip(tmp_path: Path) -> None:
    monitor = ActivationStatsMonitor(every_n_steps=3)
    _fit(tmp_path, [monitor], limit_train_batches=2)  # 2 batches counted, none logged yet
    state = monitor.state_dict()
    assert state["batches_in_interval"] == 2
    counts, elements = state["current"]["relu1"]
    assert counts.shape == (4,) and elements == 2 * 8 * 16 * 16
    restored = ActivationStatsMonitor(every_n_steps=3)
    restored.load_state_dict(state)
    assert torch.equal(restored.state_dict()["current"]["relu1"][0], counts)


# -- ActivationMapMonitor --------------------------------------------------------------------


def test_activation_maps_logged_per_layer_from_validation_images(tmp_path: Path) -> None:
    monitor = ActivationMapMonitor(num_probe_images=2, tile_side=16)
    _fit(tmp_path, [monitor], max_epochs=2)
    events = read_events(tmp_path / LOG)
    assert sorted(events.Tags()["images"]) == ["activation_maps/relu1", "activation_maps/relu2"]
    assert [e.step for e in events.Images("activation_maps/relu2")] == [0, 2, 4]
    _, val = loaders()
    spread = val.dataset[spread_indices(len(val.dataset), 2, dataset_labels(val.dataset))][0]
    assert monitor.state_dict()["probe"] is not None
    assert torch.equal(monitor.state_dict()["probe"], spread)
    # relu2: 8 channels, 16x16 maps -> 3 x 3 grid of 16 px boxes with 2 px padding: 56 px;
    # two probe rows stacked -> 112 px high
    picture = _image(events, "activation_maps/relu2")
    assert picture.shape[0] == 2 * (2 + 3 * 18)


def test_activation_maps_with_user_probe_and_without_validation(tmp_path: Path) -> None:
    probe = torch.randn(1, 3, 16, 16)
    _fit(tmp_path, [ActivationMapMonitor(layers="relu1", probe_images=probe)], limit_val_batches=0)
    events = read_events(tmp_path / LOG)
    assert events.Tags()["images"] == ["activation_maps/relu1"]


def test_activation_maps_fall_back_to_training_images(tmp_path: Path) -> None:
    monitor = ActivationMapMonitor(layers="relu1")
    _fit(tmp_path, [monitor], limit_val_batches=0)
    train, _ = loaders()
    assert torch.equal(monitor.state_dict()["probe"], next(iter(train))[0][:1])
    assert [e.step for e in read_events(tmp_path / LOG).Images("activation_maps/relu1")] == [2]


# -- FilterMonitor ---------------------------------------------------------------------------


def test_filters_rgb_first_layer_scores_and_change(tmp_path: Path) -> None:
    _, model = _fit(tmp_path, [FilterMonitor(tile_side=9)], max_epochs=2)
    events = read_events(tmp_path / LOG)
    assert sorted(events.Tags()["images"]) == ["filters/conv1", "filters/conv2"]
    assert [e.step for e in events.Images("filters/conv1")] == [0, 2, 4]
    first = _image(events, "filters/conv1")
    # 4 RGB filters, 3x3 upscaled x3 -> 2 x 2 grid of 9 px tiles with 1 px padding
    assert first.shape == (1 + 2 * 10, 1 + 2 * 10, 3)
    tile = first[1:10, 1:10].astype(int)
    assert (tile[..., 0] != tile[..., 1]).any(), "an RGB filter is drawn in colour"
    # conv2: 8 outputs x 4 inputs, one grey tile per pair
    deeper = _image(events, "filters/conv2")
    assert deeper.shape == (1 + 8 * 10, 1 + 4 * 10, 3)
    score = events.Scalars("filters/noise_score/conv2")
    assert score[-1].value == pytest.approx(filter_noise_score(model.conv2.weight).item(), rel=1e-5)
    change = events.Scalars("filters/relative_change/conv1")
    assert change[0].step == 0 and change[0].value == 0.0
    assert change[-1].value > 0.0
    # orientedness and colour for the convolution of the image's 3 channels only
    weight = model.conv1.weight
    oriented = events.Scalars("filters/orientedness/conv1")[-1].value
    assert oriented == pytest.approx(filter_orientedness(weight).nanmean().item(), rel=1e-5)
    chromatic = events.Scalars("filters/chromatic_share/conv1")[-1].value
    assert chromatic == pytest.approx(filter_chromatic_share(weight).mean().item(), rel=1e-5)
    scalars = events.Tags()["scalars"]
    assert not any(tag.endswith(("orientedness/conv2", "chromatic_share/conv2")) for tag in scalars)


def test_filters_every_n_epochs_without_images(tmp_path: Path) -> None:
    _fit(
        tmp_path, [FilterMonitor(layers="conv2", every_n_epochs=2, log_images=False)], max_epochs=3
    )
    events = read_events(tmp_path / LOG)
    assert events.Tags()["images"] == []
    # at the start, every 2nd epoch end, and at the end of training (step 6)
    assert [e.step for e in events.Scalars("filters/noise_score/conv2")] == [0, 4, 6]


# -- shared behaviour --------------------------------------------------------------------------


def test_fast_dev_run_is_idle(tmp_path: Path) -> None:
    trainer, _ = _fit(tmp_path, every_callback(), fast_dev_run=True)
    assert trainer.state.finished
    assert not (tmp_path / "run").exists()


def test_validate_and_test_leave_callbacks_idle(tmp_path: Path) -> None:
    model = TinyCNN()
    model.test_step = model.validation_step  # type: ignore[method-assign]
    trainer = make_trainer(tmp_path, every_callback())
    _, val = loaders()
    trainer.validate(model, val)
    trainer.test(model, val)
    assert hook_count(model) == 0


@pytest.mark.parametrize("callback", [ActivationStatsMonitor, ActivationMapMonitor, FilterMonitor])
def test_a_trainer_without_logger_fails_in_setup(tmp_path: Path, callback: type) -> None:
    with pytest.raises(MisconfigurationException, match=r"this Trainer has none"):
        _fit(tmp_path, [callback()], logger=False)


class LinearOnly(TinyCNN):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = self.conv2 = None  # type: ignore[assignment]
        self.flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 2), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.flat(x)


@pytest.mark.parametrize("callback", [ActivationStatsMonitor, ActivationMapMonitor, FilterMonitor])
def test_model_without_conv_fails_in_setup(tmp_path: Path, callback: type) -> None:
    with pytest.raises(MisconfigurationException, match="no convolution layer to monitor"):
        _fit(tmp_path, [callback()], LinearOnly())


def test_unknown_layer_fails_in_setup_with_available_names(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"'conv9'.*conv1 \(Conv2d\)"):
        _fit(tmp_path, [ActivationStatsMonitor(layers="conv9")])
    with pytest.raises(MisconfigurationException, match="not a convolution: relu1"):
        _fit(tmp_path, [FilterMonitor(layers=["conv1", "relu1"])])


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda: ActivationStatsMonitor(every_n_steps=0), "every_n_steps"),
        (lambda: ActivationStatsMonitor(window_steps=-1), "window_steps"),
        (lambda: ActivationStatsMonitor(layers=[]), "layers"),
        (lambda: ActivationStatsMonitor(detail_every_n_logs=0), "detail_every_n_logs"),
        (lambda: ActivationStatsMonitor(layers=3), "layers"),
        (lambda: ActivationMapMonitor(every_n_epochs=0), "every_n_epochs"),
        (lambda: ActivationMapMonitor(num_probe_images=True), "num_probe_images"),
        (lambda: ActivationMapMonitor(probe_images=torch.zeros(3, 8, 8)), "probe_images"),
        (lambda: FilterMonitor(max_outputs=0), "max_outputs"),
        (lambda: FilterMonitor(every_n_epochs=1.5), "every_n_epochs"),
    ],
)
def test_bad_arguments_name_the_argument(factory: Any, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: expected"):
        factory()


class Exploding(TinyCNN):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == 1:
            raise RuntimeError("user model exploded")
        return super().training_step(batch, batch_idx)


def test_no_hooks_survive_fit_or_an_exception(tmp_path: Path) -> None:
    model = TinyCNN()
    _fit(tmp_path, every_callback(), model)
    assert hook_count(model) == 0
    exploding = Exploding()
    with pytest.raises(RuntimeError, match="user model exploded"):
        _fit(tmp_path / "b", every_callback(), exploding)
    assert hook_count(exploding) == 0


def test_dead_judgement_covers_the_whole_window() -> None:
    """A channel alive in an earlier interval of the window is not dead; once it has been
    silent for the whole window, it is."""
    from types import SimpleNamespace

    monitor = ActivationStatsMonitor(layers="relu1", every_n_steps=1, window_steps=2)
    trainer = SimpleNamespace(
        log_every_n_steps=1,
        strategy=SimpleNamespace(root_device=torch.device("cpu"), reduce=lambda t, **_: t),
        is_global_zero=False,
    )
    monitor._setup_model(trainer, TinyCNN())  # type: ignore[arg-type]
    alive_then_silent = [torch.ones(1, 2, 1, 1), -torch.ones(1, 2, 1, 1), -torch.ones(1, 2, 1, 1)]
    dead_counts = []
    for output in alive_then_silent:
        monitor._accumulate(Site("relu1", 1), output)
        monitor._flush(trainer)  # type: ignore[arg-type]
        counts, _ = monitor._window_totals()["relu1"]
        dead_counts.append(int((counts == 0).sum()))
    assert dead_counts == [0, 0, 2]


def test_scalars_reach_every_logger_and_respect_the_tensorboard_prefix(tmp_path: Path) -> None:
    from pytorch_lightning.loggers import TensorBoardLogger

    tensorboard = TensorBoardLogger(str(tmp_path), name="run", version=0, prefix="p")
    csv = CSVLogger(str(tmp_path), name="csv", version=0)
    _fit(tmp_path, [ActivationStatsMonitor(every_n_steps=1)], logger=[tensorboard, csv])
    tags = read_events(tmp_path / LOG).Tags()["scalars"]
    assert "p-activation_stats/sparsity/relu1" in tags
    header = (tmp_path / "csv/version_0/metrics.csv").read_text().splitlines()[0]
    assert "activation_stats/dead_fraction/relu2" in header.split(",")


def test_a_failing_diagnostic_warns_once_releases_its_hooks_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_convviz.callbacks.activation_stats as stats

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("counting exploded")

    monkeypatch.setattr(stats, "add_positive_counts", broken)
    model = TinyCNN()
    with pytest.warns(RuntimeWarning) as caught:
        trainer, _ = _fit(tmp_path, [ActivationStatsMonitor(every_n_steps=1)], model, max_epochs=2)
    failures = [str(w.message) for w in caught if "ActivationStatsMonitor failed" in str(w.message)]
    assert len(failures) == 1 and "counting exploded" in failures[0]
    assert trainer.state.finished and trainer.global_step == 4
    assert hook_count(model) == 0


def test_a_user_exception_flushes_what_was_logged(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="user model exploded"):
        _fit(tmp_path, [ActivationStatsMonitor(every_n_steps=1)], Exploding())
    events = read_events(tmp_path / LOG)
    assert events.Scalars("activation_stats/sparsity/relu1")  # written before the crash


def _subclasses(cls: type) -> list[type]:
    return [cls, *(sub for direct in cls.__subclasses__() for sub in _subclasses(direct))]


def test_every_hook_a_callback_defines_is_a_lightning_hook_and_guarded() -> None:
    """A misspelled hook (Lightning would never call it) or one left outside the failure guard
    (its exception would end the user's training) fails here."""
    from pytorch_lightning import Callback

    import lightning_convviz
    from lightning_convviz.callbacks.failures import UNGUARDED_HOOKS

    # the base as the exported callbacks know it: pytest 7's importlib mode imports the
    # package's modules a second time to collect their doctests, and a fresh import of
    # callbacks/base.py is another class
    (base_class,) = {
        base
        for obj in vars(lightning_convviz).values()
        if isinstance(obj, type)
        for base in obj.__mro__
        if base.__qualname__ == "ConvVizCallback"
    }
    exported = {
        obj
        for obj in vars(lightning_convviz).values()
        if isinstance(obj, type) and issubclass(obj, base_class)
    }
    assert len(exported) >= 12
    defined = [
        (cls, name)
        for cls in _subclasses(base_class)
        for name in vars(cls)
        if name.startswith("on_")
    ]
    assert exported <= set(_subclasses(base_class))  # every callback's hooks are read
    not_hooks = [f"{cls.__name__}.{name}" for cls, name in defined if name not in vars(Callback)]
    assert not_hooks == []
    unguarded = [
        f"{cls.__name__}.{name}"
        for cls, name in defined
        if name not in UNGUARDED_HOOKS and not hasattr(vars(cls)[name], "__wrapped__")
    ]
    assert unguarded == []


def test_every_module_hook_is_placed_through_call_sites() -> None:
    """One way to hook: CallSites places every forward hook (and releases it with its block);
    a hook registered anywhere else in the package fails here."""
    import re

    import lightning_convviz

    package = Path(lightning_convviz.__file__).parent
    registering = re.compile(
        r"\.register_(forward|forward_pre|full_backward|full_backward_pre)_hook\("
    )
    placed = {
        path.relative_to(package).as_posix()
        for path in package.rglob("*.py")
        if registering.search(path.read_text())
    }
    assert placed == {"functional/sites.py"}


def test_the_doctor_and_the_stats_monitor_read_one_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both on with their default layers: each activation call is counted once for both (one
    set of hooks), and both read the channels forced dead as dead."""
    import lightning_convviz.callbacks.activity_counter as counting
    from lightning_convviz import LearningRateDoctor

    counted: list[tuple[int, ...]] = []
    count = counting.channel_positive_counts

    def counting_once(activation: torch.Tensor) -> torch.Tensor:
        counted.append(tuple(activation.shape))
        return count(activation)

    monkeypatch.setattr(counting, "channel_positive_counts", counting_once)
    model = TinyCNN(dead_layer=True)
    calls_per_batch: list[int] = []
    original_forward = model.forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        before = len(counted)
        out = original_forward(x)
        calls_per_batch.append(len(counted) - before)
        return out

    model.forward = forward  # type: ignore[method-assign]
    stats = ActivationStatsMonitor(every_n_steps=1)
    doctor = LearningRateDoctor(every_n_steps=1, replay_loss=False)
    _fit(tmp_path, [stats, doctor], model, limit_train_batches=3, limit_val_batches=0)
    watched = len(doctor.epochs[-1].dead)  # the sites chosen at the first batch
    # the first batch counts every candidate call while the sites are chosen, then only those
    assert watched >= 3 and calls_per_batch[1:] == [watched] * 2  # not twice: one for both
    assert doctor.epochs[-1].dead["dead_relu"] == (4, 4)
    assert [
        e.value
        for e in read_events(tmp_path / LOG).Scalars("activation_stats/dead_fraction/dead_relu")
    ] == [1.0, 1.0, 1.0]
    assert hook_count(model) == 0
