"""Every callback beside a fast GPU run, as people train: what it costs, where it stalls, and
whether it synchronises the host.

torchvision's ResNet-50 (random weights, ``--classes`` classes) on synthetic images that live on
the device (a pool of ``--pool`` images of ``--side`` px whose colours depend on their class, so
that the model learns something; batches gathered on the device, nothing copied from the host),
``bf16-mixed``, channels_last, SGD with momentum; ``--epochs`` epochs of ``--steps`` training
steps, each followed by a validation epoch of ``--val-images`` images; optionally
``torch.compile`` (Lightning's way: the LightningModule compiled). Fitted in one process: a
short warm-up fit, then without callbacks, then with every callback at its defaults and the
default budget.

Measured:

* the training steps per second, from CUDA events recorded at each step's start (the GPU's
  own timeline, so that a host stall shows as the time the GPU went without work), without the
  intervals that hold a validation epoch; and the whole fit's wall time;
* each callback's ``cost/<callback>`` (what the training loop waited per drawing) and
  ``cost/<callback>/background`` (the drawing worker's seconds), read back from TensorBoard;
* the longest stall: the longest interval between two step starts, less the plain run's
  interval at the same place (a median step, or the plain run's validation epoch), in steps;
* the peak of GPU memory allocated, with and without;
* with ``--sync-check``, a shorter fit with every callback under
  ``torch.cuda.set_sync_debug_mode("warn")``: every synchronising call whose Python stack
  passes through lightning_convviz, by place, thread and step, and whether that step logged
  anything of ours (a logging step) or not (between drawings: there should be none).

Writes markdown to ``--out`` (and prints it). On a CPU (``--accelerator cpu``) the same code
runs with perf_counter in place of the events, for testing the script at tiny sizes.

Usage: ``python benchmarks/gpu_fast_run.py [--steps 500 --epochs 4] [--compile] [--sync-check]
[--out FILE]``
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
import torchvision
from pytorch_lightning.loggers import TensorBoardLogger
from results import CALLBACKS, drawing_costs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.data import DataLoader, Dataset, Sampler

import lightning_convviz as convviz

#: The callbacks whose model work (an optimisation of images) is their whole drawing.
OPTIMISING = ("InversionMonitor", "AdversarialMonitor", "ClassModelMonitor")


class DeviceImages(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A pool of synthetic images on the device; indexed by a tensor of indices (a batch)."""

    def __init__(self, size: int, classes: int, side: int, device: torch.device, seed: int) -> None:
        generator = torch.Generator(device=device).manual_seed(seed)
        self.labels = torch.randint(0, classes, (size,), device=device, generator=generator)
        palette = torch.randn(classes, 3, 4, 4, device=device, generator=generator)
        means = F.interpolate(palette[self.labels], size=(side, side), mode="bilinear")
        noise = torch.randn(size, 3, side, side, device=device, generator=generator)
        self.images = (means + 0.5 * noise).contiguous(memory_format=torch.channels_last)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class DeviceBatches(Sampler[torch.Tensor]):
    """Batches of indices drawn on the device: ``batches`` random batches of the pool per epoch
    (an epoch may be longer than the pool), or the pool in order. No host copy."""

    def __init__(self, size: int, batch: int, device: torch.device, batches: int | None) -> None:
        self.size, self.batch, self.device, self.batches = size, batch, device, batches
        self.generator = torch.Generator(device=device).manual_seed(0)

    def __len__(self) -> int:
        return self.batches if self.batches is not None else -(-self.size // self.batch)

    def __iter__(self) -> Any:
        if self.batches is None:
            order = torch.arange(self.size, device=self.device)
            for start in range(0, self.size, self.batch):
                yield order[start : start + self.batch]
            return
        for _ in range(self.batches):
            yield torch.randint(
                0, self.size, (self.batch,), device=self.device, generator=self.generator
            )


def loader(data: DeviceImages, batch: int, batches: int | None) -> DataLoader[Any]:
    sampler = DeviceBatches(len(data), batch, data.images.device, batches)
    return DataLoader(data, batch_size=None, sampler=sampler)


class FastClassifier(pl.LightningModule):
    """ResNet-50 (or ``arch``) on channels_last inputs, SGD with momentum."""

    def __init__(self, arch: str, classes: int, lr: float) -> None:
        super().__init__()
        self.net = getattr(torchvision.models, arch)(num_classes=classes)
        self.net = self.net.to(memory_format=torch.channels_last)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.net(x)
        return logits

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        loss = F.cross_entropy(self(images), labels)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.log("val/loss", F.cross_entropy(logits, labels))
        self.log("val/accuracy", (logits.argmax(dim=1) == labels).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-5)


class StepClock(pl.Callback):
    """Marks each training step's start on the device's timeline (a CUDA event; on a CPU, the
    clock), with its epoch, so that intervals between steps can be read at the end."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[tuple[int, Any]] = []

    def _mark(self, epoch: int) -> None:
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.marks.append((epoch, event))
        else:
            self.marks.append((epoch, time.perf_counter()))

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self._mark(trainer.current_epoch)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._mark(trainer.current_epoch + 1)  # closes the last interval

    def intervals(self) -> list[tuple[bool, float]]:
        """``(crosses an epoch end, seconds)`` between consecutive step starts."""
        if self.cuda:
            torch.cuda.synchronize()
        out = []
        for (epoch, start), (next_epoch, end) in zip(self.marks, self.marks[1:], strict=False):
            seconds = start.elapsed_time(end) / 1000 if self.cuda else end - start
            out.append((next_epoch != epoch, seconds))
        return out


@dataclass
class Fit:
    """What one fit measured."""

    wall: float
    intervals: list[tuple[bool, float]]
    peak_memory: float  # GiB
    costs: dict[str, list[float]] = field(default_factory=dict)
    cost_steps: dict[str, list[int]] = field(default_factory=dict)
    share: float = float("nan")
    fixed_share: float = float("nan")
    syncs: list[Sync] = field(default_factory=list)
    logged_steps: set[int] = field(default_factory=set)

    def steady(self, skip: int) -> list[float]:
        """Training-step intervals (no epoch end in them), the first ``skip`` left out."""
        return [s for crosses, s in self.intervals[skip:] if not crosses]

    def step_rate(self, skip: int) -> float:
        steady = self.steady(skip)
        return len(steady) / sum(steady) if steady else float("nan")


@dataclass
class Sync:
    """A synchronising CUDA call seen in sync debug mode."""

    place: str  # the innermost lightning_convviz frame
    thread: str
    step: int
    hook: str


class SyncRecorder(pl.Callback):
    """Sync debug mode "warn" from the fit's start to its end; records each synchronising call
    whose stack passes through lightning_convviz."""

    def __init__(self) -> None:
        self.syncs: list[Sync] = []
        self.others = 0
        self.step = 0
        self.hook = "setup"
        self._previous: Any = None

    def _show(self, message: Any, category: Any, filename: str, lineno: int, *rest: Any) -> None:
        if "synchronizing" not in str(message):
            self._previous(message, category, filename, lineno, *rest)
            return
        ours = [
            f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
            for frame in traceback.extract_stack()
            if "lightning_convviz" in frame.filename
        ]
        if not ours:
            self.others += 1
            return
        thread = threading.current_thread().name
        self.syncs.append(Sync(ours[-1], thread, self.step, self.hook))

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._previous = warnings.showwarning
        warnings.showwarning = self._show
        warnings.simplefilter("always")
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.step, self.hook = trainer.global_step, "training step"

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.step, self.hook = trainer.global_step, "validation"

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if torch.cuda.is_available():
            torch.cuda.set_sync_debug_mode("default")
        warnings.showwarning = self._previous


def fit(args: argparse.Namespace, callbacks: list[Any], steps: int, epochs: int) -> Fit:
    device = torch.device("cuda" if args.accelerator == "cuda" else "cpu")
    pl.seed_everything(0)
    model: Any = FastClassifier(args.arch, args.classes, args.lr)
    if args.compile:
        model = torch.compile(model)
    train = DeviceImages(args.pool, args.classes, args.side, device, seed=0)
    val = DeviceImages(args.val_images, args.classes, args.side, device, seed=1)
    clock = StepClock(cuda=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as log_dir:
        trainer = pl.Trainer(
            max_epochs=epochs,
            limit_train_batches=steps,
            num_sanity_val_steps=0,
            precision="bf16-mixed",
            logger=TensorBoardLogger(log_dir, name="run", version=0),
            callbacks=[clock, *callbacks],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator=args.accelerator,
            devices=1,
            benchmark=True,
        )
        start = time.perf_counter()
        trainer.fit(model, loader(train, args.batch, steps), loader(val, args.val_batch, None))
        wall = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
        result = Fit(wall, clock.intervals(), peak)
        if callbacks:
            read_costs(result, log_dir + "/run/version_0")
    return result


def read_costs(result: Fit, log_dir: str) -> None:
    """The cost scalars of a run, the steps each drawing was charged at, and every step at which
    something of ours was logged."""
    result.costs = drawing_costs(log_dir)
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    tags = events.Tags()
    for tag in tags["scalars"]:
        steps = [event.step for event in events.Scalars(tag)]
        if tag.startswith("cost/") and tag not in ("cost/share", "cost/fixed_share"):
            result.cost_steps[tag.removeprefix("cost/")] = steps
        if not tag.startswith(("train/", "val/", "epoch")):
            result.logged_steps.update(steps)
    for tag in tags["images"]:
        result.logged_steps.update(event.step for event in events.Images(tag))
    for name in ("share", "fixed_share"):
        if f"cost/{name}" in tags["scalars"]:
            setattr(result, name, events.Scalars(f"cost/{name}")[-1].value)


def every_callback() -> list[Any]:
    return [getattr(convviz, name)() for name in CALLBACKS]


def stalls(plain: Fit, full: Fit, step: float) -> list[tuple[int, float]]:
    """``(interval index, stall in steps)`` of the run with callbacks against the plain one."""
    plain_boundaries = [s for crosses, s in plain.intervals if crosses]
    boundary = 0
    out = []
    for index, (crosses, seconds) in enumerate(full.intervals):
        if crosses:
            base = plain_boundaries[min(boundary, len(plain_boundaries) - 1)]
            boundary += 1
        else:
            base = step
        out.append((index, (seconds - base) / step))
    return out


def report(args: argparse.Namespace, plain: Fit, full: Fit, title: str) -> list[str]:
    skip = min(args.skip, args.steps // 4)
    step = statistics.median(plain.steady(skip))
    plain_rate, full_rate = plain.step_rate(skip), full.step_rate(skip)
    stall_list = stalls(plain, full, step)
    index, worst = max(stall_list, key=lambda pair: pair[1])
    inside = [(i, s) for i, s in stall_list if not full.intervals[i][0]]
    inside_index, inside_worst = max(inside, key=lambda pair: pair[1], default=(0, 0.0))
    crossing = full.intervals[index][0]
    # the global step of the interval's end is `index + 1` (the steps are 0-based)
    at_step = index + 1
    near = sorted(
        name
        for name, steps in full.cost_steps.items()
        if not name.endswith("/background") and any(abs(s - at_step) <= 1 for s in steps)
    )
    lines = [
        f"### {title}",
        "",
        f"{args.epochs} epochs of {args.steps} training steps (batch {args.batch}, {args.side} px, "
        f"{args.classes} classes), each followed by a validation epoch of {args.val_images} "
        f"images; steps after the first {skip} of each fit timed on the device.",
        "",
        "| | without callbacks | with every callback | ratio |",
        "|---|---|---|---|",
        f"| training steps per second (validation left out) | {plain_rate:.2f} | "
        f"{full_rate:.2f} | {plain_rate / full_rate:.3f} |",
        f"| fit wall time (s) | {plain.wall:.1f} | {full.wall:.1f} | "
        f"{full.wall / plain.wall:.3f} |",
        f"| GPU memory allocated, peak (GiB) | {plain.peak_memory:.2f} | "
        f"{full.peak_memory:.2f} | {full.peak_memory / max(plain.peak_memory, 1e-9):.2f} |",
        "",
        f"One training step: {1000 * step:.1f} ms (median without callbacks). The budget's shares "
        f"at the end: drawings in between {100 * full.share:.1f} %, first and last drawings "
        f"{100 * full.fixed_share:.1f} % of the fit. Longest stall: {worst:.1f} steps, at step "
        f"{at_step}"
        + (" (an epoch end: beyond the plain run's validation)" if crossing else "")
        + (f", where {', '.join(near)} drew" if near else "")
        + f"; within an epoch: {inside_worst:.1f} steps, at step {inside_index + 1}"
        + ".",
        "",
        "| callback | drawings | loop waited, all (s) | longest wait (s) | longest wait (steps) "
        "| worker (s) |",
        "|---|---|---|---|---|---|",
    ]
    for name in sorted(n for n in full.costs if not n.endswith("/background")):
        waits = full.costs[name]
        background = sum(full.costs.get(f"{name}/background", []))
        longest = max(waits, default=0.0)
        mark = " (optimisation)" if name in OPTIMISING else ""
        lines.append(
            f"| {name}{mark} | {len(waits)} | {sum(waits):.2f} | {longest:.2f} | "
            f"{longest / step:.1f} | {background:.2f} |"
        )
    return lines


def sync_report(result: Fit, recorder: SyncRecorder) -> list[str]:
    between = [s for s in recorder.syncs if s.step not in result.logged_steps]
    lines = [
        "### Host synchronisations",
        "",
        f"Every callback, {len(result.intervals)} training steps, under "
        f'`torch.cuda.set_sync_debug_mode("warn")`: {len(recorder.syncs)} synchronising calls '
        f"with lightning_convviz on the stack ({len(between)} at steps where nothing of ours was "
        f"logged), {recorder.others} without.",
        "",
        "| place (innermost lightning_convviz frame) | thread | during | calls | steps | of which "
        "between logging steps |",
        "|---|---|---|---|---|---|",
    ]
    groups: dict[tuple[str, str, str], list[Sync]] = {}
    for sync in recorder.syncs:
        groups.setdefault((sync.place, sync.thread, sync.hook), []).append(sync)
    for (place, thread, hook), found in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        steps = sorted({s.step for s in found})
        shown = ", ".join(map(str, steps[:8])) + (" ..." if len(steps) > 8 else "")
        outside = sum(1 for s in found if s.step not in result.logged_steps)
        lines.append(f"| `{place}` | {thread} | {hook} | {len(found)} | {shown} | {outside} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accelerator", default="cuda", help="cuda, or cpu to test the script")
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--side", type=int, default=176)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pool", type=int, default=4096, help="training images on the device")
    parser.add_argument("--val-images", type=int, default=2048)
    parser.add_argument("--val-batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=500, help="training steps per epoch")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--skip", type=int, default=50, help="warm-up steps left out of rates")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--compile", action="store_true", help="torch.compile the module")
    parser.add_argument("--sync-check", action="store_true", help="also the host-sync fit")
    parser.add_argument("--sync-only", action="store_true", help="only the host-sync fit")
    parser.add_argument("--out", type=Path, default=None, help="markdown written here")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")
    cuda = args.accelerator == "cuda"
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    on = torch.cuda.get_device_name(0) if cuda else "CPU"
    lines = [
        f"{on}; torch {torch.__version__}, Lightning {pl.__version__}, torchvision "
        f"{torchvision.__version__}; torchvision {args.arch}, bf16-mixed, channels_last"
        + (", torch.compile" if args.compile else ", eager")
        + ".",
        "",
    ]

    def write() -> None:
        text = "\n".join(lines)
        if args.out:
            args.out.write_text(text + "\n")

    if not args.sync_only:
        started = time.perf_counter()
        fit(args, [], steps=min(args.steps, 30), epochs=1)  # warm-up: CUDA, cuDNN, allocator
        print(f"warm-up fit: {time.perf_counter() - started:.1f} s", flush=True)
        plain = fit(args, [], args.steps, args.epochs)
        print(f"without callbacks: {plain.wall:.1f} s", flush=True)
        full = fit(args, every_callback(), args.steps, args.epochs)
        print(f"with every callback: {full.wall:.1f} s", flush=True)
        title = "A fast run" + (" (torch.compile)" if args.compile else "")
        lines += [*report(args, plain, full, title), ""]
        write()
        print("\n".join(lines), flush=True)
    if args.sync_check or args.sync_only:
        recorder = SyncRecorder()
        steps = min(args.steps, 60)
        result = fit(args, [recorder, *every_callback()], steps=steps, epochs=2)
        result.syncs = recorder.syncs
        lines += [*sync_report(result, recorder), ""]
        write()
        print("\n".join(sync_report(result, recorder)), flush=True)


if __name__ == "__main__":
    main()
