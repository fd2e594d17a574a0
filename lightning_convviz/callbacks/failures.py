"""The failure guard: an exception inside a callback's hook becomes one warning, the callback
stays off, and training goes on; a model a callback has nothing to show of says so once."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import Callback, Trainer

__all__ = ["GUARDED_HOOKS", "UNGUARDED_HOOKS", "Guarded", "NotApplicable", "guarded"]


class NotApplicable(Exception):  # noqa: N818 (a verdict on the model, not an error)
    """Raised by a callback's hook for a model it has nothing to show of (a vision transformer
    has no conv block activations): the callback says so once and switches off."""


class Guarded(Protocol):
    """What the guard reads and calls on a callback (:class:`ConvVizCallback` has it all)."""

    _enabled: bool
    _agreeing: bool
    _collective_hooks: tuple[str, ...]
    _forward_failure: BaseException | None

    def _not_applicable(self, pl_module: Any, reason: NotApplicable) -> None: ...

    def _switch_off(
        self, trainer: Trainer, pl_module: Any, hook: str, error: BaseException
    ) -> None: ...


#: Hooks that run whatever happened before (clean-up, checkpoints): never guarded.
UNGUARDED_HOOKS = frozenset({"on_exception", "on_save_checkpoint", "on_load_checkpoint"})


#: Every other hook of Lightning's ``Callback``: a failure inside one becomes a warning instead
#: of ending the run, and the callback stays off (found from ``Callback`` itself, so that a
#: hook Lightning adds is guarded too).
GUARDED_HOOKS = tuple(
    sorted(
        name for name in vars(Callback) if name.startswith("on_") and name not in UNGUARDED_HOOKS
    )
)


def guarded(name: str, hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook`` (the callback's method for Lightning's hook ``name``) wrapped in the guard: it
    does nothing while the callback is off (``on_train_end`` still runs: it makes the last
    drawings); a configuration error still stops the run, clearly; a :class:`NotApplicable`
    switches the callback off with one message; any other exception (also one kept from a
    forward hook) becomes one warning, and the callback releases its hooks and stays off."""

    @functools.wraps(hook)
    def run(self: Guarded, trainer: Trainer, *args: Any, **kwargs: Any) -> Any:
        # a rank that failed still runs the collective hooks until the ranks have agreed
        still_voting = self._agreeing and name in self._collective_hooks
        if not self._enabled and name != "on_train_end" and not still_voting:
            return None
        pl_module = args[0] if args else None
        try:
            return hook(self, trainer, *args, **kwargs)
        except MisconfigurationException:
            raise  # a configuration error found late (no images in the batch): stop, clearly
        except NotApplicable as reason:
            self._not_applicable(pl_module, reason)
            return None
        except Exception as error:
            self._switch_off(trainer, pl_module, name, error)
            return None
        finally:
            failure, self._forward_failure = self._forward_failure, None
            if isinstance(failure, MisconfigurationException):
                raise failure  # a configuration error found in a forward hook: stop, clearly
            if isinstance(failure, NotApplicable):
                self._not_applicable(pl_module, failure)
            elif failure is not None and self._enabled:
                self._switch_off(trainer, pl_module, "a forward hook", failure)

    return run
