"""The comparison table: several models, same tasks, data, LLM and settings, several seeds.

    python train.py --models=twin,pplug,none,rag,prompt_tuning,mean [--seeds=3]

Each (model, seed) is one ordinary run in saved/<run>/<model>-seed<k>/; a method that trains
nothing answers the same whatever the seed, so its first run stands for all. A run folder that
already holds metrics.json is reused, so a comparison that was stopped continues where it
left off when started again with the same --run_name. The parent folder gets:

    comparison.json  {"<task>": {"<model>": {"<metric>": mean, "<metric>_std": std,
                                             "p_vs_twin": p, "p_vs_twin_text": "0.0123" or "< 5.0e-04",
                                             "published": {"<metric>": figure}}}}
    comparison.md    one table per task, the published figures beside the measured ones;
                     the command that made it
    comparison.png   the first metric of each task, mean +- std over seeds

p_vs_twin is a paired test of the task's first metric against twin over the same dev
examples and seeds: exact McNemar for accuracy, a paired bootstrap for MAE and ROUGE.
When no bootstrap resample favours the other side, the p-value is only known to be below
the test's resolution: p_vs_twin is then that bound and p_vs_twin_text says "< bound".

"published" holds the figure the literature reports for the same method, task, split and
metric (PUBLISHED), only when the run follows the protocol those figures were measured
under (published_protocol_gaps); otherwise the table says why there is none.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from accelerate import PartialState
from scipy.stats import binomtest

from dataset.atomic import atomic_write, atomic_write_text
from dataset.lamp import read_outputs
from dataset.layout import TIME_FOLDER
from dataset.tasks import get_task
from trainers import config as config_lib
from trainers.metrics import example_scores
from trainers.builder import load_datasets
from trainers.methods import get_method
from trainers.run import run, write_json

BOOTSTRAP_SAMPLES = 2000

# Figures published for frozen Flan-T5-XXL on LaMP's time-based split (k=4 retrieval,
# 256-token LLM input, 4 beams, LaMP's metrics): the PPlug paper (Liu et al. 2024, v2,
# tables 1-3 and 6-8) and Salemi et al. 2024 (ROPG/RSPG). Keyed by (model, split), then
# task, then metric; a metric a paper does not report is absent. PPlug with BGE top-1
# retrieval is left out: no model here runs it.
PUBLISHED_SOURCE = "PPlug paper (Liu et al. 2024, v2) and Salemi et al. 2024"
PUBLISHED: dict[tuple[str, str], dict[str, dict[str, float]]] = {
    ("none", "dev"): {
        "LaMP-1": {"accuracy": 0.498}, "LaMP-2": {"accuracy": 0.326, "f1": 0.255},
        "LaMP-3": {"mae": 0.335, "rmse": 0.639}, "LaMP-4": {"rouge-1": 0.173, "rouge-L": 0.157},
        "LaMP-5": {"rouge-1": 0.472, "rouge-L": 0.419}, "LaMP-7": {"rouge-1": 0.454, "rouge-L": 0.401}},
    ("rag", "dev"): {  # BM25, k=4
        "LaMP-1": {"accuracy": 0.629}, "LaMP-2": {"accuracy": 0.345}, "LaMP-3": {"mae": 0.293},
        "LaMP-4": {"rouge-1": 0.192}, "LaMP-5": {"rouge-1": 0.467}, "LaMP-7": {"rouge-1": 0.451}},
    ("pplug", "dev"): {
        "LaMP-1": {"accuracy": 0.680}, "LaMP-2": {"accuracy": 0.565, "f1": 0.501},
        "LaMP-3": {"mae": 0.231, "rmse": 0.534}, "LaMP-4": {"rouge-1": 0.216, "rouge-L": 0.197},
        "LaMP-5": {"rouge-1": 0.487, "rouge-L": 0.436}, "LaMP-7": {"rouge-1": 0.534, "rouge-L": 0.484}},
    ("pplug", "test"): {
        "LaMP-1": {"accuracy": 0.700}, "LaMP-2": {"accuracy": 0.559, "f1": 0.495},
        "LaMP-3": {"mae": 0.242, "rmse": 0.557}, "LaMP-4": {"rouge-1": 0.211, "rouge-L": 0.193},
        "LaMP-5": {"rouge-1": 0.487, "rouge-L": 0.439}, "LaMP-7": {"rouge-1": 0.537, "rouge-L": 0.484}},
}
# The protocol of those figures, besides the time-based split.
PUBLISHED_LLM = "flan-t5-xxl"  # google/flan-t5-xxl, or a local folder of that name
PUBLISHED_INPUT_TOKENS, PUBLISHED_BEAMS = 256, 4
PUBLISHED_RETRIEVER, PUBLISHED_K = "bm25", 4


@dataclass(frozen=True)
class PValue:
    """A p-value as a test can state it: exact, or only bounded from above."""

    value: float  # the p-value, or its upper bound when `bound`
    bound: bool = False  # the test could not resolve it: the p-value is below `value`

    def __str__(self) -> str:
        return f"< {self.value:.1e}" if self.bound else f"{self.value:.3g}"


def mcnemar_p(correct_a: list[float], correct_b: list[float]) -> float:
    """Exact McNemar test: two-sided binomial test on the discordant pairs."""
    only_a = sum(1 for a, b in zip(correct_a, correct_b) if a and not b)
    only_b = sum(1 for a, b in zip(correct_a, correct_b) if b and not a)
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def paired_bootstrap_p(scores_a: list[float], scores_b: list[float], seed: int = 0,
                       resamples: int = BOOTSTRAP_SAMPLES) -> PValue:
    """Two-sided paired bootstrap: how often the resampled mean difference crosses zero.

    When no resample crosses, `resamples` draws cannot tell the p-value from 0; it is
    reported as below 1 / (resamples + 1), never as 0.
    """
    diff = np.asarray(scores_a) - np.asarray(scores_b)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(axis=1)
    p = float(min(1.0, 2 * min((means <= 0).mean(), (means >= 0).mean())))
    return PValue(1 / (resamples + 1), bound=True) if p == 0 else PValue(p)


def significance(task_name: str, scores: dict[str, list[float]], reference: str = "twin") -> dict[str, PValue]:
    """model -> p-value against `reference`; scores: model -> per-(seed, example) values."""
    if reference not in scores:
        return {}
    out = {}
    for model, values in scores.items():
        if model == reference:
            continue
        if get_task(task_name).metrics[0] != "accuracy":
            out[model] = paired_bootstrap_p(scores[reference], values)
            continue
        p = mcnemar_p(scores[reference], values)
        # Thousands of discordant pairs all one way underflow the exact binomial tail to 0.0.
        out[model] = PValue(p) if p > 0 else PValue(sys.float_info.min, bound=True)
    return out


def published_protocol_gaps(cfg, model: str) -> list[str]:
    """How `model`'s run differs from the protocol PUBLISHED was measured under ([] = the same).

    Compared: LaMP data in its time-based split (a data folder named time/, in either
    layout), frozen Flan-T5-XXL, 256 LLM input tokens, 4 beams, the whole evaluation split,
    the whole training split for a trained model, and for `rag` BM25 with k=4. The metrics
    are LaMP's own wherever they are computed.
    """
    gaps = []
    if cfg.data_dir == "embedded" or Path(cfg.data_dir).name != TIME_FOLDER:
        gaps.append(f"data_dir {cfg.data_dir} is not LaMP's time-based split (a folder named {TIME_FOLDER}/)")
    if Path(cfg.llm).name.lower() != PUBLISHED_LLM:
        gaps.append(f"llm {cfg.llm} is not google/{PUBLISHED_LLM}")
    if cfg.max_input_tokens != PUBLISHED_INPUT_TOKENS:
        gaps.append(f"max_input_tokens is {cfg.max_input_tokens}, not {PUBLISHED_INPUT_TOKENS}")
    if cfg.num_beams != PUBLISHED_BEAMS:
        gaps.append(f"num_beams is {cfg.num_beams}, not {PUBLISHED_BEAMS}")
    if cfg.max_eval_examples:
        gaps.append(f"max_eval_examples={cfg.max_eval_examples} scores part of the {cfg.eval_split} split, not all")
    if cfg.answer != "generate" and any(get_task(task).labels for task in cfg.tasks):  # free text always generates
        gaps.append(f"answer={cfg.answer} scores the allowed labels; LaMP's protocol generates the answer")
    if cfg.max_train_examples and get_method(model).trains:  # the others' figures do not depend on it
        gaps.append(f"max_train_examples={cfg.max_train_examples} trains {model} on part of the "
                    f"{cfg.train_split} split, not all")
    if model == "rag" and (cfg.rag_k != PUBLISHED_K or cfg.retriever != PUBLISHED_RETRIEVER):
        gaps.append(f"rag uses {cfg.retriever} with k={cfg.rag_k}, not {PUBLISHED_RETRIEVER} with k={PUBLISHED_K}")
    return gaps


def published_figures(cfg, model: str, task: str) -> dict[str, float]:
    """{metric: published figure} for `model` on `task` and cfg.eval_split; {} when the
    protocol differs (published_protocol_gaps) or nothing is published for it."""
    if published_protocol_gaps(cfg, model):
        return {}
    return dict(PUBLISHED.get((model, cfg.eval_split), {}).get(get_task(task).name, {}))


def check_same_settings(run_dir: Path, run_cfg) -> None:
    """Refuse to reuse or continue a run folder whose run had other settings: its row would
    not be what this comparison's command asks for."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = config_lib.from_json(path.read_text(encoding="utf-8"), str(path))
    diffs = [f"{field.name}: {getattr(saved, field.name)!r} there, {getattr(run_cfg, field.name)!r} now"
             for field in dataclasses.fields(run_cfg)
             if field.name not in config_lib.PLACE_FIELDS
             and getattr(saved, field.name) != getattr(run_cfg, field.name)]
    if diffs:
        raise config_lib.ConfigError(f"{run_dir} was run with other settings ({'; '.join(diffs)}); delete that "
                                     f"folder to run it again with these, or choose another --run_name")


def comparison_table(cfg, per_seed_metrics: dict[str, dict[str, list[dict]]],
                     scores: dict[str, dict[str, list[float]]]) -> dict:
    """The comparison.json table: per task and model the mean and std over seeds, the
    p-value against twin and, when the protocol matches, the published figures.

    per_seed_metrics: task -> model -> [metrics of each seed]; scores: task -> model ->
    per-(seed, example) values of the task's first metric.
    """
    table = {task: {model: summarize(runs) for model, runs in models.items()}
             for task, models in per_seed_metrics.items()}
    for task, models in table.items():
        for model, p in significance(task, scores.get(task, {})).items():
            models[model]["p_vs_twin"] = p.value
            models[model]["p_vs_twin_text"] = str(p)
        for model, values in models.items():
            published = published_figures(cfg, model, task)
            if published:
                values["published"] = published
    return table


def summarize(per_seed: list[dict]) -> dict[str, float]:
    """[{metric: value}] over seeds -> {metric: mean, metric_std: std (0 for one seed)}."""
    out = {}
    for metric in per_seed[0]:
        values = [metrics[metric] for metrics in per_seed]
        out[metric] = statistics.fmean(values)
        out[f"{metric}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def markdown(table: dict, command: str, seeds: int, split: str = "dev", protocol_gaps: Sequence[str] = ()) -> str:
    """comparison.md: one table per task, each metric followed by its published figure when
    any model of the task has one; `protocol_gaps` (why there are none) closes the header."""
    lines = [f"{split.capitalize()} results, mean ± std over {seeds} seed{'s' if seeds > 1 else ''}; p: paired "
             f"test of the first metric against twin (McNemar for accuracy, paired bootstrap otherwise).", "",
             f"    {command}", ""]
    if any("published" in values for models in table.values() for values in models.values()):
        lines += [f"(published): the figure {PUBLISHED_SOURCE} report for the same method, task, split and "
                  f"metric under this protocol; not measured here.", ""]
    if protocol_gaps:
        lines += ["No published figure where the protocol differs from theirs: " + "; ".join(protocol_gaps)
                  + ".", ""]
    for task, models in table.items():
        header, columns = [], []
        for metric in get_task(task).metrics:
            header.append(metric)
            columns.append((metric, False))
            if any(metric in values.get("published", {}) for values in models.values()):
                header.append(f"{metric} (published)")
                columns.append((metric, True))
        lines.append(f"| {task} | " + " | ".join(header) + " | p vs twin |")
        lines.append("|---" * (len(header) + 2) + "|")
        for model, values in models.items():
            cells = []
            for metric, published in columns:
                if published:
                    figure = values.get("published", {}).get(metric)
                    cells.append("" if figure is None else f"{figure:.3f}")
                else:
                    cells.append(f"{values[metric]:.4f} ± {values[metric + '_std']:.4f}")
            cells.append(values.get("p_vs_twin_text", ""))
            lines.append(f"| {get_method(model).display} ({model}) | " + " | ".join(cells) + " |")
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
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


def compare(cfg) -> dict:
    """Run every model in cfg.models cfg.seeds times and write the comparison files."""
    parent_name = cfg.run_name or f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = Path(cfg.out_dir) / parent_name
    golds: dict[str, dict[str, str]] = {}  # task -> {id: gold} of the evaluated split
    per_seed_metrics: dict[str, dict[str, list[dict]]] = {}  # task -> model -> [metrics per seed]
    scores: dict[str, dict[str, list[float]]] = {}  # task -> model -> per (seed, example) scores
    runs = []  # (model, its settings, its folder), in the order they run
    for offset in range(cfg.seeds):
        for model in cfg.models:
            # A method that trains nothing (a frozen LLM, rag, a rule) answers the same for
            # every seed: its one run stands for all of them, paired with each trained seed.
            seed = cfg.seed + (offset if get_method(model).trains else 0)
            runs.append((model, dataclasses.replace(cfg, model=model, models=[], seed=seed, controls=False,
                                                    references=False, run_name=f"{parent_name}/{model}-seed{seed}"),
                         parent / f"{model}-seed{seed}"))
    for _, run_cfg, run_dir in runs:  # before anything trains: a clash found late would waste the runs before it
        check_same_settings(run_dir, run_cfg)
    for model, run_cfg, run_dir in runs:
        if (run_dir / "metrics.json").exists():
            print(f"reusing {run_dir} (delete it to run it again)")
            metrics = json.loads((run_dir / "metrics.json").read_text())
        else:
            if (run_dir / "checkpoints" / "latest").exists():  # stopped mid-training: continue it
                run_cfg = dataclasses.replace(run_cfg, resume_from=str(run_dir))
            print(f"\n=== {model}, seed {run_cfg.seed} ===", flush=True)
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

    table = comparison_table(cfg, per_seed_metrics, scores)
    if not PartialState().is_main_process:
        return table
    command = "python train.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else "python train.py"
    write_json(parent / "comparison.json", table)
    gaps = [gap for model in cfg.models for gap in published_protocol_gaps(cfg, model)]
    atomic_write_text(parent / "comparison.md", markdown(table, command, cfg.seeds, cfg.eval_split,
                                                         list(dict.fromkeys(gaps))))
    if table:  # a split without golds (LaMP's test split) gives predictions, no table to plot
        bar_chart(table, parent / "comparison.png")
    print(f"\n{(parent / 'comparison.md').read_text()}\nrun folder: {parent}")
    return table

