"""MaxActivationMonitor and EmbeddingMonitor in a real Trainer; the digits embedding."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import TinyCNN, fit, logged_image, read_events
from lightning_fabric.utilities.exceptions import MisconfigurationException
from PIL import Image

from lightning_convviz import DiagnosticsBudget, EmbeddingMonitor, MaxActivationMonitor
from lightning_convviz.callbacks.embedding_maps import tsne_threads
from lightning_convviz.demo import train
from lightning_convviz.functional import Site, capture_activations
from lightning_convviz.functional.embedding import available_cores, embed_codes

LOG = "run/version_0"


# -- MaxActivationMonitor ------------------------------------------------------------------------


def test_top_patches_equal_a_brute_force_pass_over_the_validation_set(tmp_path: Path) -> None:
    monitor = MaxActivationMonitor(layers=["conv1", "conv2"], channels=[0, 2], k=3)
    trainer, model = fit(tmp_path, [monitor], limit_val_batches=4, num_sanity_val_steps=0)
    images = torch.cat([batch[0] for batch in trainer.val_dataloaders])
    model.eval()
    with torch.no_grad(), capture_activations(model, ["conv1", "conv2"]) as activations:
        model(images)
    for name in ("conv1", "conv2"):
        best = activations[name][:, [0, 2]].flatten(2).max(dim=2).values  # (N, 2)
        values, ids = best.T.sort(dim=1, descending=True, stable=True)
        state = monitor._states[Site(name, 1)]
        torch.testing.assert_close(state.values, values[:, :3])
        assert torch.equal(state.ids, ids[:, :3])
    events = read_events(tmp_path / LOG)
    assert sorted(events.Tags()["images"]) == ["max_activation/conv1", "max_activation/conv2"]
    assert [e.step for e in events.Images("max_activation/conv2")] == [2]
    # 2 rows (channels) x 3 patches; conv1's 3 x 3 field enlarged 22x to 66 px, one caption line
    tile = 66
    assert logged_image(events, "max_activation/conv1").shape == (
        2 + 2 * (tile + 15 + 2),
        2 + 3 * (tile + 2),
        3,
    )
    # conv2 sees 5 x 5 pixels: its crops are the receptive field of the winning unit
    assert monitor._crops[Site("conv2", 1)].shape[-2:] == (5, 5)


def test_default_layers_and_bad_channels(tmp_path: Path) -> None:
    monitor = MaxActivationMonitor(channels=3, k=2)
    fit(tmp_path, [monitor], num_sanity_val_steps=0)
    assert monitor._sites is not None  # middle and last conv of two convs: conv2
    assert monitor._sites.chosen == [Site("conv2", 1)]
    with pytest.raises(MisconfigurationException, match="channel 9 does not exist in 'conv1'"):
        fit(tmp_path / "b", [MaxActivationMonitor(layers="conv1", channels=[9])])
    for bad in (0, [], [1, 1], [-1], "3"):
        with pytest.raises(ValueError, match=r"^channels: expected"):
            MaxActivationMonitor(channels=bad)  # type: ignore[arg-type]


# -- EmbeddingMonitor ----------------------------------------------------------------------------


def test_embedding_monitor_logs_maps_scalars_and_projector(tmp_path: Path) -> None:
    monitor = EmbeddingMonitor(max_samples=32, grid_side=6, projector=True, n_jobs=1)
    fit(tmp_path, [monitor], max_epochs=2, limit_val_batches=4)
    events = read_events(tmp_path / LOG)
    for tag in ("embedding/scatter", "embedding/grid"):
        assert [e.step for e in events.Images(tag)] == [2, 4]
    assert logged_image(events, "embedding/scatter").shape == (600, 600, 3)
    assert logged_image(events, "embedding/grid").shape == (6 * 32, 6 * 32, 3)
    for tag in ("embedding/trustworthiness", "embedding/knn_accuracy"):
        values = [e.value for e in events.Scalars(tag)]
        assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    config = (tmp_path / LOG / "projector_config.pbtxt").read_text()
    assert "sprite" in config and "metadata_path" in config
    assert len(monitor.stall_seconds) == 2 and len(monitor.embedding_seconds) == 2


def test_sprite_fits_the_projector_limit(tmp_path: Path) -> None:
    monitor = EmbeddingMonitor(max_samples=100, thumbnail_side=1000, projector=True, n_jobs=1)
    fit(tmp_path, [monitor])  # one validation batch: 8 samples, 3 per sprite row
    with Image.open(next((tmp_path / LOG).glob("**/sprite.png"))) as sprite:
        width, height = sprite.size
    # 100 samples would need 10 per row: thumbnails shrink from 1000 to 8192 // 10 = 819 px
    assert width == height == 3 * 819 <= 8192
    grid = logged_image(read_events(tmp_path / LOG), "embedding/grid")
    assert grid.shape == (20 * 102, 20 * 102, 3)  # 2048 // 20 px per cell


def test_embedding_without_a_classifier_says_it_does_not_apply(tmp_path: Path) -> None:
    class NoLinear(TinyCNN):
        """Returns pooled features: no layer produces class scores."""

        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Identity()  # type: ignore[assignment]

    monitor = EmbeddingMonitor()
    message = (
        r"EmbeddingMonitor does not apply to NoLinear: the forward pass calls no layer for "
        r"the input of the classifier .* It is off for this run; training goes on\."
    )
    with pytest.warns(UserWarning, match=message):
        fit(tmp_path, [monitor], NoLinear())
    assert not monitor._enabled and monitor.embedded_samples == []
    for factory, argument in [
        (lambda: EmbeddingMonitor(max_samples=4), "max_samples"),
        (lambda: EmbeddingMonitor(perplexity=0), "perplexity"),
        (lambda: EmbeddingMonitor(wait_timeout=-1), "wait_timeout"),
        (lambda: EmbeddingMonitor(n_jobs=0), "n_jobs"),
    ]:
        with pytest.raises(ValueError, match=f"^{argument}: expected"):
            factory()


def report_stall(monitor: EmbeddingMonitor, label: str) -> float:
    """The longest time the training loop waited in the callback for one embedding."""
    worst = max(monitor.stall_seconds)
    stalls = ", ".join(f"{seconds:.3f}" for seconds in monitor.stall_seconds)
    background = ", ".join(f"{seconds:.1f}" for seconds in monitor.embedding_seconds)
    print(
        f"\n{label}: training-loop stall per embedding [{stalls}] s (worst {worst:.3f} s); "
        f"background embedding [{background}] s"
    )
    return worst


@pytest.fixture
def embedding_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """The thread and the openTSNE thread count of every embedding the monitor makes."""
    import lightning_convviz.callbacks.embedding_maps as embedding

    calls = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        calls.append((threading.current_thread().name, args[4]))
        return embed_codes(*args, **kwargs)

    monkeypatch.setattr(embedding, "embed_codes", recording)
    return calls


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``count`` for a while."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def gate_background_embedding(
    monitor: EmbeddingMonitor, monkeypatch: pytest.MonkeyPatch
) -> list[bool]:
    """Start each t-SNE of ``monitor`` only once the training loop has left the hook that
    handed it over; the list says, per embedding, whether it got that signal (a loop that
    waited for its embedding never gives it: the embedding starts after a timeout and reads
    ``False``)."""
    import lightning_convviz.callbacks.embedding_maps as embedding

    loop_went_on = threading.Event()
    went_on: list[bool] = []
    hook = monitor.on_validation_epoch_end
    embed = embedding.embed_codes

    def handing_over(trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loop_went_on.clear()
        hook(trainer, pl_module)
        loop_went_on.set()

    def gated(*args: Any, **kwargs: Any) -> Any:
        went_on.append(loop_went_on.wait(timeout=120))
        return embed(*args, **kwargs)

    monkeypatch.setattr(monitor, "on_validation_epoch_end", handing_over)
    monkeypatch.setattr(embedding, "embed_codes", gated)
    return went_on


@pytest.mark.training_outcome
@pytest.mark.skipif(available_cores() < 2, reason="a background embedding needs a spare core")
def test_digits_codes_embed_into_a_faithful_map_beside_training(
    tmp_path: Path, embedding_calls: list[tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cores = available_cores()
    monitor = EmbeddingMonitor(every_n_epochs=3, max_samples=360)
    went_on = gate_background_embedding(monitor, monkeypatch)
    start = time.perf_counter()
    with torch_threads(cores - 1):  # training leaves one core free: the t-SNE gets it
        trainer = train(lr=1e-3, epochs=6, log_dir=tmp_path, name="digits", callbacks=[monitor])
    elapsed = time.perf_counter() - start
    events = read_events(trainer.log_dir)
    trust = [e.value for e in events.Scalars("embedding/trustworthiness")]
    knn = [e.value for e in events.Scalars("embedding/knn_accuracy")]
    assert len(trust) == 2 and trust[-1] > 0.9, trust
    assert knn[-1] > 0.8, knn  # chance is about 0.1 on ten balanced digits
    assert embedding_calls == [("convviz-embedding_0", 1)] * 2  # in the background, 1 core ...
    # ... not waited for: each t-SNE started only after the loop had left the hook (an order of
    # events, not seconds, which a busy machine stretches)
    assert went_on == [True, True]
    report_stall(monitor, f"digits, {elapsed:.1f} s in all")
    # the budget is charged what the loop waited (the hand-over, over before the t-SNE starts);
    # the seconds beside it (the t-SNE's, and the drawing worker's writing) are logged apart
    background = [e.value for e in events.Scalars("cost/EmbeddingMonitor/background")]
    costs = [e.value for e in events.Scalars("cost/EmbeddingMonitor")]
    assert len(background) == len(costs) == 2
    for cost, beside, seconds in zip(costs, background, monitor.embedding_seconds, strict=True):
        assert cost < seconds <= beside
    grid = logged_image(events, "embedding/grid").astype(float)
    assert (np.abs(grid - grid.mean()) > 10).any()  # there are digits in it


def test_the_embedding_is_made_at_once_when_training_keeps_every_core_busy(
    tmp_path: Path, embedding_calls: list[tuple[str, int]], console: pytest.LogCaptureFixture
) -> None:
    monitor = EmbeddingMonitor(max_samples=32)
    with torch_threads(available_cores()), console.at_level(logging.INFO):
        fit(tmp_path, [monitor], max_epochs=2, limit_val_batches=4)
    # the paused progress bar has a reason on screen
    assert "EmbeddingMonitor: embedding 32 codes of 32 dimensions (epoch 0, step 2) now" in (
        console.text
    )
    # on the training's thread, with every core
    assert embedding_calls == [(threading.current_thread().name, available_cores())] * 2
    # the training loop waited for each embedding and its writing, charged as the drawing's cost
    costs = [e.value for e in read_events(tmp_path / LOG).Scalars("cost/EmbeddingMonitor")]
    for stall, seconds, cost in zip(
        monitor.stall_seconds, monitor.embedding_seconds, costs, strict=True
    ):
        assert seconds <= cost <= stall


def test_a_failing_embedding_warns_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning_convviz.callbacks.embedding_maps as embedding

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("t-SNE exploded")

    monkeypatch.setattr(embedding, "embed_codes", broken)
    with pytest.warns(UserWarning, match="an embedding failed: RuntimeError"):
        trainer, _ = fit(tmp_path, [EmbeddingMonitor(max_samples=16)], max_epochs=2)
    assert trainer.state.finished


def test_the_t_sne_threads_are_the_cores_training_leaves_or_every_core_at_once() -> None:
    cores = available_cores()
    assert tsne_threads(True, on_accelerator=True, busy_threads=4) == max(cores - 1, 1)
    assert tsne_threads(True, on_accelerator=True, busy_threads=4, n_jobs=1) == 1
    assert tsne_threads(True, on_accelerator=False, busy_threads=1) == max(cores - 1, 1)
    assert tsne_threads(True, on_accelerator=False, busy_threads=cores) == 1  # as asked
    assert tsne_threads(False, on_accelerator=False, busy_threads=cores) == cores


def test_the_embedding_obeys_the_budget_s_background_choice(
    tmp_path: Path, embedding_calls: list[tuple[str, int]]
) -> None:
    """DiagnosticsBudget(background=True) puts the t-SNE in the drawing worker's second lane
    even where training keeps every core busy; its map is logged all the same."""
    monitor = EmbeddingMonitor(max_samples=32, n_jobs=1)
    with torch_threads(available_cores()):
        fit(tmp_path, [monitor, DiagnosticsBudget(None, background=True)], max_epochs=2)
    assert embedding_calls == [("convviz-embedding_0", 1)] * 2
    events = read_events(tmp_path / LOG)
    assert [e.step for e in events.Images("embedding/scatter")] == [2, 4]
    assert not [t for t in threading.enumerate() if t.name.startswith("convviz")]
