"""The model zoo sweep (``make zoo``): every callback at its defaults on every torchvision
classifier and a set of timm families, random weights, a table of what works.

Each architecture runs in its own process (``tests/zoo.py``: one epoch of two training steps and
a validation batch on random images, 10 classes, all fifteen callbacks at their defaults, with
InversionMonitor's and ClassModelMonitor's optimisation steps lowered to 2: they set what a
drawing costs, not which code runs). The table gives each callback's status, ``ok`` or a note
with the reason, and the seconds of the fit; the notes follow the table.

    python benchmarks/model_zoo.py                      # everything, table on stdout
    python benchmarks/model_zoo.py --out docs/zoo.md    # also written as markdown
    python benchmarks/model_zoo.py resnet50 timm:dla34  # some models
    python benchmarks/model_zoo.py --out docs/zoo.md --merge swin_v2_t  # rerun rows of a table
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
#: The zoo's runner (tests/zoo.py) and the models it wraps architectures in (workloads.py here).
PATHS = os.pathsep.join([str(TESTS), str(Path(__file__).resolve().parent)])

#: Input side per torchvision model family, by name prefix (the first match counts): 32 px
#: unless the architecture needs more (AlexNet's pools, transformers' patches and windows);
#: Inception-v3 at its 299 px.
SIDES = {
    "inception_v3": 299,
    "alexnet": 64,
    "maxvit": 224,
    "vit_h_14": 56,
    "vit_": 64,
    "swin": 64,
}

TIMM = [
    "timm:resnet50d",
    "timm:efficientnet_b0",
    "timm:tf_efficientnet_b0",
    "timm:mobilenetv3_large_100",
    "timm:mobilenetv4_conv_small",
    "timm:regnety_004",
    "timm:convnext_atto",
    "timm:dla34",
    "timm:densenet121",
    "timm:res2net50_26w_4s",
    "timm:resnest14d",
    "timm:cspresnet50",
    "timm:ghostnet_100",
    "timm:mixnet_s",
    "timm:dpn68",
    "timm:rexnet_100",
    "timm:nf_resnet26",
    "timm:repvgg_a0",
    "timm:xception41",
    "timm:hrnet_w18_small",
    "timm:inception_v3",
    "timm:mobilevit_xxs",
    "timm:vit_tiny_patch16_224",
]

SHORT = {
    "ActivationStatsMonitor": "stats",
    "ActivationMapMonitor": "maps",
    "FilterMonitor": "filters",
    "SaliencyMonitor": "saliency",
    "OcclusionMonitor": "occlusion",
    "MaxActivationMonitor": "top-k",
    "EmbeddingMonitor": "t-SNE",
    "InversionMonitor": "inversion",
    "AdversarialMonitor": "fgsm",
    "ClassModelMonitor": "class model",
    "AttributePerformanceMonitor": "attributes",
    "CorrespondenceMonitor": "correspondence",
    "ConfusionMonitor": "errors",
    "LearningRateDoctor": "lr doctor",
    "TrainingDoctor": "doctor",
}


def side_of(name: str) -> int:
    bare = name.removeprefix("timm:")
    if name.startswith("timm:"):
        return 299 if bare == "inception_v3" else 224 if bare.startswith("vit_") else 64
    return next((side for prefix, side in SIDES.items() if bare.startswith(prefix)), 32)


def torchvision_models() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def run_one(name: str, timeout: float) -> dict[str, object]:
    """Run one architecture in a fresh process and return its result as a dict."""
    with tempfile.TemporaryDirectory() as root:
        code = (
            "import json, sys; from pathlib import Path; from zoo import run; "
            f"r = run({name!r}, {side_of(name)}, Path({root!r})); "
            "print('ZOO' + json.dumps(r.__dict__))"
        )
        start = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-c", code],
                cwd=TESTS,
                env={**os.environ, "PYTHONPATH": PATHS},
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"model": name, "side": side_of(name), "error": f"over {timeout:.0f} s"}
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("ZOO")), None)
        if line is None:
            tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
            return {"model": name, "side": side_of(name), "error": tail[0][:300]}
        result: dict[str, object] = json.loads(line[3:])
        result["wall"] = time.perf_counter() - start
        return result


def table(results: list[dict[str, object]]) -> str:
    notes: dict[str, int] = {}

    def cell(status: str) -> str:
        if status == "ok":
            return "ok"
        number = notes.setdefault(status, len(notes) + 1)
        return f"[{number}]"

    header = ["model", "px", *SHORT.values(), "s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        statuses = result.get("statuses") or {}
        assert isinstance(statuses, dict)
        error = str(result.get("error") or "")
        if result.get("hooks_left"):
            error = (error + f"; {result['hooks_left']} hooks left").strip("; ")
        cells = [cell(statuses.get(kind, error or "not run")) for kind in SHORT]
        if error and statuses:
            cells[-1] += f" ({cell(error)})"
        seconds = result.get("seconds")
        shown = f"{seconds:.0f}" if isinstance(seconds, (int, float)) else "-"
        lines.append(
            f"| {result['model']} | {result['side']} | " + " | ".join(cells) + f" | {shown} |"
        )
    lines.append("")
    lines += [f"{number}. {text}" for text, number in notes.items()]
    return "\n".join(lines)


def parse(page: str) -> list[dict[str, object]]:
    """The results in a table written by :func:`table` (for ``--merge``)."""
    notes = dict(re.findall(r"^(\d+)\. (.*)$", page, flags=re.MULTILINE))
    results: list[dict[str, object]] = []
    for line in page.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != len(SHORT) + 3 or not cells[1].isdigit():
            continue
        statuses = {}
        for kind, cell in zip(SHORT, cells[2:-1], strict=True):
            found = re.fullmatch(r"\[(\d+)\]", cell)
            statuses[kind] = notes[found.group(1)] if found else cell
        seconds = float(cells[-1]) if cells[-1] != "-" else None
        results.append(
            {"model": cells[0], "side": int(cells[1]), "statuses": statuses, "seconds": seconds}
        )
    return results


PAGE = """# The model zoo: every callback at its defaults

Written by `make zoo` (`benchmarks/model_zoo.py`). Each architecture is built with random
weights and 10 classes (nothing is downloaded), wrapped in a plain LightningModule and fitted
for one epoch of two training steps of 8 random images and one validation batch, after a
one-batch sanity check, with all fifteen callbacks at their defaults (InversionMonitor's and
ClassModelMonitor's optimisation steps lowered to 2: they set what a drawing costs, not which
code runs). `ok`: the callback logged under its section, did not switch itself off and did not
say it does not apply; otherwise a note gives its message. `s`: seconds of the fit on the
2-core CPU machine (the sweep shared it with other work, so read them as orders of magnitude).
`px`: input side. Every run also checked that no hook is left on the model. A row can be rerun
on its own (`--merge` keeps the other rows): after a fix, the rows it changed were rerun.

"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", help="models to run (default: all)")
    parser.add_argument("--out", type=Path, help="also write the table as markdown here")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per model")
    parser.add_argument("--skip-timm", action="store_true")
    parser.add_argument(
        "--merge", action="store_true", help="replace the rows of these models in --out's table"
    )
    args = parser.parse_args()
    every = [*torchvision_models(), *([] if args.skip_timm else TIMM)]
    models = args.models or every
    kept: dict[str, dict[str, object]] = {}
    if args.merge and args.out and args.out.exists():
        kept = {str(result["model"]): result for result in parse(args.out.read_text())}
    order = {name: index for index, name in enumerate(every)}
    results: list[dict[str, object]] = []
    for name in models:
        kept[name] = result = run_one(name, args.timeout)
        results = sorted(kept.values(), key=lambda r: order.get(str(r["model"]), len(order)))
        statuses = result.get("statuses") or {}
        assert isinstance(statuses, dict)
        bad = {SHORT[k]: v for k, v in statuses.items() if v != "ok"}
        print(f"{name}: {result.get('error') or bad or 'ok'}", file=sys.stderr, flush=True)
        if args.out:
            args.out.write_text(PAGE + table(results) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
