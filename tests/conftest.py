"""Every test starts from the same global seed."""

import pytest
import pytorch_lightning as pl


@pytest.fixture(autouse=True)
def _seed() -> None:
    pl.seed_everything(0)
