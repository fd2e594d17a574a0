"""Label the runs of ``lr_doctor_grid.py`` by their outcomes, judge their recorded signals
again with the current rules, and score the verdicts and suggestions (and ``lr_find``'s)."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from results import write_section

from lightning_convviz.callbacks.fault_records import FaultRecords
from lightning_convviz.functional.diagnosis import diagnose_run
from lightning_convviz.functional.lr_judgement import (
    EpochSignals,
    Judgement,
    JudgementRules,
    StepSignals,
    judge_learning_rate,
)

#: The labels' rule (``lr_doctor_grid.py``'s docstring): a run within this many points of the
#: best final accuracy of its architecture and optimizer is healthy ...
HEALTHY_POINTS = 2.0
#: ... more than this many points below it, too low or too high by its side of the best rate.
MISSED_POINTS = 5.0
#: A suggestion is right in the healthy band widened by this factor either side.
BAND_SLACK = 1.5
#: The grid's architectures as the tables name them.
ARCHITECTURE_NAMES = {
    "digits_cnn": "digits CNN",
    "resnet18": "ResNet-18",
    "convnext_atto": "ConvNeXt-Atto",
    "resnet18_photos": "ResNet-18 photographs (SGD)",
}


def judge_again(record: dict[str, Any], rules: JudgementRules | None = None) -> Judgement:
    """The judgement of a recorded run's signals under ``rules``: "cannot tell" where the
    run's other faults (recorded since the training doctor) explain the signals it reads."""
    fields = set(StepSignals.__dataclass_fields__)
    steps = [StepSignals(**{k: v for k, v in s.items() if k in fields}) for s in record["steps"]]
    epochs = [
        EpochSignals(**{**e, "dead": {k: tuple(v) for k, v in e["dead"].items()}})
        for e in record["epochs"]
    ]
    judgement = judge_learning_rate(
        steps,
        epochs,
        first_nonfinite_loss_step=record["first_nonfinite_loss_step"],
        peak_lr=record["peak_lr"],
        scheduler=record["scheduler"],
        rules=rules,
    )
    if "faults" not in record or not epochs:  # recorded before the doctor read other faults
        return judgement
    signals = FaultRecords.from_state_dict(record["faults"]).signals
    diagnosis = diagnose_run(signals, steps, judgement, epochs[-1].dead, step=epochs[-1].step)
    if diagnosis.withheld is not None:
        return replace(judgement, verdict="cannot tell", findings=(), suggested_lr=None)
    return judgement


def label(runs: list[dict[str, Any]]) -> None:
    """Add ``label`` (healthy / too low / too high / None: not scored) and ``band`` (the range
    of the constant learning rates labelled healthy) to every run, per architecture and
    optimizer (scheduled runs included in the best accuracy; a scheduled run's side is that of
    its peak against the best constant learning rate)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        groups[(run["architecture"], run["optimizer"])].append(run)
    for group in groups.values():
        constant = [r for r in group if r["schedule"] == "constant"]
        top = max(_accuracy(r) for r in group)  # scheduled runs included
        best_lr = max(constant, key=lambda r: _accuracy(r))["lr"]
        healthy = [r["lr"] for r in constant if 100 * (top - _accuracy(r)) <= HEALTHY_POINTS]
        band = (min(healthy), max(healthy)) if healthy else (best_lr, best_lr)
        for run in group:
            gap = 100 * (top - _accuracy(run))
            if gap <= HEALTHY_POINTS:
                run["label"] = "healthy so far"
            elif gap > MISSED_POINTS:
                run["label"] = "too low" if run["lr"] < best_lr else "too high"
            else:
                run["label"] = None
            run["band"] = band
            run["best"] = top


def _accuracy(run: dict[str, Any]) -> float:
    value = run["accuracy"]
    return value if isinstance(value, float) and math.isfinite(value) else 0.0


def suggestion_right(suggested: float | None, band: tuple[float, float]) -> bool:
    return suggested is not None and band[0] / BAND_SLACK <= suggested <= band[1] * BAND_SLACK


def score(runs: list[dict[str, Any]], rules: JudgementRules | None = None) -> dict[str, Any]:
    """Verdicts right, suggestions right, per architecture and overall: ``suggestions`` over
    every run labelled too low or too high (a verdict of healthy, which suggests nothing, a
    miss), ``made`` over the suggestions the doctor made on them."""
    verdicts: dict[str, list[bool]] = defaultdict(list)
    suggestions: dict[str, list[bool]] = defaultdict(list)
    made: dict[str, list[bool]] = defaultdict(list)
    for run in runs:
        judgement = judge_again(run, rules)
        run["judged"] = judgement
        if run["label"] is None:
            continue
        right = judgement.verdict == run["label"]
        verdicts[run["architecture"]].append(right)
        verdicts["all"].append(right)
        if run["label"] != "healthy so far":
            hit = suggestion_right(judgement.suggested_lr, run["band"])
            suggestions[run["architecture"]].append(hit)
            suggestions["all"].append(hit)
            if judgement.suggested_lr is not None:
                made[run["architecture"]].append(hit)
                made["all"].append(hit)
    return {"verdicts": verdicts, "suggestions": suggestions, "made": made}


def report(records: list[dict[str, Any]], out: Path | None = None, title: str = "") -> str:
    runs = [r for r in records if not r.get("lr_find")]
    finders = {
        (r["architecture"], r["optimizer"]): r["suggested_lr"] for r in records if r.get("lr_find")
    }
    label(runs)
    scores = score(runs)
    columns = "architecture optimizer schedule lr|val accuracy|label|verdict|suggested lr|right?"
    names = columns.replace(" ", "|", 3).split("|")
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for run in runs:
        judged: Judgement = run["judged"]
        suggested = judged.suggested_lr
        if run["label"] is None:
            right = "not scored"
        else:
            right = "yes" if judged.verdict == run["label"] else "**no**"
            if run["label"] != "healthy so far":
                hit = suggestion_right(suggested, run["band"])
                right += ", suggestion " + ("in band" if hit else "**out of band**")
        lines.append(
            f"| {run['architecture']} | {run['optimizer']} | {run['schedule']} | {run['lr']:g} | "
            f"{run['accuracy']:.3f} | {run['label'] or '-'} | {judged.verdict} | "
            f"{'' if suggested is None else f'{suggested:.2g}'} | {right} |"
        )
    summary = [
        "| architecture | verdicts right | suggestions in band | of the suggestions made |",
        "|---|---|---|---|",
    ]
    for arch in [*sorted({r["architecture"] for r in runs}), "all"]:
        v, s, m = (scores[key][arch] for key in ("verdicts", "suggestions", "made"))
        summary.append(f"| {arch} | {_share(v)} | {_share(s)} | {_share(m)} |")
    anchor = [
        "| architecture | optimizer | healthy band | lr_find suggests | in band? |",
        "|---|---|---|---|---|",
    ]
    hits = []
    for (arch, optimizer), suggested in sorted(finders.items()):
        band = next(
            r["band"] for r in runs if (r["architecture"], r["optimizer"]) == (arch, optimizer)
        )
        hit = suggestion_right(suggested, band)
        # lr_find is scored on every run its group labelled too low or too high
        missed = [
            r
            for r in runs
            if (r["architecture"], r["optimizer"]) == (arch, optimizer)
            and r["label"] in ("too low", "too high")
        ]
        hits += [hit] * len(missed)
        anchor.append(
            f"| {arch} | {optimizer} | {band[0]:g} to {band[1]:g} | "
            f"{'none' if suggested is None else f'{suggested:.2g}'} | {'yes' if hit else 'no'} |"
        )
    share = 100 * sum(hits) / max(len(hits), 1)
    anchor.append(
        f"\nOn the {len(hits)} runs labelled too low or too high, lr_find's suggestion for their "
        f"architecture and optimizer lands in the band on {sum(hits)} ({share:.0f}%)."
    )
    text = "\n".join(summary) + "\n\n" + "\n".join(anchor) + "\n\n" + "\n".join(lines)
    if out is not None:
        write_section(out, title or "The grid (benchmarks/lr_doctor_grid.py)", text)
    return text


def _config(run: dict[str, Any]) -> tuple[str, str, str, float]:
    return run["architecture"], run["optimizer"], run["schedule"], run["lr"]


def consensus(by_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One run per setting with the mean final accuracy over the initialisations that ran it,
    labelled by the same rule as a single run (``label``)."""
    accuracies: dict[tuple[str, str, str, float], list[float]] = defaultdict(list)
    first: dict[tuple[str, str, str, float], dict[str, Any]] = {}
    for runs in by_seed.values():
        for run in runs:
            if not run.get("lr_find"):
                accuracies[_config(run)].append(_accuracy(run))
                first.setdefault(_config(run), run)
    mean = [
        {**first[config], "accuracy": sum(values) / len(values), "accuracies": values}
        for config, values in accuracies.items()
    ]
    label(mean)
    return mean


def report_seeds(
    by_seed: dict[int, list[dict[str, Any]]], out: Path | None = None, title: str = ""
) -> str:
    """Every initialisation's verdicts and suggestions scored twice: against labels from its
    own outcomes, and against labels from the mean outcome over all initialisations (the
    steadier ground truth: one final accuracy of a run at a high learning rate swings by
    several points from one initialisation to the next)."""
    settings = {_config(run): run for run in consensus(by_seed)}
    rows = [
        "| initialisation | labels from | verdicts right | "
        + " | ".join(ARCHITECTURE_NAMES.values())
        + " | suggestions in band | of the suggestions made | of them ResNet-18 photographs "
        "| lr_find in band |",
        "|---|---|---|" + "---|" * len(ARCHITECTURE_NAMES) + "---|---|---|---|",
    ]
    verdicts_by_seed: dict[int, dict[tuple[str, str, str, float], str]] = {}
    for seed, records in sorted(by_seed.items()):
        finders = {
            (r["architecture"], r["optimizer"]): r["suggested_lr"]
            for r in records
            if r.get("lr_find")
        }
        for labels_from in ("its own runs", "the mean"):
            runs = [dict(r) for r in records if not r.get("lr_find")]
            if labels_from == "its own runs":
                label(runs)
            else:
                for run in runs:
                    run["label"] = settings[_config(run)]["label"]
                    run["band"] = settings[_config(run)]["band"]
            scores = score(runs)
            verdicts_by_seed[seed] = {_config(r): r["judged"].verdict for r in runs}
            finder_hits = [
                suggestion_right(finders.get((r["architecture"], r["optimizer"])), r["band"])
                for r in runs
                if r["label"] in ("too low", "too high")
            ]
            cells = [_share(scores["verdicts"][arch]) for arch in ("all", *ARCHITECTURE_NAMES)]
            rows.append(
                f"| seed {seed} | {labels_from} | {' | '.join(cells)} | "
                f"{_share(scores['suggestions']['all'])} | {_share(scores['made']['all'])} | "
                f"{_share(scores['suggestions']['resnet18_photos'])} | {_share(finder_hits)} |"
            )
    table = [
        "| architecture | optimizer | schedule | lr | mean val accuracy (per seed) | label "
        "| verdicts (per seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for config, run in sorted(settings.items()):
        each = ", ".join(f"{a:.3f}" for a in run["accuracies"])
        verdicts = [verdicts_by_seed[s].get(config, "-") for s in sorted(by_seed)]
        marked = [v if run["label"] is None or v == run["label"] else f"**{v}**" for v in verdicts]
        rows_label = run["label"] or "not scored"
        table.append(
            f"| {config[0]} | {config[1]} | {config[2]} | {config[3]:g} | "
            f"{run['accuracy']:.3f} ({each}) | {rows_label} | {', '.join(marked)} |"
        )
    text = "\n".join(rows) + "\n\n" + "\n".join(table)
    if out is not None:
        write_section(out, title or "The grid over initialisations", text)
    return text


def _share(hits: list[bool]) -> str:
    return f"{sum(hits)} / {len(hits)} ({100 * sum(hits) / max(len(hits), 1):.0f} %)"
