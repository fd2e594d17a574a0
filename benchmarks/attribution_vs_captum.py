"""Occlusion and guided backprop: lightning_convviz vs Captum, side by side in one process.

Occlusion: 8 images 112 x 112 (standard normal noise, so no window can be skipped), window 16,
stride 8 (169 positions per image), baseline 0, target probability, on a torchvision ResNet-18
(random init, eval, CPU). Captum's ``Occlusion`` on the softmax of the model, one image per
call (its usual use; the batch dimension multiplies its memory), at ``perturbations_per_eval``
1 (its default), 16, 64 and 256; ours on all 8 images in one call, with and without the
incremental forward pass. Guided backprop: 64 probe images 112 x 112, one call each.

Every run is repeated ``--rounds`` times, the configurations interleaved, and the best time
kept. The maps are compared with ``torch.testing.assert_close``. Writes a section of
``docs/benchmarks.md``.

Usage: ``python benchmarks/attribution_vs_captum.py [--rounds 2]``
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from captum.attr import GuidedBackprop, Occlusion
from results import write_section

from lightning_convviz.functional import guided_backprop, occlusion

IMAGES, SIDE, WINDOW, STRIDE = 8, 112, 16, 8
PERTURBATIONS_PER_EVAL = (1, 16, 64, 256)


def timed(function: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parents[1] / "docs/benchmarks.md"))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    images = torch.randn(IMAGES, 3, SIDE, SIDE)
    with torch.no_grad():
        targets = model(images).argmax(dim=1)

    def captum(ppe: int) -> Callable[[], torch.Tensor]:
        attributor = Occlusion(lambda x: torch.softmax(model(x), dim=1))
        return lambda: torch.cat(
            [
                attributor.attribute(
                    images[i : i + 1],
                    target=int(targets[i]),
                    sliding_window_shapes=(3, WINDOW, WINDOW),
                    strides=(3, STRIDE, STRIDE),
                    baselines=0.0,
                    perturbations_per_eval=ppe,
                )
                for i in range(IMAGES)
            ]
        )

    runs: dict[str, Callable[[], torch.Tensor]] = {
        f"Captum Occlusion, perturbations_per_eval={ppe}": captum(ppe)
        for ppe in PERTURBATIONS_PER_EVAL
    }
    runs["ours, whole images in batches (incremental=False)"] = lambda: occlusion(
        model, images, targets, WINDOW, STRIDE, incremental=False
    )
    runs["ours, occlusion() defaults (incremental)"] = lambda: occlusion(
        model, images, targets, WINDOW, STRIDE
    )
    best: dict[str, float] = {}
    maps: dict[str, torch.Tensor] = {}
    for round_index in range(args.rounds):
        for name, run in runs.items():
            seconds, maps[name] = timed(run)
            best[name] = min(best.get(name, float("inf")), seconds)
            print(f"round {round_index + 1}: {name}: {seconds:.2f} s", flush=True)
    reference = maps[next(iter(runs))]
    for name, result in maps.items():
        torch.testing.assert_close(result, reference, msg=lambda m, n=name: f"{n}: {m}")

    ours = best["ours, occlusion() defaults (incremental)"]
    captum_best = min(best[f"Captum Occlusion, perturbations_per_eval={p}"] for p in (16, 64, 256))
    captum_default = best["Captum Occlusion, perturbations_per_eval=1"]
    lines = [
        "| run | best of rounds, 8 images (s) | per image (s) | Captum / this |",
        "|---|---|---|---|",
    ]
    for name, seconds in best.items():
        lines.append(
            f"| {name} | {seconds:.2f} | {seconds / IMAGES:.3f} | {captum_best / seconds:.2f} |"
        )
    lines += [
        "",
        f"Ours vs Captum's best setting: **{captum_best / ours:.2f}x** faster; vs its default "
        f"(one window per forward pass): **{captum_default / ours:.2f}x**. All maps equal "
        "(`torch.testing.assert_close`). The last column compares with Captum's best setting.",
    ]

    probes = torch.randn(64, 3, SIDE, SIDE)
    with torch.no_grad():
        probe_targets = model(probes).argmax(dim=1)
    guided: dict[str, float] = {}
    results: dict[str, torch.Tensor] = {}
    for _ in range(args.rounds):
        for name, run in {
            "Captum GuidedBackprop": lambda: GuidedBackprop(model).attribute(
                probes, target=probe_targets
            ),
            "ours, guided_backprop()": lambda: guided_backprop(model, probes, probe_targets),
        }.items():
            seconds, results[name] = timed(run)
            guided[name] = min(guided.get(name, float("inf")), seconds)
    torch.testing.assert_close(results["ours, guided_backprop()"], results["Captum GuidedBackprop"])
    ratio = guided["Captum GuidedBackprop"] / guided["ours, guided_backprop()"]
    lines += [
        "",
        "Guided backprop, 64 probe images 112 x 112, one batched call each:",
        "",
        "| run | best of rounds (s) |",
        "|---|---|",
        *(f"| {name} | {seconds:.2f} |" for name, seconds in guided.items()),
        "",
        f"Captum / ours: **{ratio:.2f}** (maps equal). torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {args.rounds} rounds.",
    ]
    print("\n".join(lines))
    write_section(Path(args.output), "Attribution vs Captum", "\n".join(lines))


if __name__ == "__main__":
    main()
