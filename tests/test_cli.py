"""LightningCLI builds every callback from the example YAML and the run logs their tags."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from helpers import read_events

import lightning_convviz as convviz

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_every_callback_is_configured_from_yaml(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("cli_example", EXAMPLES / "cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cli = module.main(
        [
            "fit",
            "--config",
            str(EXAMPLES / "cli_config.yaml"),
            "--trainer.max_epochs=2",
            "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    by_type = {type(callback): callback for callback in cli.trainer.callbacks}
    expected = {
        name: getattr(convviz, name)
        for name in convviz.__all__
        if name.endswith(("Monitor", "Doctor"))
    }
    assert set(expected.values()) <= set(by_type)  # all 15 callbacks, from YAML
    assert by_type[convviz.OcclusionMonitor].stride == [4, 4]
    assert by_type[convviz.SaliencyMonitor].methods == ("saliency", "guided_backprop", "grad_cam")
    assert by_type[convviz.LearningRateDoctor].rules.alpha_high == 2.0
    assert by_type[convviz.TrainingDoctor].fault_rules.imbalance_ratio == 4.0
    assert by_type[convviz.ActivationMapMonitor].layers == ["features.1", "features.4"]
    events = read_events(Path(cli.trainer.logger.log_dir))
    images = set(events.Tags()["images"])
    assert {
        "occlusion/probability_drop",
        "attribution/grad_cam",
        "max_activation/features.6",
        "correspondence/matches/features.7",
        "errors/top_losses",
    } <= images
    assert "lr_doctor/verdict" in events.Tags()["scalars"]
