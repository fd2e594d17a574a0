"""Save the first or last frame of image tags of a TensorBoard run as PNGs (the docs' pictures).

Usage: ``python tools/gallery.py RUN OUT_DIR PREFIX TAG[@first|@last|@STEP] ...``

Each frame is written as ``OUT_DIR/PREFIX<tag with '/' as '_'>_<which>.png``, pixel for pixel
as the callback logged it. For example, after ``make demo DATA=photos``::

    python tools/gallery.py runs/photos_lr0.001/version_0 docs/images photos_ \\
        filters/features.0@first filters/features.0@last attribution/saliency@last
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main(run: str, out_dir: str, prefix: str, wanted: list[str]) -> None:
    events = EventAccumulator(run, size_guidance={"images": 0})
    events.Reload()
    known = events.Tags()["images"]
    for item in wanted:
        tag, _, which = item.partition("@")
        which = which or "last"
        if tag not in known:
            sys.exit(f"{tag!r} is not an image tag of {run}; it has: {', '.join(sorted(known))}")
        frames = events.Images(tag)
        if which == "first":
            frame = frames[0]
        elif which == "last":
            frame = frames[-1]
        else:
            matching = [f for f in frames if f.step == int(which)]
            if not matching:
                sys.exit(f"{tag!r} has no frame at step {which}: {[f.step for f in frames]}")
            frame = matching[0]
        path = Path(out_dir) / f"{prefix}{tag.replace('/', '_')}_{which}.png"
        Image.open(io.BytesIO(frame.encoded_image_string)).save(path)
        print(f"{path}: {tag} at step {frame.step}")


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
