"""Inversion, fooling examples, class models and performance by image attribute."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from captum.robust import FGSM
from helpers import (
    PositionBiasCNN,
    TinyCNN,
    fit,
    hook_count,
    logged_image,
    make_trainer,
    read_events,
)
from torch import nn
from torch.testing import assert_close

from lightning_convviz import (
    AdversarialMonitor,
    AttributePerformanceMonitor,
    ClassModelMonitor,
    InversionMonitor,
)
from lightning_convviz.data import DigitsDataModule
from lightning_convviz.demo import train
from lightning_convviz.functional import (
    class_model,
    fgsm,
    fooling_image,
    invert,
    invert_codes,
    min_fooling_epsilon,
)

LOG = "run/version_0"


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.LightningModule, Any, Any]:
    """The demo model after 4 epochs, and 6 validation digits with their labels."""
    trainer = train(lr=1e-3, epochs=4, log_dir=tmp_path_factory.mktemp("digits"), callbacks=[])
    data = DigitsDataModule()
    data.setup("fit")
    images, labels = next(iter(data.val_dataloader()))
    return trainer.lightning_module.train(), images[:6], labels[:6]


def _psnr(reconstruction: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    peak = (original.max() - original.min()) ** 2
    return 10 * torch.log10(peak / (reconstruction - original).pow(2).flatten(1).mean(dim=1))


@pytest.mark.training_outcome
def test_inversion_is_close_at_the_first_layer_and_looser_deeper(digits: Any) -> None:
    model, images, _ = digits
    shallow = invert(model, "features.1", images[:3], steps=150)
    deep = invert(model, "features.7", images[:3], steps=150)
    assert (shallow.code_error < 0.05).all(), shallow.code_error
    assert (_psnr(shallow.images, images[:3]) > 30).all()
    assert (_psnr(deep.images, images[:3]) < _psnr(shallow.images, images[:3]) - 3).all()
    assert deep.code_error.mean() > shallow.code_error.mean()
    assert model.training  # flags restored


def test_several_codes_inverted_in_one_optimisation_equal_one_at_a_time(digits: Any) -> None:
    model, images, _ = digits
    codes = [("features.1", "output"), ("classifier.3", "input")]
    joint = invert_codes(model, codes, images[:2], steps=30)
    # the first set starts from the same noise as a lone inversion (the batch's first rows)
    alone = invert(model, "features.1", images[:2], steps=30)
    assert_close(joint[0].images, alone.images, rtol=1e-4, atol=1e-5)
    assert_close(joint[0].code_error, alone.code_error, rtol=1e-4, atol=1e-6)
    # each set matches its own code only: the classifier's input set is no copy of the first
    assert not torch.allclose(joint[1].images, joint[0].images, atol=1e-3)


def test_an_inversion_that_has_settled_stops_early(digits: Any) -> None:
    model, images, _ = digits
    full = invert(model, "features.1", images[:2], steps=400)
    settled = invert(model, "features.1", images[:2], steps=400, tolerance=0.05)
    assert not torch.equal(full.images, settled.images)  # it stopped before step 400
    assert (settled.code_error < 0.05).all()  # and still matches the code


def test_fgsm_equals_captum(digits: Any) -> None:
    model, images, labels = digits
    reference = copy.deepcopy(model).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attack = FGSM(lambda x: torch.softmax(reference(x), dim=1))
        for targeted in (False, True):
            expected = attack.perturb(images, 0.07, labels, targeted=targeted)
            assert_close(fgsm(model, images, labels, 0.07, targeted=targeted), expected)
    bounded = fgsm(model, images, labels, 5.0, lower_bound=-1.0, upper_bound=1.0)
    assert bounded.min() >= -1.0 and bounded.max() <= 1.0


@pytest.mark.training_outcome
def test_min_fooling_epsilon_fools_and_ten_percent_less_does_not(digits: Any) -> None:
    model, images, labels = digits
    epsilon = min_fooling_epsilon(model, images, labels, max_epsilon=2.0)
    direction = fgsm(model, images, labels, 1.0) - images
    model.eval()
    with torch.no_grad():
        before = model(images).argmax(dim=1)
        at = model(images + epsilon.nan_to_num(posinf=0).view(-1, 1, 1, 1) * direction)
        below = model(images + 0.9 * epsilon.nan_to_num(posinf=0).view(-1, 1, 1, 1) * direction)
        beyond = model(images + 2.0 * direction).argmax(dim=1)
    model.train()
    searched = torch.isfinite(epsilon) & (epsilon > 0)
    assert searched.sum() >= 3, epsilon
    assert (at.argmax(dim=1)[searched] != labels[searched]).all()
    assert (below.argmax(dim=1)[searched] == labels[searched]).all()
    assert (before[epsilon == 0] != labels[epsilon == 0]).all()  # 0: already wrong
    assert (beyond[torch.isinf(epsilon)] == labels[torch.isinf(epsilon)]).all()  # inf: not fooled


def test_fooling_image_makes_the_model_see_the_chosen_class(digits: Any) -> None:
    model, images, labels = digits
    chosen = (labels + 1) % 10
    result = fooling_image(model, images, chosen, step_size=0.02, steps=200)
    assert result.success.all()
    assert (result.images - images).abs().max() <= 0.02 * int(result.steps.max()) + 1e-5


@pytest.mark.training_outcome
def test_class_model_raises_its_class_above_the_rest(digits: Any) -> None:
    model, _, _ = digits
    blank = torch.zeros(1, 1, 32, 32)
    with torch.no_grad():
        start = model.eval()(blank)[0]
    model.train()
    images = class_model(model, [3, 7], (1, 32, 32), steps=100)
    with torch.no_grad():
        scores = model.eval()(images)
    model.train()
    for row, wanted in enumerate((3, 7)):
        assert scores[row, wanted] > start[wanted] + 10
        assert scores[row].argmax() == wanted


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m, x: invert(m, "features.99", x, steps=2), r"^layers: "),
        (lambda m, x: invert(m, "features.1", x, steps=0), r"^steps: expected"),
        (lambda m, x: fgsm(m, x, 0, epsilon=-0.1), r"^epsilon: expected"),
        (lambda m, x: fgsm(m, x, 10, epsilon=0.1), r"^target: class indices"),
        (lambda m, x: min_fooling_epsilon(m, x, 0, max_epsilon=0), r"^max_epsilon: expected"),
        (lambda m, x: class_model(m, 12, (1, 32, 32), steps=1), r"^target: class indices"),
        (lambda m, x: class_model(m, 1, (32, 32), steps=1), r"^image_shape: expected"),
        (lambda m, x: fooling_image(m, x, 1, steps=0), r"^steps: expected"),
    ],
)
def test_bad_arguments_are_named(digits: Any, call: Any, message: str) -> None:
    model, images, _ = digits
    with pytest.raises(ValueError, match=message):
        call(model, images[:2])


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: invert(m, "features.4", x, steps=3, jitter=1),
        lambda m, x, y: fgsm(m, x, y, 0.1),
        lambda m, x, y: min_fooling_epsilon(m, x, y, scan_steps=4, refine_steps=2),
        lambda m, x, y: fooling_image(m, x, 0, steps=3),
        lambda m, x, y: class_model(m, [0, 1], (1, 32, 32), steps=3, blur_every=1, jitter=1),
    ],
    ids=["invert", "fgsm", "min_epsilon", "fooling_image", "class_model"],
)
def test_the_model_is_left_as_it_was(digits: Any, call: Any) -> None:
    model, images, labels = digits
    for parameter in list(model.parameters())[::2]:
        parameter.grad = torch.ones_like(parameter)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    hooks = hook_count(model)
    call(model, images[:2], labels[:2])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    for old, new in zip(grads, [p.grad for p in model.parameters()], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training and hook_count(model) == hooks
    for parameter in model.parameters():
        parameter.grad = None


# -- callbacks -----------------------------------------------------------------------------------


def test_inversion_adversarial_and_class_model_monitors_log(tmp_path: Path) -> None:
    callbacks = [
        InversionMonitor(layers=["relu1", "relu2"], num_probe_images=2, every_n_epochs=1, steps=5),
        AdversarialMonitor(num_probe_images=3),
        ClassModelMonitor(steps=5, every_n_epochs=2),
    ]
    fit(tmp_path, callbacks, max_epochs=2)
    events = read_events(tmp_path / LOG)
    assert [e.step for e in events.Images("inversion/reconstructions")] == [0, 2, 4]
    # 2 rows x (input + 2 layers), 64 px tiles, two caption lines
    assert logged_image(events, "inversion/reconstructions").shape == (2 + 2 * 94, 2 + 3 * 66, 3)
    assert {"inversion/code_error/relu1", "inversion/code_error/relu2"} <= set(
        events.Tags()["scalars"]
    )
    assert logged_image(events, "adversarial/examples").shape[1] == 2 + 3 * 66  # 3 columns
    fooled = [e.value for e in events.Scalars("adversarial/fooled_fraction")]
    assert len(fooled) == 3 and all(0 <= v <= 1 for v in fooled)
    assert [e.step for e in events.Images("class_model/images")] == [0, 4]
    assert logged_image(events, "class_model/images").shape[1] == 2 + 2 * 66  # two classes


def test_class_models_of_many_classes_are_capped_at_the_probes_classes(tmp_path: Path) -> None:
    class ManyClasses(TinyCNN):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(32, 40)

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(80, 3, 16, 16, generator=generator)
    sorted_labels = torch.arange(40).repeat_interleave(2)  # class by class, as on disk
    data = torch.utils.data.TensorDataset(images, sorted_labels)
    loader = torch.utils.data.DataLoader(data, batch_size=16)
    monitor = ClassModelMonitor(steps=2, every_n_epochs=1)
    trainer = make_trainer(tmp_path, [monitor], num_sanity_val_steps=0)
    trainer.fit(ManyClasses(), loader, loader)
    probe_classes = sorted(monitor.state_dict()["probe_labels"].tolist())
    assert len(set(probe_classes)) == 16  # 16 probes, one per class, spread over the 40
    picture = logged_image(read_events(tmp_path / LOG), "class_model/images")
    assert picture.shape[1] == 2 + 10 * 66 and picture.shape[0] > 2 * 66  # 16 tiles, 2 rows


def test_inversion_defaults_come_from_the_forward_pass(tmp_path: Path) -> None:
    fit(tmp_path, [InversionMonitor(num_probe_images=2, every_n_epochs=1, steps=2)])
    errors = {tag for tag in read_events(tmp_path / LOG).Tags()["scalars"] if "code_error" in tag}
    # the first and the last conv block's activation, and the classifier's input
    assert errors == {
        "inversion/code_error/relu1",
        "inversion/code_error/relu2",
        "inversion/code_error/head:input",
    }


def test_inversion_defaults_leave_out_tensors_that_do_not_follow_the_batch(
    tmp_path: Path,
) -> None:
    model = PositionBiasCNN()
    fit(tmp_path, [InversionMonitor(num_probe_images=2, every_n_epochs=1, steps=2)], model)
    errors = {tag for tag in read_events(tmp_path / LOG).Tags()["scalars"] if "code_error" in tag}
    assert errors == {
        "inversion/code_error/relu1",
        "inversion/code_error/relu2",
        "inversion/code_error/head:input",
    }


class BrightIsRight(TinyCNN):
    """Predicts the true class exactly when the image is bright (label smuggled in channel 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = x[:, 1, 0, 0].round().long().clamp(0, 1)
        bright = x[:, 0].mean(dim=(1, 2)) > 0
        guess = torch.where(bright, label, 1 - label)
        return 10 * nn.functional.one_hot(guess, 2).float() + 0 * super().forward(x)


def test_attribute_performance_reads_100_percent_bright_and_0_percent_dark(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 16, 16, generator=generator) * 0.1
    images[:, 0] += torch.linspace(-1, 1, 64)[:, None, None]  # brightness spread
    labels = torch.randint(0, 2, (64,), generator=generator)
    images[:, 1, 0, 0] = labels.float()
    data = torch.utils.data.TensorDataset(images, labels)
    loader = torch.utils.data.DataLoader(data, batch_size=16)

    def ink(batch: torch.Tensor) -> torch.Tensor:
        return (batch[:, 0] > 0).float().mean(dim=(1, 2))

    monitor = AttributePerformanceMonitor(attributes={"brightness": None, "ink": ink}, bins=4)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        logger=pl.loggers.TensorBoardLogger(str(tmp_path), name="run", version=0),
        callbacks=[monitor],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(BrightIsRight(), loader, loader)
    result = monitor.results["brightness"]
    assert result.accuracy.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert result.counts.tolist() == [16, 16, 16, 16]
    assert monitor.results["ink"].accuracy[-1] == 1.0
    events = read_events(tmp_path / LOG)
    assert logged_image(events, "performance/brightness").shape == (400, 600, 3)
    assert events.Scalars("performance/brightness/worst_bin_accuracy")[-1].value == 0.0

    for bad, message in [
        (lambda batch: torch.ones(3), r"expected one value per image \(16\), got 3"),
        (lambda batch: torch.full((len(batch),), float("nan")), "NaN or infinite"),
    ]:
        broken = AttributePerformanceMonitor(attributes={"bad": bad})
        trainer = pl.Trainer(
            max_epochs=2,
            limit_train_batches=1,
            logger=pl.loggers.TensorBoardLogger(str(tmp_path)),
            callbacks=[broken],
            enable_checkpointing=False,
            enable_progress_bar=False,
            num_sanity_val_steps=0,
        )
        with pytest.warns(RuntimeWarning, match=r"attributes\['bad'\]: .*" + message) as caught:
            trainer.fit(BrightIsRight(), loader, loader)
        assert trainer.state.finished  # the user's run is not killed by a bad attribute
        assert sum("AttributePerformanceMonitor failed" in str(w.message) for w in caught) == 1


@pytest.mark.parametrize(
    ("factory", "argument"),
    [
        (lambda: AttributePerformanceMonitor(attributes={"size": None}), "attributes"),
        (lambda: AttributePerformanceMonitor(attributes={"x": 3}), "attributes"),  # type: ignore[dict-item]
        (lambda: AttributePerformanceMonitor(bins=0), "bins"),
        (lambda: AdversarialMonitor(max_epsilon=0), "max_epsilon"),
        (lambda: InversionMonitor(steps=0), "steps"),
        (lambda: ClassModelMonitor(classes=[]), "classes"),
        (lambda: ClassModelMonitor(l2=-1), "l2"),
    ],
)
def test_bad_callback_arguments_are_named(factory: Any, argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}: "):
        factory()
