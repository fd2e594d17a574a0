"""Read a demo run's TensorBoard logs back: every callback's pictures and scalars are there.

Usage: ``python tools/read_demo_logs.py LOGDIR``
"""

from __future__ import annotations

import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

#: Tag prefixes of the demo's callbacks' pictures.
PICTURES = (
    "activation_maps/",
    "filters/",
    "attribution/",
    "occlusion/",
    "max_activation/",
    "embedding/",
)


def main(log_dir: str) -> None:
    runs = sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")})
    if not runs:
        sys.exit(f"no TensorBoard events under {log_dir}")
    images: set[str] = set()
    scalars: set[str] = set()
    for run in runs:
        events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0})
        events.Reload()
        images |= set(events.Tags()["images"])
        scalars |= set(events.Tags()["scalars"])
    missing = [prefix for prefix in PICTURES if not any(t.startswith(prefix) for t in images)]
    print(f"{log_dir}: {len(images)} picture tags, {len(scalars)} scalar tags")
    if missing:
        sys.exit(f"no pictures under {missing}; found {sorted(images)}")


if __name__ == "__main__":
    main(sys.argv[1])
