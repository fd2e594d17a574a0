"""Every callback under DDP: two CPU processes (gloo) run tests/ddp_script.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_events

SCRIPT = Path(__file__).with_name("ddp_script.py")
#: The tests' helpers and the models they share with the benchmarks (benchmarks/workloads.py).
PATHS = os.pathsep.join([str(SCRIPT.parent), str(SCRIPT.parent.parent / "benchmarks")])


def run_script(out: Path, devices: int, *extra: str) -> dict[str, object]:
    environment = {**os.environ, "PYTHONPATH": PATHS}
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), str(devices), *extra],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,  # a rank left waiting in a collective ends here
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    if extra[:1] == ("faults",):
        return {}
    summary: dict[str, object] = json.loads((out / "summary.json").read_text())
    return summary


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP on CPU is tested on Linux")
@pytest.mark.parametrize("worker", [False, True], ids=["drawing-now", "drawing-worker"])
def test_two_processes_with_every_callback_finish_and_share_their_statistics(
    tmp_path: Path, worker: bool
) -> None:
    summary = run_script(tmp_path, 2, *(["background"] if worker else []))
    assert summary["drawing_threads"] == []  # closed at teardown
    assert summary["world_size"] == 2
    # the sign channel fires on rank 1's (odd) images only: rank 0 gets them through the merge
    ids = summary["top_ids"]
    assert isinstance(ids, list) and len(ids) == len(set(ids)) == 6
    assert all(i % 2 == 1 for i in ids) and max(ids) < 16
    assert summary["embedded"] == [16, 16]  # 8 codes from each rank, twice
    # the confusions of every validation image of both ranks; top losses by position in the data
    assert summary["confused_images"] == 16
    positions = summary["top_loss_positions"]
    assert isinstance(positions, list) and len(set(positions)) == 6 and max(positions) < 16
    log_dir = tmp_path / "run/version_0"
    assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1  # one process writes
    events = read_events(log_dir)
    # the sign channel is dead on rank 0's negative images and alive on rank 1's positive ones
    assert {e.value for e in events.Scalars("activation_stats/dead_fraction/sign_relu")} == {0.0}
    for tag in (
        "max_activation/sign",
        "embedding/scatter",
        "attribution/grad_cam",
        "errors/top_losses",
        "correspondence/matches/sign_relu",
    ):
        assert tag in events.Tags()["images"], tag
    # the training doctor: one diagnosis on every rank, from sums over both ranks
    doctors = [json.loads((tmp_path / f"doctor_rank{r}.json").read_text()) for r in (0, 1)]
    assert doctors[0] == doctors[1]
    assert sum(doctors[0]["label_counts"]) == 16  # an epoch: 2 batches of 4 on each rank
    assert doctors[0]["measured"] == 4 and len(doctors[0]["epochs"]) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP on CPU is tested on Linux")
def test_a_diagnostic_failing_on_one_rank_switches_off_on_every_rank_without_a_hang(
    tmp_path: Path,
) -> None:
    run_script(tmp_path, 2, "faults")
    ranks = [json.loads((tmp_path / f"faults_rank{r}.json").read_text()) for r in (0, 1)]
    callbacks = ["ActivationStatsMonitor", "MaxActivationMonitor", "EmbeddingMonitor"]
    callbacks += ["AttributePerformanceMonitor", "ConfusionMonitor", "LearningRateDoctor"]
    for rank in ranks:
        assert rank["on"] == []  # all switched off, on both ranks; the run finished
    failed_here = [w for w in ranks[1]["warnings"] if "injected failure" in w]
    told = [w for w in ranks[0]["warnings"] if "failed on another rank" in w]
    for name in callbacks:
        assert sum(w.startswith(f"Failing{name} failed in") for w in failed_here) == 1, name
        assert sum(w.startswith(f"Failing{name} failed on another rank") for w in told) == 1, name
    assert not any("injected failure" in w for w in ranks[0]["warnings"])


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP on CPU is tested on Linux")
def test_a_budget_that_postpones_every_due_drawing_leaves_no_rank_waiting(
    tmp_path: Path,
) -> None:
    summary = run_script(tmp_path, 2, "share", "1e-9")
    postponed = summary["postponed"]
    assert isinstance(postponed, dict) and postponed  # rank zero held drawings back
    assert summary["embedded"] == [16, 16]  # the first and the last collection are drawn
    events = read_events(tmp_path / "run" / "version_0")
    steps = [e.step for e in events.Images("attribution/saliency")]
    assert steps[0] == 0 and steps[-1] == 4  # the first and the last drawing
