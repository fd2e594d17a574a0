"""Shared by the benchmark scripts: write one section of ``docs/benchmarks.md``."""

from __future__ import annotations

from pathlib import Path


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
