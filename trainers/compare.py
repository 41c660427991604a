"""The comparison table: several models, same tasks, data, LLM and settings, several seeds.

    python train.py --models=twin,pplug,none,rag,prompt_tuning,mean [--seeds=3]

Each (model, seed) is one ordinary run in saved/<run>/<model>-seed<k>/. A run folder that
already holds metrics.json is reused, so a comparison that was stopped continues where it
left off when started again with the same --run_name. The parent folder gets:

    comparison.json  {"<task>": {"<model>": {"<metric>": mean, "<metric>_std": std,
                                             "p_vs_twin": p}}}
    comparison.md    one table per task; the command that made it
    comparison.png   the first metric of each task, mean +- std over seeds

p_vs_twin is a paired test of the task's first metric against twin over the same dev
examples and seeds: exact McNemar for accuracy, a paired bootstrap for MAE and ROUGE.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from accelerate import PartialState
from scipy.stats import binomtest

from dataset.atomic import atomic_write_text
from dataset.lamp import read_outputs
from dataset.tasks import get_task
from trainers.metrics import example_scores
from trainers.builder import load_datasets
from trainers.run import MODEL_NAMES, run, write_json

BOOTSTRAP_SAMPLES = 2000


def mcnemar_p(correct_a: list[float], correct_b: list[float]) -> float:
    """Exact McNemar test: two-sided binomial test on the discordant pairs."""
    only_a = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap_p(scores_a: list[float], scores_b: list[float], seed: int = 0) -> float:
    """Two-sided paired bootstrap: how often the resampled mean difference crosses zero."""
    diff = np.asarray(scores_a) - np.asarray(scores_b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(BOOTSTRAP_SAMPLES, len(diff)))].mean(axis=1)
    return float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))


def significance(task_name: str, scores: dict[str, list[float]], reference: str = "twin") -> dict[str, float]:
    """model -> p-value against `reference`; scores: model -> per-(seed, example) values."""
    if reference not in scores:
        return {}
    test = mcnemar_p if get_task(task_name).metrics[0] == "accuracy" else paired_bootstrap_p
    return {model: test(scores[reference], values) for model, values in scores.items() if model != reference}


def summarize(per_seed: list[dict]) -> dict[str, float]:
    """[{metric: value}] over seeds -> {metric: mean, metric_std: std (0 for one seed)}."""
    out = {}
    for metric in per_seed[0]:
        values = [metrics[metric] for metrics in per_seed]
        out[metric] = statistics.fmean(values)
        out[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def markdown(table: dict, command: str, seeds: int) -> str:
    lines = [f"Dev results, mean ± std over {seeds} seed{'s' if seeds > 1 else ''}; p: paired test of the "
             f"first metric against twin (McNemar for accuracy, paired bootstrap otherwise).", "",
             f"    {command}", ""]
    for task, models in table.items():
        metrics = [k for k in next(iter(models.values())) if not k.endswith("_std") and k != "p_vs_twin"]
        lines.append(f"| {task} | " + " | ".join(metrics) + " | p vs twin |")
        lines.append("|---" * (len(metrics) + 2) + "|")
        for model, values in models.items():
            cells = [f"{values[m]:.4f} ± {values[m + '_std']:.4f}" for m in metrics]
            p = values.get("p_vs_twin")
            cells.append("" if p is None else f"{p:.3g}")
            lines.append(f"| {MODEL_NAMES[model]} ({model}) | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def bar_chart(table: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")  # no display on a cluster node
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(table), figsize=(1.2 + 1.3 * max(len(m) for m in table.values()) * len(table), 3.6),
                             squeeze=False)
    for ax, (task, models) in zip(axes[0], table.items()):
        metric = get_task(task).metrics[0]
        names = list(models)
        ax.bar(names, [models[m][metric] for m in names], yerr=[models[m][f"{metric}_std"] for m in names],
               capsize=3, color=["tab:blue" if m == "twin" else "tab:gray" for m in names])
        ax.set_title(f"{task} ({metric})")
        ax.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def compare(cfg) -> dict:
    """Run every model in cfg.models cfg.seeds times and write the comparison files."""
    parent_name = cfg.run_name or f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = Path(cfg.out_dir) / parent_name
    golds: dict[str, dict[str, str]] = {}  # task -> {id: gold} of the evaluated split
    per_seed_metrics: dict[str, dict[str, list[dict]]] = {}  # task -> model -> [metrics per seed]
    scores: dict[str, dict[str, list[float]]] = {}  # task -> model -> per (seed, example) scores
    for offset in range(cfg.seeds):
        for model in cfg.models:
            seed = cfg.seed + offset
            run_cfg = dataclasses.replace(cfg, model=model, models=[], seed=seed, controls=False,
                                          run_name=f"{parent_name}/{model}-seed{seed}")
            run_dir = parent / f"{model}-seed{seed}"
            if (run_dir / "metrics.json").exists():
                print(f"reusing {run_dir} (delete it to run it again)")
                metrics = json.loads((run_dir / "metrics.json").read_text())
            else:
                if (run_dir / "checkpoints" / "latest").exists():  # stopped mid-training: continue it
                    run_cfg = dataclasses.replace(run_cfg, resume_from=str(run_dir))
                print(f"\n=== {model}, seed {seed} ===", flush=True)
                metrics = run(run_cfg)
            for task, values in metrics.items():
                per_seed_metrics.setdefault(task, {}).setdefault(model, []).append(values)
                if task not in golds:
                    golds[task] = load_datasets(dataclasses.replace(cfg, tasks=[task]), cfg.eval_split,
                                                cfg.max_eval_examples)[task][1]
                predictions = read_outputs(run_dir / "predictions" / f"{task}_{cfg.eval_split}.json")
                ids = sorted(golds[task])
                scores.setdefault(task, {}).setdefault(model, []).extend(
                    example_scores(get_task(task), [predictions[i] for i in ids], [golds[task][i] for i in ids]))

    table = {task: {model: summarize(runs) for model, runs in models.items()}
             for task, models in per_seed_metrics.items()}
    for task, models in table.items():
        for model, p in significance(task, scores[task]).items():
            models[model]["p_vs_twin"] = p
    if not PartialState().is_main_process:
        return table
    command = "python train.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python train.py"
    write_json(parent / "comparison.json", table)
    atomic_write_text(parent / "comparison.md", markdown(table, command, cfg.seeds))
    bar_chart(table, parent / "comparison.png")
    print(f"\n{(parent / 'comparison.md').read_text()}\nrun folder: {parent}")
    return table

