"""Lay the frames one callback logged over a run side by side: a time-lapse in one picture.

Reads a TensorBoard run (for example one of ``make demo``) and writes a PNG with every frame of
one image tag, or of a crop of it, left to right, each captioned with its step:

    python examples/timelapse.py runs/digits_lr0.001/version_0 filters/features.0 \\
        --out docs/images/timelapse_filters_features.0.png

``--crop top,left,height,width`` (fractions of the frame) keeps a part of each frame, such as
the first row of a probe-image panel; ``--every K`` keeps every K-th frame (the first and the
last always).
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_convviz import render


def frames(run: str | Path, tag: str) -> list[tuple[int, np.ndarray]]:
    """Every frame logged under ``tag`` in the run, as ``(step, H x W x 3 uint8)``."""
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    if tag not in events.Tags()["images"]:
        known = ", ".join(sorted(events.Tags()["images"]))
        raise SystemExit(f"tag: {tag!r} is not an image of {run}; it has: {known}")
    return [
        (event.step, np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB")))
        for event in events.Images(tag)
    ]


def crop(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    """The part of ``frame`` at ``(top, left, height, width)``, in fractions of its sides."""
    top, left, height, width = box
    rows, columns = frame.shape[:2]
    y0, x0 = round(top * rows), round(left * columns)
    return frame[y0 : y0 + max(1, round(height * rows)), x0 : x0 + max(1, round(width * columns))]


def strip(picked: list[tuple[int, np.ndarray]], height: int) -> np.ndarray:
    """The frames scaled to ``height`` pixels, left to right, captioned with their steps."""
    scaled = []
    for _, frame in picked:
        width = max(1, round(frame.shape[1] * height / frame.shape[0]))
        image = Image.fromarray(frame).resize((width, height), Image.Resampling.NEAREST)
        scaled.append(np.asarray(image).astype(np.float32).transpose(2, 0, 1) / 255)
    widest = max(tile.shape[2] for tile in scaled)
    padded = [
        np.pad(tile, ((0, 0), (0, 0), (0, widest - tile.shape[2])), constant_values=1.0)
        for tile in scaled
    ]
    picture = render.labelled_grid(
        torch.from_numpy(np.stack(padded)),
        [f"step {step}" for step, _ in picked],
        columns=len(padded),
        min_side=height,
    )
    return np.asarray(picture)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a TensorBoard run folder (holding the event file)")
    parser.add_argument("tag", help="the image tag, e.g. filters/features.0")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--crop", default=None, help="top,left,height,width in fractions")
    parser.add_argument("--height", type=int, default=96, help="each frame's height in pixels")
    parser.add_argument("--every", type=int, default=1, help="keep every K-th frame")
    args = parser.parse_args(argv)
    found = frames(args.run, args.tag)
    if args.crop:
        values = tuple(float(part) for part in args.crop.split(","))
        if len(values) != 4:
            parser.error(f"--crop: expected top,left,height,width, got {args.crop!r}")
        box = (values[0], values[1], values[2], values[3])
        found = [(step, crop(frame, box)) for step, frame in found]
    picked = [
        item
        for index, item in enumerate(found)
        if index % args.every == 0 or index == len(found) - 1
    ]
    Image.fromarray(strip(picked, args.height)).save(args.out)
    print(
        f"{args.out}: {len(picked)} of {len(found)} frames of {args.tag}, steps "
        f"{', '.join(str(step) for step, _ in picked)}"
    )


if __name__ == "__main__":
    main()
