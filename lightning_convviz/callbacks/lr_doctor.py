"""LearningRateDoctor: reads the training signals and says whether the learning rate is off."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn

from lightning_convviz.callbacks.base import ConvVizCallback, check_positive_int
from lightning_convviz.functional.activity import channel_positive_counts
from lightning_convviz.functional.capture import conv_layers
from lightning_convviz.functional.defaults import ACTIVATION_SITES
from lightning_convviz.functional.filters import filter_noise_score
from lightning_convviz.functional.sites import CallSites, Site

__all__ = ["Finding", "LearningRateDoctor", "Verdict"]

#: The doctor's conclusion.
Verdict = Literal["too high", "too low", "healthy so far"]
_VERDICT_VALUE = {"too low": -1.0, "healthy so far": 0.0, "too high": 1.0}


@dataclass(frozen=True)
class Finding:
    """One piece of evidence: which way it points and what was seen."""

    key: str
    points_to: Verdict
    evidence: str


#: Update ratios kept per layer for the summary table (the latest ones).
RECENT_RATIOS = 20
#: CS231n's healthy update/weight ratio, logged beside the ratios as a reference line.
HEALTHY_UPDATE_RATIO = 1e-3


@dataclass
class _History:
    """What the doctor remembers between epochs: constant size per step, one loss per epoch."""

    update_ratios: dict[str, list[float]] = field(default_factory=dict)  # the latest 20
    grad_norm_count: int = 0  # gradient norms measured before the current epoch
    largest_grad_norm: float = -math.inf  # the largest of those
    epoch_losses: list[float] = field(default_factory=list)
    dead: dict[str, list[tuple[int, int, int]]] = field(default_factory=dict)  # last two epochs
    dead_since: dict[str, int] = field(default_factory=dict)  # first step over the threshold


class LearningRateDoctor(ConvVizCallback):
    """Diagnose a learning rate that is too high or too low from what training does, with
    the evidence in numbers.

    Signals, measured every ``every_n_steps`` training steps (default: the Trainer's
    ``log_every_n_steps``) and summarised at each epoch end:

    * **update-to-weight ratio** ``||w_after - w_before|| / ||w_before||`` of each conv and
      linear weight across one optimizer step, measured from the actual parameter change, so it
      holds for any optimizer (CS231n's rule of thumb: around 1e-3 is healthy);
    * **dead filters**: channels of each conv block's activation never positive over the epoch's
      measured steps, and their trend; each call of a module is its own site
      (``layer1.0.relu:1``, ...), found from the first forward pass as for
      :class:`~lightning_convviz.ActivationStatsMonitor` (a model without conv block activations,
      such as a vision transformer, goes without this signal, and an info message says so);
    * **filter noise score** of the first convolution (Geary's ratio; 1.0 = random);
    * **loss**: NaN or infinity (reported at the step it first appears), and divergence
      (an epoch's mean loss above ``divergence_factor`` times the best so far that also gives
      back a quarter of the progress since the first epoch);
    * **gradient norm** explosions (above ``explosion_factor`` times the largest norm of the
      earlier epochs; a plateau at the start makes healthy norms grow several-fold).

    Verdict, re-judged at every epoch end: "too high" when a high-side finding holds (once seen,
    a non-finite loss, divergence or exploding gradients hold for good; the median over layers
    of an epoch's update ratios above ``high_update_ratio``, from the second epoch on; more than
    ``dead_fraction_high`` of a layer's filters dead and not recovering); else "too low" when
    the median over layers of the epoch's update ratios is below ``low_update_ratio``, or the
    loss after 3 or more epochs is still above ``slow_loss_fraction`` of the first epoch's;
    otherwise "healthy so far". Each new finding is one rank-zero warning (never repeated); a
    markdown summary is written to TensorBoard's text tab every epoch. The doctor never changes
    training. State is kept in ``state_dict`` for resume; counts are summed over DDP ranks.

    Example:
        >>> from pytorch_lightning import Trainer
        >>> doctor = LearningRateDoctor(high_update_ratio=0.05)
        >>> trainer = Trainer(callbacks=[doctor])  # then: doctor.verdict, doctor.findings

    Logged tags:
        * ``lr_doctor/update_ratio/<layer>``, ``lr_doctor/grad_norm`` (scalars, every
          ``every_n_steps``), with ``lr_doctor/update_ratio_reference``, the healthy 1e-3, so
          that the dashboard's chart of every layer's ratio shows it as a line;
        * ``lr_doctor/dead_fraction/<layer>``, ``lr_doctor/noise_score/<layer>``,
          ``lr_doctor/epoch_loss``, ``lr_doctor/verdict`` (-1 too low, 0 healthy, 1 too high)
          (scalars, every epoch);
        * ``lr_doctor/summary`` (text, every epoch).

    Args:
        every_n_steps: Measure every this many training steps.
        high_update_ratio: Typical (median over layers of each layer's epoch median)
            update/weight ratio above which the network learns too fast.
        low_update_ratio: Typical update/weight ratio below which it learns too slowly.
        dead_fraction_high: Fraction of a layer's filters dead that counts as a finding.
        divergence_factor: Epoch mean loss above this times the best epoch's is divergence.
        explosion_factor: A gradient norm above this times the largest of earlier epochs (or not
            finite) is an explosion.
        slow_loss_fraction: After 3 epochs, a mean epoch loss still above this fraction of the
            first epoch's means learning has barely started (too low).

    Raises:
        ValueError: At construction, for a threshold outside its allowed range.
        MisconfigurationException: In ``setup``, when the Trainer has no logger or
            the model has no convolution.
    """

    section = "lr_doctor"
    dashboard: ClassVar[dict[str, list[str]]] = {
        "update ratio, every layer (flat line: 1e-3)": [
            "lr_doctor/update_ratio/",
            "lr_doctor/update_ratio_reference",
        ],
        "dead fraction (doctor), every layer": ["lr_doctor/dead_fraction/"],
        "filter noise score (doctor), every layer": ["lr_doctor/noise_score/"],
    }
    _collective_hooks = ("on_train_epoch_end",)

    def __init__(
        self,
        every_n_steps: int | None = None,
        high_update_ratio: float = 0.03,
        low_update_ratio: float = 2e-4,
        dead_fraction_high: float = 0.5,
        divergence_factor: float = 2.0,
        explosion_factor: float = 10.0,
        slow_loss_fraction: float = 0.9,
    ) -> None:
        super().__init__()
        check_positive_int("every_n_steps", every_n_steps, allow_none=True)
        for name, value, low, high in (
            ("high_update_ratio", high_update_ratio, 0.0, math.inf),
            ("low_update_ratio", low_update_ratio, 0.0, math.inf),
            ("dead_fraction_high", dead_fraction_high, 0.0, 1.0),
            ("divergence_factor", divergence_factor, 1.0, math.inf),
            ("explosion_factor", explosion_factor, 1.0, math.inf),
            ("slow_loss_fraction", slow_loss_fraction, 0.0, 1.0),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (low < value <= high)
            ):
                raise ValueError(f"{name}: expected a number in ({low}, {high}], got {value!r}")
        if not low_update_ratio < high_update_ratio:
            raise ValueError(
                f"low_update_ratio: expected less than high_update_ratio ({high_update_ratio}), "
                f"got {low_update_ratio!r}"
            )
        self.every_n_steps = every_n_steps
        self.high_update_ratio = float(high_update_ratio)
        self.low_update_ratio = float(low_update_ratio)
        self.dead_fraction_high = float(dead_fraction_high)
        self.divergence_factor = float(divergence_factor)
        self.explosion_factor = float(explosion_factor)
        self.slow_loss_fraction = float(slow_loss_fraction)
        self._weights: dict[str, torch.Tensor] = {}
        self._sites: CallSites | None = None
        self._first_conv: tuple[str, nn.Module] | None = None
        self._before: dict[str, torch.Tensor] = {}
        self._grad_norm: torch.Tensor | None = None
        self._counts: dict[Site, torch.Tensor] = {}
        self._hooks: Any = None
        self._loss_sum: torch.Tensor | None = None
        self._loss_steps = 0
        self._first_bad_step: torch.Tensor | None = None
        self._history = _History()
        self._epoch_ratios: dict[str, list[float]] = {}
        self._epoch_grad_norms = 0
        self._epoch_largest_grad_norm = -math.inf
        self._batch_step = 0
        self._active: set[str] = set()
        self._permanent: set[str] = set()
        #: Every finding so far, in order (warned once each).
        self.findings: list[Finding] = []
        #: The current verdict.
        self.verdict: Verdict = "healthy so far"

    def _setup_model(self, trainer: Trainer, pl_module: LightningModule) -> None:
        convs = conv_layers(pl_module)
        if not convs:
            self._resolve(pl_module, None, {})  # raises the common "no convolution" error
        self._first_conv = next(iter(convs.items()))
        self._weights = {
            name: module.weight
            for name, module in pl_module.named_modules()
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.weight.requires_grad
        }
        self._sites = CallSites(pl_module, None, ACTIVATION_SITES, collecting=True)
        self._every: int = self.every_n_steps or trainer.log_every_n_steps  # type: ignore[attr-defined]

    # -- per step --------------------------------------------------------------------------------

    def _measuring(self, trainer: Trainer) -> bool:
        return self._enabled and trainer.global_step % self._every == 0

    def on_train_batch_start(
        self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_step = trainer.global_step  # the step this batch belongs to, as self.log
        if not self._measuring(trainer) or self._sites is None:
            return

        sites = self._sites

        def count(site: Site, output: torch.Tensor) -> None:
            if output.ndim >= 2:
                output = output.detach().movedim(sites.channel_dim(site), 1)
                counts = channel_positive_counts(output)
                previous = self._counts.get(site)
                same = previous is not None and previous.shape == counts.shape
                self._counts[site] = previous + counts if same else counts  # type: ignore[operator]

        self._hooks = self._sites.attached(self._safe(count))
        self._hooks.__enter__()

    def on_before_optimizer_step(
        self, trainer: Trainer, pl_module: LightningModule, optimizer: Any
    ) -> None:
        if not self._measuring(trainer):
            return
        self._before = {name: w.detach().clone() for name, w in self._weights.items()}
        grads = [p.grad.detach().norm() for p in pl_module.parameters() if p.grad is not None]
        self._grad_norm = torch.stack(grads).norm() if grads else None

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._enabled:
            return
        self._release_hooks()
        if self._sites is not None:
            self._sites_found(self._sites, without="the dead-filter signal is not measured")
        self._track_loss(trainer, outputs)
        if not self._before:
            return
        names = list(self._before)
        measured = [
            (self._weights[name].detach() - before).norm() / before.norm().clamp_min(1e-12)
            for name, before in self._before.items()
        ]
        if self._grad_norm is not None:
            measured.append(self._grad_norm)
        if self._first_bad_step is not None:
            measured.append(self._first_bad_step)
        device = measured[0].device
        exact = torch.float32 if device.type == "mps" else torch.float64  # step numbers too
        values = torch.stack([value.to(device, exact) for value in measured]).tolist()  # one sync
        ratios = dict(zip(names, values, strict=False))
        self._before = {}
        step = self._batch_step
        metrics = {self._tag("update_ratio", name): ratio for name, ratio in ratios.items()}
        metrics[self._tag("update_ratio_reference")] = HEALTHY_UPDATE_RATIO
        for name, ratio in ratios.items():
            recent = self._history.update_ratios.setdefault(name, [])
            recent.append(ratio)
            del recent[:-RECENT_RATIOS]
            self._epoch_ratios.setdefault(name, []).append(ratio)
        if self._grad_norm is not None:
            norm = values[len(names)]
            history = self._history
            largest = history.largest_grad_norm if history.grad_norm_count >= 3 else math.inf
            if not math.isfinite(norm) or norm > self.explosion_factor * largest:
                self._find(
                    "grad_explosion",
                    "too high",
                    f"gradient norm {norm:.3g} at step {step}"
                    + (
                        f", over {self.explosion_factor:g}x the largest of earlier epochs "
                        f"({largest:.3g})"
                        if math.isfinite(norm)
                        else ""
                    ),
                    permanent=True,
                )
            self._epoch_grad_norms += 1
            self._epoch_largest_grad_norm = max(self._epoch_largest_grad_norm, norm)
            metrics[self._tag("grad_norm")] = norm
        first_bad = -1 if self._first_bad_step is None else int(values[-1])
        if first_bad >= 0:
            self._find(
                "nonfinite_loss",
                "too high",
                f"the loss became NaN or infinite at step {first_bad}",
                permanent=True,
            )
        self._log_scalars(trainer, metrics, step)

    def _track_loss(self, trainer: Trainer, outputs: Any) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float()
        finite = torch.isfinite(loss)
        step = torch.tensor(self._batch_step, device=loss.device)
        if self._first_bad_step is None:
            self._first_bad_step = torch.full((), -1, device=loss.device, dtype=torch.long)
        self._first_bad_step = torch.where(
            (~finite) & (self._first_bad_step < 0), step, self._first_bad_step
        )
        zero = torch.zeros((), device=loss.device)
        self._loss_sum = (zero if self._loss_sum is None else self._loss_sum) + torch.where(
            finite, loss, zero
        )
        self._loss_steps += 1

    # -- per epoch -------------------------------------------------------------------------------

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._ranks_agree(trainer):
            return
        step = trainer.global_step
        metrics: dict[str, float] = {}
        sites = self._sites
        measured = [] if sites is None else [s for s in sites.order if s in self._counts]
        for site in measured:  # call order: the same on every rank
            assert sites is not None
            name = sites.name(site)
            total = trainer.strategy.reduce(self._counts[site], reduce_op="sum")
            dead, channels = int((total == 0).sum()), int(total.numel())
            entries = self._history.dead.setdefault(name, [])
            entries.append((step, dead, channels))
            del entries[:-2]
            metrics[self._tag("dead_fraction", name)] = dead / max(channels, 1)
        self._counts = {}
        if self._first_conv is not None:
            name, module = self._first_conv
            score = float(filter_noise_score(module.weight))  # type: ignore[arg-type]
            if math.isfinite(score):
                metrics[self._tag("noise_score", name)] = score
        if self._loss_sum is not None and self._loss_steps:
            mean_loss = float(self._loss_sum) / self._loss_steps
            self._history.epoch_losses.append(mean_loss)
            metrics[self._tag("epoch_loss")] = mean_loss
        self._loss_sum, self._loss_steps = None, 0
        self._examine(trainer.current_epoch)
        metrics[self._tag("verdict")] = _VERDICT_VALUE[self.verdict]
        self._log_scalars(trainer, metrics, step)
        writer = self._writer(trainer)
        if writer is not None:
            writer.text(self._tag("summary"), self.summary(), step)

    def _examine(self, epoch: int) -> None:
        """Re-judge the evidence at an epoch end: permanent findings stay, the others hold only
        while their signal does."""
        history = self._history
        self._active = {key for key in self._active if key in self._permanent}
        for name, entries in history.dead.items():
            _, dead, channels = entries[-1]
            recovering = len(entries) > 1 and dead < entries[-2][1]
            if dead / max(channels, 1) <= self.dead_fraction_high:
                continue
            since = history.dead_since.setdefault(name, entries[-1][0])
            if not recovering:
                self._find(
                    f"dead:{name}",
                    "too high",
                    f"{name}: {dead} of {channels} filters dead since step {since}",
                )
        medians = {
            name: statistics.median(values) for name, values in self._epoch_ratios.items() if values
        }
        self._epoch_ratios = {}
        typical = statistics.median(medians.values()) if medians else math.inf
        # from the second epoch on: the first steps are large next to freshly initialised weights
        if epoch >= 1 and medians and typical > self.high_update_ratio:
            fastest = max(medians, key=medians.__getitem__)
            self._find(
                "update_high",
                "too high",
                f"median update/weight ratio over the layers {typical:.1e} in epoch {epoch}, far "
                f"above 1e-3 (threshold {self.high_update_ratio:.0e}; fastest: {fastest} at "
                f"{medians[fastest]:.1e})",
            )
        if typical < self.low_update_ratio:
            self._find(
                "update_low",
                "too low",
                f"median update/weight ratio over the layers {typical:.1e} in epoch {epoch}, "
                f"below {self.low_update_ratio:.0e} (about 1e-3 is healthy)",
            )
        losses = history.epoch_losses
        if len(losses) >= 3 and losses[-1] > self.slow_loss_fraction * losses[0]:
            self._find(
                "loss_stalled",
                "too low",
                f"after {len(losses)} epochs the loss is {losses[-1]:.3g}, still "
                f"{100 * losses[-1] / losses[0]:.0f}% of the first epoch's {losses[0]:.3g}",
            )
        best = min(losses[:-1]) if len(losses) >= 2 else math.inf
        lost_ground = (losses[-1] - best) / max(losses[0] - best, 1e-12) if losses else 0.0
        # a bump near zero loss (0.008 -> 0.019) is noise, not divergence: the loss must also
        # give back a quarter of the progress made since the first epoch
        if len(losses) >= 2 and losses[-1] > self.divergence_factor * best and lost_ground > 0.25:
            self._find(
                "diverging",
                "too high",
                f"epoch {epoch} mean loss {losses[-1]:.3g} is "
                f"{losses[-1] / min(losses[:-1]):.3g}x the best epoch's {min(losses[:-1]):.3g}",
                permanent=True,
            )
        self._fold_epoch_grad_norms()
        points = {f.points_to for f in self.findings if f.key in self._active}
        self.verdict = (
            "too high"
            if "too high" in points
            else "too low"
            if "too low" in points
            else "healthy so far"
        )

    def _fold_epoch_grad_norms(self) -> None:
        """Count this epoch's gradient norms among the earlier ones (at its end)."""
        history = self._history
        history.grad_norm_count += self._epoch_grad_norms
        history.largest_grad_norm = max(history.largest_grad_norm, self._epoch_largest_grad_norm)
        self._epoch_grad_norms, self._epoch_largest_grad_norm = 0, -math.inf

    def _find(self, key: str, points_to: Verdict, evidence: str, permanent: bool = False) -> None:
        """Mark a finding active now with its latest evidence; warn the first time it is seen."""
        self._active.add(key)
        if permanent:
            self._permanent.add(key)
        finding = Finding(key, points_to, evidence)
        for index, known in enumerate(self.findings):
            if known.key == key:  # seen before: keep the evidence current, do not warn again
                self.findings[index] = finding
                return
        self.findings.append(finding)
        rank_zero_warn(f"LearningRateDoctor: learning rate probably {points_to}: {evidence}")

    def active_findings(self) -> list[Finding]:
        """The findings that hold now (the verdict rests on them)."""
        return [finding for finding in self.findings if finding.key in self._active]

    def summary(self) -> str:
        """The verdict, its evidence and the latest signals, as markdown."""
        history = self._history
        lines = [f"**Learning rate: {self.verdict}**", ""]
        lines += [f"- {f.evidence} (points to: {f.points_to})" for f in self.active_findings()] or [
            "- no finding holds now"
        ]
        settled = [f for f in self.findings if f.key not in self._active]
        if settled:
            lines += ["", "Seen earlier, no longer holding:"]
            lines += [f"- {f.evidence}" for f in settled]
        lines += ["", "| layer | median update/weight (last 20) | dead filters |", "|---|---|---|"]
        dead = {name: entries[-1] for name, entries in history.dead.items() if entries}
        for name, values in history.update_ratios.items():
            lines.append(f"| {name} | {statistics.median(values[-20:]):.1e} | |")
        for name, (_, count, channels) in dead.items():
            lines.append(f"| {name} | | {count} / {channels} |")
        return "\n".join(lines)

    # -- cleanup and state -----------------------------------------------------------------------

    def _release_hooks(self) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None

    def state_dict(self) -> dict[str, Any]:
        history = dict(self._history.__dict__)
        # a run resumed mid-epoch counts this epoch's gradient norms among the earlier ones
        history["grad_norm_count"] += self._epoch_grad_norms
        history["largest_grad_norm"] = max(
            history["largest_grad_norm"], self._epoch_largest_grad_norm
        )
        return {
            "history": history,
            "findings": [finding.__dict__ for finding in self.findings],
            "active": sorted(self._active),
            "permanent": sorted(self._permanent),
            "verdict": self.verdict,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._history = _History(**state_dict.get("history", {}))
        self.findings = [Finding(**item) for item in state_dict.get("findings", [])]
        self._active = set(state_dict.get("active", []))
        self._permanent = set(state_dict.get("permanent", []))
        self._epoch_grad_norms, self._epoch_largest_grad_norm = 0, -math.inf
        self.verdict = state_dict.get("verdict", "healthy so far")
