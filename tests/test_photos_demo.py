"""The photographs demo: every callback draws on natural images, and first-layer filters turn
oriented there (the seed's claim), measured against their random start."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import PICTURE_SECTIONS, read_events

from lightning_convviz import FilterMonitor
from lightning_convviz.data import PhotoCropsDataModule
from lightning_convviz.demo import DATASETS, SmallConvNet, main, train


def test_the_photos_demo_logs_every_callbacks_pictures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--data", "photos", "--epochs", "1", "--logdir", str(tmp_path), "--name", "run"])
    assert "Trained 1 epochs on the photos at lr=0.001" in capsys.readouterr().out
    events = read_events(tmp_path / "run/version_0")
    images = events.Tags()["images"]
    for prefix in PICTURE_SECTIONS:
        assert any(tag.startswith(prefix) for tag in images), (prefix, sorted(images))
    first = events.Images("filters/features.0")[0]
    # 32 RGB tiles of 7 x 7 taps, each tap 4 px (the smallest multiple of 7 from 24), in 6 columns
    assert (first.width, first.height) == (6 * 29 + 1, 6 * 29 + 1)
    scalars = events.Tags()["scalars"]
    assert {"filters/orientedness/features.0", "filters/chromatic_share/features.0"} <= set(scalars)
    assert events.Scalars("embedding/knn_accuracy")[-1].value > 1.5 / 14  # above chance


def test_the_photos_model_and_data_fit_together() -> None:
    demo = DATASETS["photos"]
    model = SmallConvNet(**demo.model)
    data = PhotoCropsDataModule(**demo.data, train_crops_per_photo=2, val_crops_per_photo=2)
    data.setup("fit")
    images, _ = next(iter(data.val_dataloader()))
    assert model(images).shape == (28, data.num_classes)


@pytest.mark.training_outcome
def test_first_layer_filters_turn_oriented_on_photographs(tmp_path: Path) -> None:
    # the demo's model and data, 3 of its 20 epochs
    monitor = FilterMonitor(layers="features.0", every_n_epochs=3, log_images=False)
    trainer = train(epochs=3, log_dir=tmp_path, name="photos", data="photos", callbacks=[monitor])
    scores = read_events(trainer.log_dir).Scalars("filters/orientedness/features.0")
    start, end = scores[0].value, scores[-1].value
    # random 7 x 7 filters read about 0.09: trained ones more than twice that
    assert start < 0.12 and end > 2 * start, (start, end)


def test_without_scikit_image_the_photos_demo_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "skimage" else find_spec(name, *a),
    )
    with pytest.raises(SystemExit) as exit_:
        main(["--data", "photos"])
    assert exit_.value.code == 2
    assert "pip install 'lightning_convviz[demo]'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"first_kernel": 4}, "first_kernel"),
        ({"image_size": 30}, "image_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
    ],
)
def test_bad_model_arguments_name_themselves(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=f"^{argument}:"):
        SmallConvNet(**kwargs)  # type: ignore[arg-type]
