"""Do first-layer filters turn into oriented edges and colour blobs on the bundled photographs?

Trains the photographs demo's model (``lightning_convviz.demo``, ``--data photos``) under a few
settings, without callbacks, and measures its first convolution before and after training
beside random filters of the same shape (10 000 independent Gaussian ones):

* the noise score (``filter_noise_score``: white noise 1, smooth filters well below);
* how oriented each filter is (``filter_orientedness``: edges and gratings high, blobs 0),
  as a mean and as the share of filters more oriented than 95 % of the random ones (5 % of
  random filters are, by construction);
* the chromatic share (``filter_chromatic_share``: grey filters 0, random ones 2/3).

Also how far colour alone goes: a logistic regression on each crop's mean and deviation per
channel (6 numbers), against the CNN's validation accuracy. Writes a section of
``docs/photos.md`` and the trained filters of each setting as a PNG under ``docs/images``.

Usage: ``python benchmarks/photo_filters.py [--settings demo kernel5 ...] [--epochs N]
[--merge]`` (``--merge`` reruns the settings named and keeps the other rows).
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from results import write_section
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lightning_convviz import render
from lightning_convviz.data import PhotoCropsDataModule
from lightning_convviz.demo import DATASETS, SmallConvNet
from lightning_convviz.functional import (
    filter_chromatic_share,
    filter_noise_score,
    filter_orientedness,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"


@dataclass(frozen=True)
class Setting:
    """One way to train: changes to the demo's model and data."""

    about: str
    model: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    #: Stride of the first convolution; a stride of 2 takes the place of the first max-pool,
    #: so the later layers see maps of the same size.
    first_stride: int = 1


SETTINGS: dict[str, Setting] = {
    "demo": Setting("the demo: 48 px, crops centred, 32 filters of 7 x 7, init std 0.01"),
    "not_centred": Setting("crops keep their mean colour", data={"centre_crops": False}),
    "default_init": Setting(
        "PyTorch's default initialisation (uniform, std 0.05)", {"first_layer_init_std": None}
    ),
    "kernel5": Setting("16 filters of 5 x 5", {"first_kernel": 5, "widths": (16, 32, 64)}),
    "weight_decay": Setting("weight decay 5e-4", {"weight_decay": 5e-4}),
    "px32": Setting("32 px crops", {"image_size": 32}, {"image_size": 32}),
    "stride2": Setting("first convolution at stride 2, in place of its max-pool", first_stride=2),
}


def stride_first_layer(model: SmallConvNet, stride: int) -> None:
    """Give the first convolution a stride of 2 and drop the max-pool after it."""
    if stride == 1:
        return
    assert stride == 2, "a stride of 2 replaces the first block's 2 x 2 max-pool"
    conv = model.features[0]
    assert isinstance(conv, torch.nn.Conv2d)
    pool = next(i for i, m in enumerate(model.features) if isinstance(m, torch.nn.MaxPool2d))
    kernel = conv.kernel_size[0]
    strided = torch.nn.Conv2d(
        conv.in_channels, conv.out_channels, kernel, stride=2, padding=kernel // 2
    )
    strided.load_state_dict(conv.state_dict())
    model.features[0], model.features[pool] = strided, torch.nn.Identity()


def first_layer(model: SmallConvNet) -> torch.Tensor:
    conv = model.features[0]
    assert isinstance(conv, torch.nn.Conv2d)
    return conv.weight.detach().clone()


def measures(weight: torch.Tensor, random_95th: float) -> dict[str, float]:
    orientedness = filter_orientedness(weight)
    return {
        "noise": filter_noise_score(weight).item(),
        "oriented": orientedness.nanmean().item(),
        "beyond_random": (orientedness > random_95th).float().mean().item(),
        "chromatic": filter_chromatic_share(weight).nanmean().item(),
    }


def colour_only_accuracy(data: PhotoCropsDataModule) -> float:
    """Validation accuracy of a logistic regression on each crop's colour statistics alone."""
    assert data.train_set is not None and data.val_set is not None

    def features(images: torch.Tensor) -> np.ndarray:
        stats = torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)
        return stats.numpy()

    (train_x, train_y), (val_x, val_y) = data.train_set.tensors, data.val_set.tensors
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(features(train_x), train_y.numpy())
    return float(model.score(features(val_x), val_y.numpy()))


def run(name: str, setting: Setting, epochs: int | None) -> dict[str, Any]:
    pl.seed_everything(0)
    demo = DATASETS["photos"]
    data = PhotoCropsDataModule(**{**demo.data, **setting.data})
    data.setup("fit")
    model = SmallConvNet(
        lr=demo.lr, **{"first_layer_init_std": 0.01, **demo.model, **setting.model}
    )
    stride_first_layer(model, setting.first_stride)
    initial = first_layer(model)
    trainer = pl.Trainer(
        max_epochs=epochs or demo.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    trained = first_layer(model)
    generator = torch.Generator().manual_seed(0)
    random = torch.randn(10_000, *trained.shape[1:], generator=generator)
    random_95th = filter_orientedness(random).quantile(0.95).item()
    picture = render.filter_grid(trained, 32, 3, 24)
    Image.fromarray(render.to_uint8_hwc(picture)).save(
        DOCS / "images" / f"photos_filters_{name}.png"
    )
    return {
        "name": name,
        "about": setting.about,
        "epochs": trainer.current_epoch,
        "seconds": seconds,
        "accuracy": float(trainer.callback_metrics["val/accuracy"]),
        "colour_only": colour_only_accuracy(data),
        "shape": "x".join(str(s) for s in trained.shape),
        "random": measures(random, random_95th),
        "initial": measures(initial, random_95th),
        "trained": measures(trained, random_95th),
    }


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The table's header, then one line per row."""
    lines = [
        "| setting | filters | epochs | val. accuracy (colour alone) | noise score | "
        "orientedness: mean (share beyond random's 95th pct.) | chromatic share |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for key in ("noise", "oriented", "chromatic"):
            values = [row[which][key] for which in ("random", "initial", "trained")]
            text = " / ".join(f"{v:.2f}" for v in values)
            if key == "oriented":
                shares = [row[which]["beyond_random"] for which in ("random", "initial", "trained")]
                text += " (" + " / ".join(f"{100 * s:.0f} %" for s in shares) + ")"
            cells.append(text)
        lines.append(
            f"| {row['about']} | {row['shape']} | {row['epochs']} ({row['seconds']:.0f} s) | "
            f"{row['accuracy']:.3f} ({row['colour_only']:.3f}) | " + " | ".join(cells) + " |"
        )
    return lines


def merged(page: str, lines: list[str]) -> list[str]:
    """``lines`` with the other settings' rows of the table already on ``page`` (``--merge``)."""
    header, rows = lines[:2], lines[2:]
    rows_on_page = [line for line in page.splitlines() if line.startswith("| ")]
    by_about = {line.split("|")[1].strip(): line for line in rows_on_page}
    by_about.update({line.split("|")[1].strip(): line for line in rows})
    abouts = [setting.about for setting in SETTINGS.values()]
    return header + [by_about[about] for about in abouts if about in by_about]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--epochs", type=int, default=None, help="default: each setting's")
    parser.add_argument("--out", type=Path, default=DOCS / "photos.md")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other settings' rows of --out's table"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    rows = []
    for name in args.settings:
        rows.append(run(name, SETTINGS[name], args.epochs))
        print("\n".join(table_lines(rows[-1:])), flush=True)
    lines = table_lines(rows)
    if args.merge and args.out.exists():
        lines = merged(args.out.read_text(), lines)
    body = (
        "`python benchmarks/photo_filters.py` on this machine's CPU: the first convolution of "
        "the photographs demo's model, random (10 000 Gaussian filters of the same shape) / at "
        "its initialisation / trained, each setting from the same seed.\n\n" + "\n".join(lines)
    )
    write_section(args.out, "First-layer filters, random / initial / trained", body)


if __name__ == "__main__":
    main()
