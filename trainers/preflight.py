"""The run's pre-flight step: the checks that need files, run before anything is written or loaded.

`trainers.config` checks what settings say on their own (a value, a range, two settings
that contradict each other). What only the disk can answer is checked here, in one pass
that reports every problem at once: the data folder, the checkpoint to resume or evaluate,
the run folder a new run would write into, and the encoder's width (read from its
config.json, so a bad `qformer_heads` fails before any model loads).
The method names are checked here too: the registry (trainers/methods.py) imports the
models, which import trainers.config, so the settings cannot read it themselves.
"""

from __future__ import annotations

from pathlib import Path

from trainers import checkpoint as ckpt
from trainers import model_registry
from trainers.config import ConfigError, TrainConfig, problem_report
from trainers.methods import METHODS

# Models whose Q-Former attends over the encoder's width (the others build none).
QFORMER_MODELS = ("twin",)


def preflight(cfg: TrainConfig) -> None:
    """Raise one ConfigError listing every problem of `cfg` that the files reveal."""
    problems = (method_problems(cfg) + data_problems(cfg) + resume_problems(cfg) + run_folder_problems(cfg)
                + width_problems(cfg))
    if problems:
        raise ConfigError(problem_report(problems))


def method_problems(cfg: TrainConfig) -> list[str]:
    """`model` and `models` must name registered methods."""
    problems = []
    if cfg.model not in METHODS:
        problems.append(f"model: {cfg.model!r} is not one of {', '.join(METHODS)}")
    unknown = [m for m in cfg.models if m not in METHODS]
    if unknown:
        problems.append(f"models: {unknown} are not among {', '.join(METHODS)}")
    return problems


def data_problems(cfg: TrainConfig) -> list[str]:
    if cfg.data_dir == "embedded" or Path(cfg.data_dir).is_dir():
        return []
    return [f"data_dir: {cfg.data_dir} is not a folder; download LaMP there or use 'embedded'"]


def resume_problems(cfg: TrainConfig) -> list[str]:
    if not cfg.resume_from:
        return []
    if not Path(cfg.resume_from).exists():
        return [f"resume_from: {cfg.resume_from} does not exist"]
    return [f"resume_from: {problem}" for problem in ckpt.checkpoint_problems(cfg.resume_from, cfg)]


def run_folder_problems(cfg: TrainConfig) -> list[str]:
    """A new run must not write into a folder that holds another run's results or checkpoints."""
    if not cfg.run_name or (cfg.resume_from and cfg.mode != "eval_only"):
        return []  # a timestamped name is new; a resumed run continues its own folder
    folder = Path(cfg.out_dir) / cfg.run_name
    results = ["checkpoints", "metrics.json", "metrics_history.json"]
    found = [name for name in results if (folder / name).exists()]
    if not found:
        return []
    return [f"run_name: {folder} already holds a run ({', '.join(found)}); continue it with "
            f"--resume_from={folder}, or choose another run_name so nothing saved is overwritten"]


def width_problems(cfg: TrainConfig) -> list[str]:
    """qformer_heads must divide the encoder width (attention splits the width among the heads)."""
    if not {cfg.model, *cfg.models} & set(QFORMER_MODELS):
        return []
    try:
        width = model_registry.model_width(cfg.encoder, cfg.resolved_cache_dir())
    except model_registry.ModelNotFoundError:
        return []  # loading the encoder reports the name with what to pass instead
    if width % cfg.qformer_heads:
        divisors = [h for h in range(1, min(width, 64) + 1) if width % h == 0]
        return [f"qformer_heads: {cfg.qformer_heads} does not divide the width {width} of encoder "
                f"{cfg.encoder!r}; use one of {', '.join(map(str, divisors))}"]
    return []
