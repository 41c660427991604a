"""Experiment tracking of a training run: accelerate's trackers and a learning-curve plot.

`log_with` ('tensorboard', 'wandb' or 'none') picks the tracker, which only the main process
starts and writes: TensorBoard event files go to <run>/tensorboard/, W&B runs offline into
<run>/wandb/ unless WANDB_MODE says otherwise (so a cluster node without internet works, and
`wandb sync` uploads later). Whatever the tracker, the main process keeps every logged point
in <run>/learning_curve.json and draws <run>/learning_curve.png (training loss and each dev
metric against the optimizer step) after every evaluation, so a run that stops early still
has its curve. A resumed run continues both files: points at or past the step a series
resumes from replace the ones the stopped run had logged there.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from dataset.atomic import atomic_write, atomic_write_text

PROJECT = "behavioral_twin"
CURVE_JSON, CURVE_PNG = "learning_curve.json", "learning_curve.png"


def log_with_problems(log_with: str) -> list[str]:
    """What the machine lacks for a `log_with` setting (the config checks its spelling)."""
    if log_with == "wandb" and importlib.util.find_spec("wandb") is None:
        return ["log_with: 'wandb' needs the wandb package, which is not installed: `pip install wandb`, "
                "or use --log_with=tensorboard"]
    return []


def _hparams(config: dict) -> dict:
    """The run's settings as the scalar values trackers accept (lists joined by commas)."""
    return {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in config.items()}


class RunTracker:
    """The run's tracker, called by the trainer on logged steps and evaluations.

    On processes other than the main one every method returns at once: they write nothing.
    """

    def __init__(self, log_with: str, accelerator, run_dir: Path, config: dict):
        self.accelerator = accelerator
        self.run_dir = Path(run_dir)
        self.active = accelerator.is_main_process
        self.points: dict[str, list[list[float]]] = {}  # series name -> [[step, value], ...]
        if not self.active:
            return
        curve = self.run_dir / CURVE_JSON
        if curve.exists():  # a resumed run: keep the curve of the steps before it
            self.points = json.loads(curve.read_text())
        trackers = []
        if log_with == "tensorboard":
            from accelerate.tracking import TensorBoardTracker
            trackers = [TensorBoardTracker("tensorboard", self.run_dir)]
        elif log_with == "wandb":
            from accelerate.tracking import WandBTracker
            os.environ.setdefault("WANDB_MODE", "offline")
            trackers = [WandBTracker(PROJECT, dir=str(self.run_dir), name=self.run_dir.name)]
        if trackers:
            # The run folder is known only after the Accelerator exists (every rank agrees on
            # its name through it), so the trackers join it here rather than in its constructor.
            accelerator.log_with = trackers
            accelerator.init_trackers(PROJECT, config=_hparams(config))

    def _add(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            series = [p for p in self.points.get(name, []) if p[0] < step]  # a resumed run redoes later steps
            self.points[name] = series + [[step, float(value)]]
        self.accelerator.log(values, step=step)

    def train_step(self, step: int, loss: float, lr: float, grad_norm: float | None, examples_per_s: float) -> None:
        """The training figures of one log interval ending at optimizer step `step`: mean loss
        and (when clipping computes it) mean gradient norm of the main process, learning rate,
        examples per second over all processes."""
        if not self.active:
            return
        values = {"train/loss": loss, "train/lr": lr, "train/examples_per_s": examples_per_s}
        if grad_norm is not None:
            values["train/grad_norm"] = grad_norm
        self._add(step, values)

    def evaluation(self, step: int, task: str, metrics: dict[str, float]) -> None:
        """Every dev metric of `task` after optimizer step `step`; redraws the learning curve."""
        if not self.active:
            return
        self._add(step, {f"dev/{task}/{name}": value for name, value in metrics.items()})
        self.write_curve()

    def write_curve(self) -> None:
        """<run>/learning_curve.json and .png from every point logged so far."""
        if not self.active:
            return
        atomic_write_text(self.run_dir / CURVE_JSON, json.dumps(self.points))
        plot_learning_curve(self.points, self.run_dir / CURVE_PNG, title=self.run_dir.name)


def plot_learning_curve(points: dict[str, list[list[float]]], path: Path, title: str = "") -> None:
    """Training loss (left) and every dev metric (right) against the optimizer step."""
    import matplotlib
    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    loss = points.get("train/loss", [])
    if loss:
        left.plot(*zip(*loss), marker="." if len(loss) < 50 else None)
    left.set(xlabel="optimizer step", ylabel="training loss", title="training loss")
    for name, series in sorted(points.items()):
        if name.startswith("dev/"):
            right.plot(*zip(*series), marker="o", label=name[len("dev/"):])
    right.set(xlabel="optimizer step", ylabel="dev metric", title="dev metrics")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=100))
    plt.close(fig)
