"""A real TensorBoard server reads our logs and lists the documented tags."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from helpers import fit, read_events

from lightning_convviz import (
    ActivationStatsMonitor,
    FilterMonitor,
    LearningRateDoctor,
    OcclusionMonitor,
    SaliencyMonitor,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@contextmanager
def tensorboard(log_dir: Path, *flags: str) -> Iterator[str]:
    """A TensorBoard server on ``log_dir``; yields its plugins' base address once it answers
    with the run's scalar tags."""
    port = free_port()
    address = ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), *address, *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}/data/plugin"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if get(f"{base}/scalars/tags"):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            raise AssertionError("TensorBoard did not answer")
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_tensorboard_serves_every_documented_tag(tmp_path: Path) -> None:
    callbacks = [
        ActivationStatsMonitor(layers="relu2", every_n_steps=1),
        FilterMonitor(layers="conv1"),
        SaliencyMonitor(methods=("saliency", "grad_cam"), num_probe_images=2),
        OcclusionMonitor(num_probe_images=2),
        LearningRateDoctor(every_n_steps=1),
    ]
    fit(tmp_path, callbacks)
    layouts = read_events(tmp_path / "run/version_0").Tensors("custom_scalars__config__")
    assert len(layouts) == 1  # written once, by the first callback set up
    with tensorboard(tmp_path) as base:
        scalars = get(f"{base}/scalars/tags")
        assert isinstance(scalars, dict)
        images = get(f"{base}/images/tags")
        assert isinstance(images, dict)
        run = "run/version_0"
        assert {
            "activation_stats/sparsity/relu2",
            "activation_stats/dead_fraction/relu2",
            "filters/noise_score/conv1",
            "lr_doctor/verdict",
            "lr_doctor/update_ratio/conv1",
        } <= set(scalars[run])
        assert {
            "activation_stats/channels/relu2",
            "filters/conv1",
            "attribution/saliency",
            "attribution/grad_cam",
            "occlusion/probability_drop",
        } <= set(images[run])
        # the dashboard: one multi-line chart per kind of per-layer curve, written once
        layout = get(f"{base}/custom_scalars/layout")
        assert isinstance(layout, dict)
        (category,) = layout["category"]
        assert category["title"] == "lightning_convviz"
        charts = {chart["title"]: chart["multiline"]["tag"] for chart in category["chart"]}
        served = set(scalars[run])
        assert {
            "dead fraction, every layer",
            "sparsity, every layer",
            "update ratio, every layer (flat line: 1e-3)",
            "filter noise score, every layer",
            "cost of each drawing (s)",
        } <= set(charts)
        shown = {
            title: {tag for tag in served if any(re.search(rx, tag) for rx in regexes)}
            for title, regexes in charts.items()
        }
        assert shown["dead fraction, every layer"] == {"activation_stats/dead_fraction/relu2"}
        assert shown["update ratio, every layer (flat line: 1e-3)"] == {
            "lr_doctor/update_ratio/conv1",
            "lr_doctor/update_ratio/conv2",
            "lr_doctor/update_ratio/head",
            "lr_doctor/update_ratio_reference",
        }
        assert "cost/share" not in shown["cost of each drawing (s)"]
        assert "cost/FilterMonitor" in shown["cost of each drawing (s)"]
        assert all(shown.values())  # no empty chart


def test_every_frame_of_a_time_lapse_is_served_with_samples_per_plugin(tmp_path: Path) -> None:
    """TensorBoard keeps 10 images per tag unless told (a random 10 of a longer time-lapse);
    the README's command, ``--samples_per_plugin images=1000``, keeps every frame (``images=0``,
    which keeps all of other plugins' samples, serves no image at all in TensorBoard 2.21)."""
    fit(tmp_path, [FilterMonitor(layers="conv1", every_n_epochs=1)], max_epochs=13)
    logged = [e.step for e in read_events(tmp_path / "run/version_0").Images("filters/conv1")]
    assert len(logged) == 14  # the start and every epoch's end
    query = "images?run=run/version_0&tag=filters/conv1"
    with tensorboard(tmp_path) as base:
        assert len(get(f"{base}/images/{query}")) == 10  # type: ignore[arg-type]
    with tensorboard(tmp_path, "--samples_per_plugin", "images=1000") as base:
        served = get(f"{base}/images/{query}")
    assert [frame["step"] for frame in served] == logged  # type: ignore[index, union-attr]
