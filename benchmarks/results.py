"""Shared by the benchmark scripts: the callbacks measured, the drawing costs a run logged, and
writing one section of ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import lightning_convviz as convviz

#: Every callback of the package, by class name.
CALLBACKS = [name for name in convviz.__all__ if name.endswith(("Monitor", "Doctor"))]


def drawing_costs(log_dir: str | Path) -> dict[str, list[float]]:
    """The ``cost/<callback>`` scalars of a TensorBoard run (seconds per drawing), by callback."""
    events = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag.removeprefix("cost/"): [event.value for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith("cost/") and tag not in ("cost/share", "cost/fixed_share")
    }


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of the results file."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    header = f"## {title}"
    section = f"{header}\n\n{body}\n"
    if header in text:
        start = text.index(header)
        end = text.find("\n## ", start + len(header))
        text = text[:start] + section + ("\n" + text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    path.write_text(text)
