"""Every test starts from the same global seed; ``console`` reads Lightning's console lines."""

import logging

import pytest
import pytorch_lightning as pl


@pytest.fixture(autouse=True)
def _seed() -> None:
    pl.seed_everything(0)


@pytest.fixture
def console(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """``caplog`` at INFO that also holds the lines written with ``rank_zero_info``.

    Lightning's package loggers stop propagating to the root logger (where ``caplog`` listens)
    when the root had no handler at their import, which depends on the pytest version and on
    which test imported Lightning first; here they propagate for the test's duration.
    """
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
    caplog.set_level(logging.INFO)
    return caplog
