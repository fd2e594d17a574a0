"""The same pictures and numbers in TensorBoard, Weights & Biases, MLflow and a CSV folder."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import (
    PICTURE_SECTIONS,
    TinyCNN,
    fit,
    hook_count,
    loaders,
    make_trainer,
    read_events,
)
from lightning_fabric.utilities.exceptions import MisconfigurationException
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, Logger

from lightning_convviz import (
    ActivationStatsMonitor,
    FilterMonitor,
    InversionMonitor,
    LearningRateDoctor,
)
from lightning_convviz.demo import train
from lightning_convviz.writing import safe_name

SECTIONS = (*PICTURE_SECTIONS, "lr_doctor/", "cost/")


LOGGER_NAMES = ("tensorboard", "wandb", "mlflow", "csv")


def ours(tags: set[str]) -> set[str]:
    return {tag for tag in tags if tag.startswith(SECTIONS)}


class Content:
    """What one logger kept: image tags (with the steps and pixels of one), scalar names,
    histogram and text tags."""

    def __init__(self) -> None:
        self.images: dict[str, dict[int, np.ndarray]] = {}
        self.scalars: set[str] = set()
        self.histograms: set[str] = set()
        self.texts: set[str] = set()
        self.tables: dict[str, int] = {}  # t-SNE point tables: tag to rows

    def add_image(self, tag: str, step: int, png: bytes) -> None:
        self.images.setdefault(tag, {})[step] = np.asarray(Image.open(io.BytesIO(png)))[..., :3]


def from_tensorboard(log_dir: Path) -> Content:
    events = read_events(log_dir)
    content = Content()
    for tag in events.Tags()["images"]:
        for event in events.Images(tag):
            content.add_image(tag, event.step, event.encoded_image_string)
    content.scalars = set(events.Tags()["scalars"])
    content.histograms = set(events.Tags()["histograms"])
    content.texts = {
        tag.removesuffix("/text_summary")
        for tag in events.Tags()["tensors"]
        if tag.endswith("/text_summary")
    }
    return content


def from_wandb(run_dir: Path) -> Content:
    from wandb_records import history

    content = Content()
    for row in history(run_dir):
        step = int(row["trainer/global_step"])
        for key, value in row.items():
            kind = value.get("_type") if isinstance(value, dict) else None
            if kind == "image-file":
                content.add_image(key, step, (run_dir / "files" / value["path"]).read_bytes())
            elif kind == "histogram":
                content.histograms.add(key)
            elif kind == "html-file":
                content.texts.add(key)
            elif kind == "table-file":
                content.tables[key] = value["nrows"]
            elif kind is None and not key.startswith("_"):
                content.scalars.add(key)
    return content


def from_mlflow(store: str) -> Content:
    from urllib.parse import unquote, urlparse

    from mlflow import MlflowClient

    client = MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == "lightning_convviz"]
    (run,) = client.search_runs([experiment.experiment_id])
    content = Content()
    content.scalars = set(run.data.metrics)
    # read the artifact store's files themselves: MLflow's download API differs between
    # versions and cuts names at "#", which older versions put in step-indexed image names
    root = Path(unquote(urlparse(run.info.artifact_uri).path))
    for path in sorted((root / "images").glob("*.png")):
        # "<key>+step+<n>+..." with "/" as "~"; before MLflow 3.5 or so "<key>%step%<n>%..."
        # with "/" as "#"
        sep, slash = ("+", "~") if "+step+" in path.name else ("%", "#")
        key, _, step, *_ = path.name.split(sep)
        content.add_image(key.replace(slash, "/"), int(step), path.read_bytes())
    for path in root.rglob("*"):
        tag = path.parent.relative_to(root).as_posix()
        if path.suffix == ".md":
            content.texts.add(tag)
        elif path.suffix == ".csv" and "channel_activity" in tag:
            content.histograms.add(tag)
        elif path.suffix == ".csv":
            content.tables[tag] = len(path.read_text().splitlines()) - 1
    return content


def from_folder(log_dir: Path) -> Content:
    content = Content()
    header = (log_dir / "metrics.csv").read_text().splitlines()[0]
    content.scalars = set(header.split(","))
    for path in log_dir.rglob("*"):
        tag = path.parent.relative_to(log_dir).as_posix()
        if path.suffix == ".png":
            content.add_image(tag, int(path.stem), path.read_bytes())
        elif path.suffix == ".md":
            content.texts.add(tag)
        elif path.suffix == ".csv" and "channel_activity" in tag:
            content.histograms.add(tag)
        elif path.suffix == ".csv" and path.parent != log_dir:  # not metrics.csv
            content.tables[tag] = len(path.read_text().splitlines()) - 1
    return content


def test_the_demo_leaves_the_same_content_in_every_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wandb = pytest.importorskip("wandb", reason="the [wandb] extra is not installed")
    pytest.importorskip("mlflow", reason="the [mlflow] extra is not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)  # anything a library writes beside the logs stays here
    trainer = train(epochs=1, log_dir=tmp_path, name="run", loggers=tuple(LOGGER_NAMES))
    wandb.finish()
    tensorboard = from_tensorboard(tmp_path / "run/version_0")
    others = {
        "wandb": from_wandb(next((tmp_path / "wandb").glob("offline-run-*"))),
        "mlflow": from_mlflow(f"sqlite:///{tmp_path / 'mlflow.db'}"),
        "csv": from_folder(tmp_path / "csv/run/version_0"),
    }
    # every callback drew; the names that MLflow and files refuse read ':' as '-'
    assert len({tag.split("/")[0] for tag in tensorboard.images}) == 13  # all but the doctor
    assert any(":" in tag for tag in ours(tensorboard.scalars))  # inversion/code_error/<x>:input
    same: Callable[[str], str] = str
    # file names and MLflow names read ':' as '-'; CSV columns keep it
    rename = {"wandb": same, "mlflow": safe_name, "csv": safe_name}
    rename_scalar = {"wandb": same, "mlflow": safe_name, "csv": same}
    for name, content in others.items():
        expected = {rename[name](tag) for tag in tensorboard.images}
        assert set(content.images) == expected, name
        scalars = {rename_scalar[name](tag) for tag in ours(tensorboard.scalars)}
        assert ours(content.scalars) == scalars, name
        assert content.histograms == {rename[name](tag) for tag in tensorboard.histograms}, name
        assert content.texts == {rename[name](tag) for tag in tensorboard.texts}, name
        assert content.tables == {"embedding/points": 359}, name  # every validation digit
        for tag, pictures in tensorboard.images.items():  # the same pixels at the same steps
            theirs = content.images[rename[name](tag)]
            assert set(theirs) == set(pictures), (name, tag)
            for step, picture in pictures.items():
                np.testing.assert_array_equal(theirs[step], picture, err_msg=f"{name} {tag}")
    assert trainer.state.finished and hook_count(trainer.lightning_module) == 0
    # the doctor's verdict and settings reach every logger's run table
    (doctor,) = [c for c in trainer.callbacks if isinstance(c, LearningRateDoctor)]  # type: ignore[attr-defined]
    verdict = doctor.verdict
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.data.params["lr_doctor/verdict"] == verdict
    assert run.data.params["lr_doctor/optimizer"] == "Adam"
    hparams = (tmp_path / "csv/run/version_0/hparams.yaml").read_text()
    assert f"lr_doctor/verdict: {verdict}" in hparams
    from wandb_records import config

    settings = config(next((tmp_path / "wandb").glob("offline-run-*")))
    assert settings["lr_doctor/verdict"] == verdict


def test_a_csv_logger_alone_gets_pictures_as_files(tmp_path: Path) -> None:
    csv = CSVLogger(str(tmp_path), name="csv", version=0)
    monitors = [ActivationStatsMonitor(every_n_steps=1), FilterMonitor(layers="conv1")]
    trainer = make_trainer(tmp_path, monitors, logger=csv)
    train_loader, val_loader = loaders()
    trainer.fit(TinyCNN(), train_loader, val_loader)
    root = tmp_path / "csv/version_0"
    steps = sorted(int(p.stem) for p in (root / "filters/conv1").glob("*.png"))
    assert steps == [0, trainer.global_step]  # the first and the last drawing
    picture = np.asarray(Image.open(root / f"filters/conv1/{steps[-1]}.png"))
    assert picture.dtype == np.uint8 and picture.shape[2] == 3
    (table,) = (root / "activation_stats/channel_activity/relu1").glob("*.csv")
    histogram = table.read_text().splitlines()
    assert histogram[0] == "bin_start,bin_end,count" and len(histogram) > 1
    assert sum(int(row.split(",")[2]) for row in histogram[1:]) == 4  # relu1's 4 channels
    header = (root / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"activation_stats/dead_fraction/relu1", "filters/noise_score/conv1"} <= set(header)


class MemoryLogger(Logger):
    """A logger that keeps metrics in memory and has no folder."""

    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.metrics.append(dict(metrics))

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass


def test_a_logger_without_a_folder_gets_the_scalars_and_one_warning(tmp_path: Path) -> None:
    memory = MemoryLogger()
    monitors = [ActivationStatsMonitor(every_n_steps=1), FilterMonitor(layers="conv1")]
    with pytest.warns(UserWarning) as caught:
        fit(tmp_path, monitors, logger=memory)
    skipped = [str(w.message) for w in caught if "keeps pictures" in str(w.message)]
    assert len(skipped) == 1
    assert "MemoryLogger" in skipped[0]
    assert "ActivationStatsMonitor, FilterMonitor" in skipped[0]
    names = {name for metrics in memory.metrics for name in metrics}
    assert {"activation_stats/dead_fraction/relu1", "filters/noise_score/conv1"} <= names


def test_a_trainer_without_a_logger_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationException, match=r"has none \(logger=False\)"):
        fit(tmp_path, [InversionMonitor()], logger=False)


def test_names_other_loggers_refuse_are_read_with_a_dash() -> None:
    assert safe_name("max_activation/layer1.0.relu:3") == "max_activation/layer1.0.relu-3"
    assert re.fullmatch(r"[\w\-./ ]+", safe_name('a:b*c?d<e>f|g"h'))


def test_the_package_works_without_wandb_and_mlflow(tmp_path: Path) -> None:
    script = (
        "import sys; sys.modules['wandb'] = sys.modules['mlflow'] = None\n"
        "from lightning_convviz.demo import train\n"
        "from lightning_convviz import FilterMonitor\n"
        f"train(epochs=1, log_dir={str(tmp_path)!r}, loggers=['csv'],\n"
        "      callbacks=[FilterMonitor()])\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=300)
    assert list((tmp_path / "csv").rglob("filters/features.0/*.png"))
