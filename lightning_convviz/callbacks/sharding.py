"""Whether the Trainer's strategy splits the model's parameters across ranks.

Under FSDP with more than one rank (``FULL_SHARD``, ``SHARD_GRAD_OP``, ``HYBRID_SHARD``), DeepSpeed
ZeRO stage 3 or Lightning's ``ModelParallelStrategy``, each rank holds a part of every weight
outside the forward and backward passes that the strategy runs. Hooks on those passes see whole
activations (the strategy gathers the weights for them), but a callback that reads a weight, or
runs the model on images of its own on global rank zero, would see a part of it. Such a
callback says so at ``setup`` and stays off (see ``ConvVizCallback.whole_model_needed``).

On one device FSDP does not shard (it falls back to ``NO_SHARD``): every callback works there,
with the original parameters or FSDP's flat ones.
"""

from __future__ import annotations

from typing import Any

__all__ = ["sharded_parameters"]


def sharded_parameters(trainer: Any) -> str | None:
    """How the strategy splits the parameters across ranks, in words; ``None`` when it does not.

    Example:
        >>> from types import SimpleNamespace
        >>> from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
        >>> sharded_parameters(SimpleNamespace(strategy=FSDPStrategy(), world_size=4))
        'FSDP (FULL_SHARD) over 4 ranks'
        >>> sharded_parameters(SimpleNamespace(strategy=FSDPStrategy(), world_size=1)) is None
        True
        >>> sharded_parameters(SimpleNamespace(strategy=DDPStrategy(), world_size=4)) is None
        True
    """
    world_size = int(getattr(trainer, "world_size", 1) or 1)
    if world_size <= 1:
        return None
    strategy = trainer.strategy
    kind = type(strategy).__name__
    if "FSDP" in kind:
        sharding = getattr(strategy, "sharding_strategy", None)
        name = getattr(sharding, "name", None) or str(sharding or "FULL_SHARD")
        return None if name == "NO_SHARD" else f"FSDP ({name}) over {world_size} ranks"
    if "DeepSpeed" in kind:
        config = getattr(strategy, "config", None) or {}
        stage = config.get("zero_optimization", {}).get("stage", 0)
        return f"DeepSpeed ZeRO stage 3 over {world_size} ranks" if stage == 3 else None
    if "ModelParallel" in kind:
        return f"{kind} over {world_size} ranks"
    return None
