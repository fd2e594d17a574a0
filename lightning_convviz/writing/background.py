"""The drawing worker: one thread per process that renders and writes drawings, oldest first.

A callback's drawing has a part that needs the model (forward and backward passes, an
optimisation, a top-k) and a part that does not (colour maps, panels, matplotlib charts, PNG
encoding, every logger's write). The first runs in the training hook and ends by copying its
results to host memory; the second is handed to this worker, so that the training loop waits
only for the first. One worker serves every callback of a Trainer, on global rank zero (the
only rank that writes): drawings reach the loggers in the order they were handed over, and
:meth:`DrawingWorker.flush` waits until every one is written (at the end of training, on an
exception, at teardown and at interpreter exit).
"""

from __future__ import annotations

import atexit
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from pytorch_lightning import Trainer
from pytorch_lightning.utilities import rank_zero_warn

from lightning_convviz.functional.embedding import available_cores

__all__ = ["DrawingWorker", "background_choice"]

_T = TypeVar("_T")

#: Drawings waiting for the worker before a new one makes the loop wait (or the budget postpone).
DEFAULT_MAX_QUEUED = 4


@dataclass
class _DrawingJob:
    owner: str
    step: int
    work: Callable[[], None]
    ready: Any  # a torch.cuda.Event recorded after the copies to the host, or None
    done: Callable[[float], None] | None


class DrawingWorker:
    """A thread that runs drawing jobs in the order they are submitted.

    A job that raises is reported once per owner as a warning on the training thread (at the
    next :meth:`submit` or :meth:`flush`), naming the callback and the step; training goes on.

    Example:
        >>> worker = DrawingWorker(max_queued=2)
        >>> written = []
        >>> worker.submit("FilterMonitor", 0, lambda: written.append("picture"))
        >>> worker.close()
        >>> written
        ['picture']

    Args:
        max_queued: Most jobs waiting at once; :meth:`submit` waits while that many are queued.
    """

    def __init__(self, max_queued: int = DEFAULT_MAX_QUEUED) -> None:
        self.max_queued = max_queued
        self._jobs: queue.Queue[_DrawingJob | None] = queue.Queue(maxsize=max_queued)
        self._failures: list[tuple[str, int, BaseException]] = []
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="convviz-drawing", daemon=True)
        self._thread.start()
        #: The second lane, for long computations (a t-SNE): started on first use.
        self._computations: ThreadPoolExecutor | None = None
        _LIVE.add(self)

    @property
    def full(self) -> bool:
        """Whether a new job would have to wait for a queued one to finish."""
        return self._jobs.full()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(
        self,
        owner: str,
        step: int,
        work: Callable[[], None],
        ready: Any = None,
        done: Callable[[float], None] | None = None,
    ) -> None:
        """Queue ``work`` (waiting while the queue is full). ``ready``: a CUDA event to wait for
        before running it (the copies of its inputs to the host); ``done``: called on the
        worker with the seconds ``work`` took."""
        self.report_failures()
        self._jobs.put(_DrawingJob(owner, step, work, ready, done))

    def compute(self, work: Callable[[], _T]) -> Future[_T]:
        """Run ``work`` in the worker's second lane, beside the drawings (which it does not
        hold up), one computation at a time; its result or exception is the future's. The
        caller collects it on the training thread (and hands its drawing to :meth:`submit`)."""
        if self._computations is None:
            self._computations = ThreadPoolExecutor(1, thread_name_prefix="convviz-embedding")
        return self._computations.submit(work)

    def flush(self) -> None:
        """Wait until every submitted job has run, then report failures."""
        if self._thread.is_alive():
            self._jobs.join()
        self.report_failures()

    def close(self) -> None:
        """Flush and stop the drawing thread; cancel the computations not started (one
        running ends on its own, its result unread). A later :meth:`submit` needs a new
        worker."""
        if self._computations is not None:
            self._computations.shutdown(wait=False, cancel_futures=True)
            self._computations = None
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join()
        self.report_failures()
        _LIVE.discard(self)

    def report_failures(self) -> None:
        """Warn once per callback whose drawing failed in the worker (training thread)."""
        with self._lock:
            failures, self._failures = self._failures, []
        for owner, step, error in failures:
            if owner in self._warned:
                continue
            self._warned.add(owner)
            rank_zero_warn(
                f"{owner}: its drawing at step {step} failed while being rendered and written in "
                f"the background ({type(error).__name__}: {error}); training goes on, and its "
                "later drawings are tried again (this is said once)."
            )

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if job.ready is not None:
                    job.ready.synchronize()
                start = time.perf_counter()
                job.work()
                if job.done is not None:
                    job.done(time.perf_counter() - start)
            except Exception as error:
                assert job is not None
                with self._lock:
                    self._failures.append((job.owner, job.step, error))
            finally:
                self._jobs.task_done()


_LIVE: weakref.WeakSet[DrawingWorker] = weakref.WeakSet()


def background_choice(trainer: Trainer, wanted: bool | None = None) -> tuple[bool, str]:
    """Whether drawings are rendered and written in the background, and why (for the log).

    In the background when training leaves a core free: beside an accelerator (the CPU mostly
    waits for it), or when the CPU has more cores than the training processes' PyTorch threads.
    Otherwise on the training thread: a thread beside PyTorch's on busy cores slows both down.
    ``wanted`` (``DiagnosticsBudget(background=...)``) decides instead when not ``None``.
    """
    if wanted is not None:
        return wanted, "as DiagnosticsBudget(background=...) asks"
    cores = available_cores()
    accelerator = getattr(trainer, "accelerator", None)
    on_cpu = accelerator is None or type(accelerator).__name__ == "CPUAccelerator"
    if not on_cpu:
        return True, "training runs on an accelerator, the CPU cores are free"
    busy = torch.get_num_threads() * max(int(getattr(trainer, "num_devices", 1) or 1), 1)
    if cores > busy:
        return True, f"training keeps {busy} of {cores} CPU cores busy"
    return False, (
        f"training keeps all {cores} CPU cores busy (a thread beside it would slow it down)"
    )


@atexit.register
def _close_all() -> None:
    for worker in list(_LIVE):
        worker.close()
