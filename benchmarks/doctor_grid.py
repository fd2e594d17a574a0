"""TrainingDoctor against planted faults: each fault planted in otherwise healthy runs on the
digits (several variants per fault), beside healthy runs of several architectures, optimizers
and initialisations, a few epochs each, the doctor at its defaults.

A planted run is right when the fault's kind is among the doctor's confirmed findings and no
learning-rate finding stands beside a fault that is not the learning rate's; a healthy run is
right with no finding and no warning. Every run records the doctor's findings, its
provisional faults, its warnings and every signal it read, so that ``--table`` can diagnose the
recorded signals again with the rules of the code at hand.

Usage (``make doctor-grid``; about 8 minutes on 2 cores)::

    python benchmarks/doctor_grid.py --runs [--only NAME] [--again]  # the runs not recorded
    python benchmarks/doctor_grid.py --table [--rejudge] [--out FILE]
    python benchmarks/doctor_grid.py --show --logdir runs/doctor  # make diagnose
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from planted_faults import fit_with_doctor, planted_run
from results import write_section

from lightning_convviz import TrainingDoctor
from lightning_convviz.functional import RunSignals, diagnose_run
from lightning_convviz.functional.lr_judgement import StepSignals, judge_learning_rate
from lightning_convviz.functional.run_faults import EpochRecord

RECORDS = Path(__file__).parent / "doctor_grid.jsonl"
EPOCHS = 6
#: The held-out part: its variants were not looked at while the thresholds were calibrated.
HELD_OUT_SEED = 2
#: What ``--show`` (``make diagnose``) trains: a healthy run beside three faults.
SHOWN = ("healthy/adam1e-3/s0", "frozen/backbone/s0", "labels/shuffled/s0", "dead/bias-4/s0")


@dataclass(frozen=True)
class Plan:
    """One run of the grid: a planted fault (``expected``) or a healthy run (``None``)."""

    name: str
    expected: str | None
    optimizer: str = "adam"
    lr: float = 1e-3
    seed: int = 0
    epochs: int = EPOCHS
    batch_norm: bool = False
    #: What is planted (read by :func:`build`).
    plant: str = "none"
    strength: float = 1.0
    #: Other kinds the planted fault also shows, not counted wrong (a deep sigmoid network's
    #: gradients vanish because its units saturate).
    also: tuple[str, ...] = ()
    #: Which demo's data and network: ``digits`` or ``photos``.
    data: str = "digits"
    #: The demo's ``small`` network or torchvision's ``resnet18``.
    architecture: str = "small"

    @property
    def held_out(self) -> bool:
        return self.seed == HELD_OUT_SEED


def plans() -> list[Plan]:
    grid: list[Plan] = []
    for seed in (0, 1, HELD_OUT_SEED):
        s = f"s{seed}"
        grid += [
            Plan(f"healthy/adam1e-3/{s}", None, seed=seed),
            Plan(f"healthy/adam3e-3/{s}", None, lr=3e-3, seed=seed),
            Plan(f"healthy/bn-sgd3e-2/{s}", None, "sgd", 3e-2, seed=seed, batch_norm=True),
            Plan(f"healthy/bn-adam1e-3/{s}", None, seed=seed, batch_norm=True),
            Plan(f"healthy/bn-sgd1e-1/{s}", None, "sgd", 1e-1, seed=seed, batch_norm=True),
            Plan(f"healthy/adamw1e-3/{s}", None, "adamw", 1e-3, seed=seed),
            Plan(f"healthy/default-init/{s}", None, seed=seed, plant="default_init"),
            Plan(f"inputs/x255/{s}", "inputs_not_normalized", seed=seed, plant="raw", strength=255),
            Plan(f"inputs/x40/{s}", "inputs_not_normalized", seed=seed, plant="raw", strength=40),
            Plan(f"init/x8/{s}", "init_loss_off", seed=seed, plant="init", strength=8),
            Plan(f"init/x5/{s}", "init_loss_off", seed=seed, plant="init", strength=5),
            Plan(f"labels/shuffled/{s}", "not_learning", seed=seed, plant="shuffled"),
            Plan(f"labels/shuffled-sgd/{s}", "not_learning", "sgd", 3e-2, seed, plant="shuffled"),
            Plan(
                f"vanishing/sigmoid-deep/{s}",
                "vanishing_gradients",
                seed=seed,
                plant="sigmoid_deep",
                also=("saturated_activations",),
            ),
            Plan(
                f"saturated/tanh-big/{s}",
                "saturated_activations",
                seed=seed,
                plant="tanh_big",
                also=("vanishing_gradients", "init_loss_off"),
            ),
            Plan(f"dead/bias-4/{s}", "dead_units", seed=seed, plant="dead_bias", strength=4),
            Plan(f"dead/bias-2/{s}", "dead_units", seed=seed, plant="dead_bias", strength=2),
            Plan(f"frozen/backbone/{s}", "frozen_layers", seed=seed, plant="frozen"),
            Plan(f"frozen/first-block/{s}", "frozen_layers", seed=seed, plant="frozen_first"),
            Plan(f"overfit/150-images/{s}", "overfitting", seed=seed, epochs=40, plant="small"),
            Plan(f"imbalance/60pct/{s}", "class_imbalance", seed=seed, plant="imbalance"),
            Plan(f"lr/adam3e-2/{s}", "lr_too_high", lr=3e-2, seed=seed),
            Plan(f"lr/sgd1e-4/{s}", "lr_too_low", "sgd", 1e-4, seed=seed),
        ]
    for seed in (0, HELD_OUT_SEED):
        s = f"s{seed}"
        photos: list[Plan] = [
            Plan(f"photos/healthy/adam1e-3/{s}", None, seed=seed),
            Plan(f"photos/healthy/bn-adam1e-3/{s}", None, seed=seed, batch_norm=True),
            Plan(f"photos/healthy/bn-sgd3e-2/{s}", None, "sgd", 3e-2, seed, batch_norm=True),
            Plan(
                f"photos/inputs/x255/{s}",
                "inputs_not_normalized",
                seed=seed,
                plant="raw",
                strength=255,
            ),
            Plan(f"photos/init/x8/{s}", "init_loss_off", seed=seed, plant="init", strength=8),
            Plan(f"photos/labels/shuffled/{s}", "not_learning", seed=seed, plant="shuffled"),
            Plan(
                f"photos/vanishing/sigmoid-deep/{s}",
                "vanishing_gradients",
                seed=seed,
                plant="sigmoid_deep",
                also=("saturated_activations",),
            ),
            Plan(f"photos/dead/bias-4/{s}", "dead_units", seed=seed, plant="dead_bias", strength=4),
            Plan(f"photos/frozen/backbone/{s}", "frozen_layers", seed=seed, plant="frozen"),
            Plan(
                f"photos/overfit/150-images/{s}", "overfitting", seed=seed, epochs=40, plant="small"
            ),
            Plan(f"photos/imbalance/60pct/{s}", "class_imbalance", seed=seed, plant="imbalance"),
            Plan(f"photos/lr/adam3e-2/{s}", "lr_too_high", lr=3e-2, seed=seed),
            Plan(f"photos/lr/sgd1e-4/{s}", "lr_too_low", "sgd", 1e-4, seed=seed),
        ]
        grid += [dataclasses.replace(plan, data="photos") for plan in photos]
    resnet = [
        Plan("photos/resnet18/healthy/adam1e-3/s0", None),
        Plan("photos/resnet18/healthy/sgd1e-2/s0", None, "sgd", 1e-2),
        Plan("photos/resnet18/inputs/x255/s0", "inputs_not_normalized", plant="raw", strength=255),
        Plan("photos/resnet18/labels/shuffled/s0", "not_learning", plant="shuffled"),
        Plan("photos/resnet18/frozen/backbone/s0", "frozen_layers", plant="frozen"),
        Plan("photos/resnet18/imbalance/60pct/s0", "class_imbalance", plant="imbalance"),
    ]
    grid += [dataclasses.replace(p, data="photos", architecture="resnet18") for p in resnet]
    return grid


# -- running and recording --------------------------------------------------------------------


def run(plan: Plan, log_dir: Path) -> dict[str, Any]:
    pl.seed_everything(plan.seed)
    model, data = planted_run(
        plan.plant,
        plan.strength,
        optimizer=plan.optimizer,
        lr=plan.lr,
        batch_norm=plan.batch_norm,
        seed=plan.seed,
        data=plan.data,
        architecture=plan.architecture,
    )
    doctor = TrainingDoctor()
    started = time.perf_counter()
    trainer, warned = fit_with_doctor(
        model,
        data,
        doctor,
        epochs=plan.epochs,
        log_dir=log_dir,
        name=plan.name.replace("/", "_"),
    )
    signals = doctor.fault_records.signals
    return {
        "plan": dataclasses.asdict(plan),
        "seconds": time.perf_counter() - started,
        "found": [f.kind for f in doctor.findings],
        "first_step": {f.kind: f.step for f in doctor.findings},
        "provisional": [f.kind for f in doctor.provisional],
        "notes": list(doctor.diagnosis.notes) if doctor.diagnosis else [],
        "warnings": warned,
        "withdrawn": [f.kind for f in doctor.withdrawn],
        "val_accuracy": float(trainer.callback_metrics.get("val/accuracy", math.nan)),
        "signals": dataclasses.asdict(signals),
        "steps": [dataclasses.asdict(s) for s in doctor.steps],
        "epochs": [dataclasses.asdict(e) for e in doctor.epochs],
        "summary": doctor.summary(),
        "peak_lr": doctor.records.peak_lr,
        "scheduler": doctor.records.scheduler,
    }


def load() -> dict[str, dict[str, Any]]:
    if not RECORDS.exists():
        return {}
    rows = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]
    return {row["plan"]["name"]: row for row in rows}


def rediagnose(row: dict[str, Any]) -> list[str]:
    """The kinds the recorded signals give with the rules of the code at hand (every kind
    found at the last epoch end, confirmed or not)."""
    from lightning_convviz.functional.lr_judgement import EpochSignals

    raw = dict(row["signals"])
    raw["epochs"] = [EpochRecord(**e) for e in raw["epochs"]]
    raw["initial_dead"] = {k: tuple(v) for k, v in raw["initial_dead"].items()}
    signals = RunSignals(**raw)
    steps = [StepSignals(**s) for s in row["steps"]]
    epochs = [
        EpochSignals(**{**e, "dead": {k: tuple(v) for k, v in e["dead"].items()}})
        for e in row["epochs"]
    ]
    judgement = judge_learning_rate(
        steps, epochs, peak_lr=row["peak_lr"], scheduler=row["scheduler"]
    )
    latest = epochs[-1].dead if epochs else {}
    diagnosis = diagnose_run(signals, steps, judgement, latest, step=epochs[-1].step)
    return diagnosis.kinds


def score(row: dict[str, Any], found: list[str]) -> tuple[bool, str]:
    plan = row["plan"]
    expected = plan["expected"]
    if expected is None:
        right = not found and not row["warnings"]
        return right, "" if right else f"healthy run with {found or row['warnings']}"
    if expected not in found:
        return False, f"missed {expected}"
    lr_kinds = {"lr_too_high", "lr_too_low"}
    if not expected.startswith("lr_") and lr_kinds & set(found):
        return False, "a learning-rate verdict beside a fault that is not the learning rate's"
    unexpected = set(found) - {expected, *plan["also"]}
    return True, f"also {sorted(unexpected)}" if unexpected else ""


def table(rows: dict[str, dict[str, Any]], rejudge: bool) -> str:
    lines = [
        "| run | expected | found (confirmed) | first step | provisional | right | note |",
        "|---|---|---|---|---|---|---|",
    ]
    totals: dict[str, list[int]] = {}
    for name, row in rows.items():
        found = rediagnose(row) if rejudge else row["found"]
        right, note = score(row, found)
        plan = row["plan"]
        part = "held out" if plan["seed"] == HELD_OUT_SEED else "calibration"
        group = f"{'healthy' if plan['expected'] is None else 'planted'}, {part}"
        counts = totals.setdefault(group, [0, 0])
        counts[0] += int(right)
        counts[1] += 1
        first = ", ".join(f"{k} {v}" for k, v in row["first_step"].items())
        lines.append(
            f"| {name} | {plan['expected'] or 'none'} | {', '.join(found) or 'none'} | "
            f"{first} | {', '.join(row['provisional']) or ''} | {'yes' if right else 'NO'} | "
            f"{note} |"
        )
    lines += ["", "| part | right | runs |", "|---|---|---|"]
    lines += [f"| {group} | {r} | {n} |" for group, (r, n) in sorted(totals.items())]
    seconds = sum(row["seconds"] for row in rows.values())
    lines += ["", f"{len(rows)} runs, {seconds / 60:.1f} minutes of training with the doctor."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", action="store_true")
    parser.add_argument(
        "--show", action="store_true", help="a healthy run beside three faults, summaries printed"
    )
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--rejudge", action="store_true", help="diagnose the records again")
    parser.add_argument("--only", default=None, help="runs whose name contains this")
    parser.add_argument("--again", action="store_true", help="rerun recorded runs too")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--logdir", type=Path, default=Path("/tmp/doctor_grid"))
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    if args.runs:
        done = load()
        for plan in plans():
            if args.only and args.only not in plan.name:
                continue
            if plan.name in done and not args.again:
                continue
            row = run(plan, args.logdir)
            done[plan.name] = row
            RECORDS.write_text("".join(json.dumps(r) + "\n" for r in done.values()))
            print(
                f"{plan.name}: found {row['found']} provisional {row['provisional']} "
                f"({row['seconds']:.0f} s)",
                flush=True,
            )
    if args.show:
        for name in SHOWN:
            plan = next(p for p in plans() if p.name == name)
            row = run(plan, args.logdir)
            print(f"\n## {name} (validation accuracy {row['val_accuracy']:.3f})\n")
            print(row["summary"])
        print(f"\nTensorBoard: .venv/bin/tensorboard --logdir {args.logdir}")
    if args.table:
        text = table(load(), args.rejudge)
        if args.out:
            write_section(args.out, "The fault grid (benchmarks/doctor_grid.py)", text)
        print(text)


if __name__ == "__main__":
    main()
