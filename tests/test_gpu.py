"""The same checks on a CUDA device, where one is present (skipped on CPU-only machines)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import (
    PICTURE_SECTIONS,
    TinyCNN,
    every_callback,
    hook_count,
    loaders,
    make_trainer,
    read_events,
)
from pytorch_lightning.loggers import TensorBoardLogger
from test_safety import HOOKS, After, Before

from lightning_convviz import (
    ActivationMapMonitor,
    ActivationStatsMonitor,
    FilterMonitor,
    LearningRateDoctor,
    OcclusionMonitor,
    SaliencyMonitor,
)
from lightning_convviz.callbacks.saliency import ATTRIBUTION_METHODS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_callbacks_on_cuda_count_dead_filters_and_leave_training_untouched(
    tmp_path: Path,
) -> None:
    model = TinyCNN(dead_layer=True)
    before = Before()
    after = After(before)
    callbacks = [
        before,
        ActivationStatsMonitor(every_n_steps=1),
        ActivationMapMonitor(),
        FilterMonitor(),
        SaliencyMonitor(methods=ATTRIBUTION_METHODS, num_probe_images=4),
        OcclusionMonitor(num_probe_images=4),
        after,
    ]
    trainer = make_trainer(tmp_path, callbacks, accelerator="gpu", max_epochs=2)
    train, val = loaders()
    trainer.fit(model, train, val)
    assert trainer.strategy.root_device.type == "cuda"
    assert set(after.checked) == set(HOOKS)
    assert hook_count(model) == 0
    events = read_events(tmp_path / "run/version_0")
    assert [e.value for e in events.Scalars("activation_stats/dead_fraction/dead_relu")] == [
        1.0
    ] * 4
    assert [e.value for e in events.Scalars("activation_stats/dead_fraction/relu2")] == [0.0] * 4
    assert "activation_maps/relu2" in events.Tags()["images"]
    assert "filters/conv1" in events.Tags()["images"]
    assert "attribution/guided_backprop" in events.Tags()["images"]
    assert "occlusion/probability_drop" in events.Tags()["images"]


def test_attribution_on_cuda_equals_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.testing import assert_close

    from lightning_convviz import functional

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    model = TinyCNN().eval()
    images = torch.randn(3, 3, 16, 16)
    targets = [0, 1, 1]
    calls = {
        "saliency": lambda m, x: functional.saliency(m, x, targets),
        "guided_backprop": lambda m, x: functional.guided_backprop(m, x, targets),
        "grad_cam": lambda m, x: functional.grad_cam(m, x, targets).input_map,
        "occlusion": lambda m, x: functional.occlusion(m, x, targets, window=5, stride=3),
    }
    for name, call in calls.items():
        on_cpu = call(model, images)
        on_cuda = call(model.cuda(), images.cuda())
        model.cpu()
        assert on_cuda.device.type == "cuda", name
        assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_counts_on_cuda_equal_the_plain_definition(dtype: torch.dtype) -> None:
    from lightning_convviz.functional import channel_positive_counts

    activation = torch.randn(16, 5, 9, 11, device="cuda").to(dtype)
    activation[0, 1, 2, 3] = float("nan")
    activation[1, 2, 0, 0] = float("inf")
    activation = activation.contiguous(memory_format=torch.channels_last)
    expected = (activation > 0).sum(dim=(0, 2, 3))
    assert torch.equal(channel_positive_counts(activation), expected)


def test_activation_counting_makes_no_host_sync_between_logging_steps() -> None:
    """Issue 13: on a GPU the statistics stay on the device until a logging step. The counting
    hooks, their first pass (which chooses the call sites) included, run under CUDA's sync
    debug mode set to "error": any host synchronisation inside them raises."""
    import torchvision

    from lightning_convviz.functional import ACTIVATION_SITES, CallSites

    model = torchvision.models.resnet18(num_classes=10).cuda()
    monitor = ActivationStatsMonitor(every_n_steps=1000)
    monitor._sites = CallSites(model, None, ACTIVATION_SITES)
    images = torch.randn(4, 3, 64, 64, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):  # the deciding pass, then two ordinary ones
            with monitor._sites.attached(monitor._accumulate):
                model(images).sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(monitor._window_totals()) == 0  # nothing flushed yet
    assert {site.module for site in monitor._current} >= {"relu", "layer1.0.relu"}
    assert all(counts.device.type == "cuda" for counts, _ in monitor._current.values())


@pytest.mark.parametrize("use_orig_params", [True, False], ids=["original", "flat"])
def test_every_callback_under_fsdp(tmp_path: Path, use_orig_params: bool) -> None:
    """Issue 35: one process on one GPU under Lightning's FSDP strategy (which does not shard on
    one device: FSDP falls back to NO_SHARD). With ``use_orig_params=False`` the module's
    parameters are FSDP's flat parameters and its layers' weights plain tensors. Every callback
    works: it logs its section, fails nowhere and leaves no hook behind."""
    from pytorch_lightning.strategies import FSDPStrategy

    model = TinyCNN()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = make_trainer(
            tmp_path,
            every_callback(),
            accelerator="gpu",
            strategy=FSDPStrategy(use_orig_params=use_orig_params),
            max_epochs=2,
            limit_val_batches=2,
        )
        train, val = loaders()
        trainer.fit(model, train, val)
    from torch.distributed.fsdp._flat_param import FlatParameter

    flat = [isinstance(p, FlatParameter) for p in trainer.model.parameters()]
    problems = [
        str(w.message)
        for w in caught
        if any(phrase in str(w.message) for phrase in ("failed in", "does not apply", " is off"))
    ]
    tags = read_events(tmp_path / "run/version_0").Tags()
    logged = {tag.split("/")[0] + "/" for kind in ("images", "scalars") for tag in tags[kind]}
    missing = [section for section in (*PICTURE_SECTIONS, "lr_doctor/") if section not in logged]
    assert (problems, missing) == ([], []), (problems, missing)
    assert hook_count(model) == 0
    assert all(flat) is not use_orig_params, flat


def fit_digits_in_fp16(tmp_path: Path, lr: float) -> LearningRateDoctor:
    """The digits demo's model and data with Adam at ``lr``, 5 epochs, ``16-mixed`` with a
    GradScaler that starts at 2**40, so that its first steps overflow and are skipped (halving
    the scale each time) as they do on real runs."""
    from pytorch_lightning.plugins import MixedPrecision

    from lightning_convviz.demo import make_data_and_model

    pl.seed_everything(0)
    datamodule, model = make_data_and_model("digits", lr=lr)
    doctor = LearningRateDoctor()
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)
    trainer = pl.Trainer(
        max_epochs=5,
        logger=TensorBoardLogger(str(tmp_path), name="fp16", version=0),
        callbacks=[doctor],
        plugins=[MixedPrecision("16-mixed", "cuda", scaler)],
        accelerator="gpu",
        devices=1,
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule)
    return doctor


@pytest.mark.training_outcome
def test_fp16_skipped_steps_do_not_read_as_a_too_high_learning_rate(tmp_path: Path) -> None:
    """Issue 35: the GradScaler's skipped steps (overflowing gradients, no update) are noted, not
    judged: Adam 1e-3 reads healthy, as in float32."""
    doctor = fit_digits_in_fp16(tmp_path, 1e-3)
    skipped = [step.step for step in doctor.steps if step.skipped]
    assert skipped, "no measured step was skipped: the test does not test what it says"
    assert doctor.verdict == "healthy so far", (skipped, [f.evidence for f in doctor.findings])
    assert "skipped by the optimizer" in doctor.summary()


@pytest.mark.training_outcome
def test_fp16_too_high_learning_rate_is_still_found(tmp_path: Path) -> None:
    doctor = fit_digits_in_fp16(tmp_path, 3e-2)
    assert doctor.verdict == "too high", [f.evidence for f in doctor.findings]
