"""Experiment tracking: what the trainer logs to TensorBoard, the learning curve, bad settings.

(That only the main process writes tracker files is checked by the 2-rank run in test_distributed.py.)
"""

import json

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from trainers import config as config_lib
from trainers import tracking
from tiny_models import make_trainer


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_every_training_figure_and_dev_metric_and_the_curve_is_drawn(tmp_path, lamp_dir):
    trainer = make_trainer(tmp_path / "run", lamp_dir, log_with="tensorboard", log_every=2)
    trainer.fit()  # 20 examples / batch 4 = 5 steps per epoch, 2 epochs: points at steps 2, 4, 6, 8, 10
    logged = scalars(tmp_path / "run" / "tensorboard")
    for name in ("train/loss", "train/lr", "train/grad_norm", "train/examples_per_s"):
        assert [step for step, _ in logged[name]] == [2, 4, 6, 8, 10], name
    assert all(value > 0 for _, value in logged["train/grad_norm"] + logged["train/examples_per_s"])
    lrs = [value for _, value in logged["train/lr"]]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] > lrs[-1], "linear decay after the warm-up"
    # Each dev metric after each epoch, at the step the epoch ended on, equal to the trainer's record.
    for entry, step in zip(trainer.history, (5, 10)):
        for metric in ("accuracy", "f1"):
            assert (step, pytest.approx(entry[metric])) in logged[f"dev/LaMP-1/{metric}"]

    curve = json.loads((tmp_path / "run" / "learning_curve.json").read_text())
    assert [p[0] for p in curve["train/loss"]] == [2, 4, 6, 8, 10]
    assert [v for _, v in curve["train/loss"]] == pytest.approx([v for _, v in logged["train/loss"]])
    png = (tmp_path / "run" / "learning_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_without_a_tracker_the_run_still_gets_its_learning_curve_and_no_event_files(tmp_path, lamp_dir):
    make_trainer(tmp_path / "run", lamp_dir, log_with="none", epochs=1).fit()
    assert not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "learning_curve.png").read_bytes().startswith(b"\x89PNG")


def test_a_resumed_series_replaces_the_points_it_redoes():
    class Quiet:
        is_main_process = True

        def log(self, values, step):
            pass
    tracker = tracking.RunTracker.__new__(tracking.RunTracker)
    tracker.accelerator, tracker.active, tracker.points = Quiet(), True, {"train/loss": [[2, 1.0], [4, 0.9], [6, 0.8]]}
    tracker.train_step(4, 0.5, 1e-4, None, 10.0)  # resumed from the checkpoint of step 3
    assert tracker.points["train/loss"] == [[2, 1.0], [4, 0.5]]
    assert "train/grad_norm" not in tracker.points, "no norm without clipping"


def test_bad_log_with_settings_are_named():
    with pytest.raises(config_lib.ConfigError, match="log_with: 'mlflow' is not one of 'none', 'tensorboard', 'wandb'"):
        config_lib.validate(config_lib.TrainConfig(log_with="mlflow"))
    problems = tracking.log_with_problems("wandb")
    try:
        import wandb  # noqa: F401
        assert problems == []
    except ImportError:
        assert problems and "pip install wandb" in problems[0]
