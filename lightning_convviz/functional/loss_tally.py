"""Each training step's loss, added up on the device without a host sync per step."""

from __future__ import annotations

import torch

__all__ = ["LossTally"]

#: Losses kept as separate tensors before they are folded into the running sums.
FOLD_EVERY = 256


class LossTally:
    """The mean of the finite losses of an epoch and the step of its first non-finite one.

    Adding a loss only appends the (detached) tensor; every :data:`FOLD_EVERY` losses a few
    kernels fold them into device-side sums, so a step costs no kernel launch of its own and
    nothing waits for the device until :meth:`totals` is read (at an epoch end, where the
    caller copies to the host anyway).

    Example:
        >>> tally = LossTally()
        >>> for step, loss in enumerate([2.0, 1.0, float("nan"), 3.0]):
        ...     tally.add(torch.tensor(loss), step)
        >>> total, count, first_bad_step = tally.totals(torch.device("cpu")).tolist()
        >>> total / count, first_bad_step
        (2.0, 2.0)
    """

    def __init__(self) -> None:
        self._pending: list[torch.Tensor] = []
        self._steps: list[int] = []
        self._sum: torch.Tensor | None = None
        self._finite: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None  # index into _steps; 2**62: none yet

    def __len__(self) -> int:
        return len(self._steps)

    def add(self, loss: torch.Tensor, step: int) -> None:
        """Count one step's scalar loss (any dtype, any device)."""
        self._pending.append(loss.detach().reshape(()))
        self._steps.append(step)
        if len(self._pending) >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        if not self._pending:
            return
        losses = torch.stack([loss.float() for loss in self._pending])
        offset = len(self._steps) - len(losses)
        self._pending = []
        finite = torch.isfinite(losses)
        total = torch.where(finite, losses, torch.zeros_like(losses)).sum()
        count = finite.sum()
        self._sum = total if self._sum is None else self._sum + total
        self._finite = count if self._finite is None else self._finite + count
        # the first non-finite loss of this chunk, as an index over the whole tally
        bad = torch.where(
            finite.all(),
            torch.full((), 2**62, device=losses.device, dtype=torch.long),
            (~finite).to(torch.uint8).argmax() + offset,
        )
        self._first_bad = bad if self._first_bad is None else torch.minimum(self._first_bad, bad)

    def totals(self, device: torch.device) -> torch.Tensor:
        """``[sum of finite losses, their count, step of the first non-finite loss or -1]`` as
        one float64 tensor on ``device`` (ready for one collective and one host copy)."""
        self._fold()
        zero = torch.zeros((), dtype=torch.float64, device=device)
        if self._sum is None or self._finite is None or self._first_bad is None:
            return torch.stack([zero, zero, zero - 1])
        steps = torch.tensor([*self._steps, -1], dtype=torch.float64, device=device)
        first_bad = self._first_bad.to(device).clamp_max(len(self._steps))
        return torch.stack(
            [
                self._sum.to(device, torch.float64),
                self._finite.to(device, torch.float64),
                steps[first_bad],
            ]
        )
