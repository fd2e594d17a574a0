"""LightningCLI for the digits demo: every callback can be configured from YAML.

Usage: ``python examples/cli.py fit --config examples/cli_config.yaml``
"""

from __future__ import annotations

from pytorch_lightning.cli import LightningCLI

from lightning_convviz.data import DigitsDataModule
from lightning_convviz.demo import DigitsConvNet


def main(args: list[str] | None = None) -> LightningCLI:
    return LightningCLI(
        DigitsConvNet, DigitsDataModule, args=args, save_config_kwargs={"overwrite": True}
    )


if __name__ == "__main__":
    main()
