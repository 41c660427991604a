"""LaMP's metrics with the official semantics (LaMP `eval/evaluation.py`).

Classification (LaMP-1, LaMP-2): predictions and golds are stripped and mapped to their
index in the task's label list; anything outside the list maps to -1 and so is always
wrong. Accuracy, plus macro-F1 over the label list (not over whatever labels occur).

Rating (LaMP-3): outputs are read as numbers; one that does not parse counts as the
worst rating for its example, whichever of 1 or 5 is farther from the gold. MAE, RMSE.

Generation (LaMP-4..7): ROUGE-1 and ROUGE-L F-measure per example, averaged.

Every metric name a TaskSpec may list is a key of METRIC_GROUPS; task_metrics computes
exactly the names the spec lists.

Where LaMP's official scorer (`eval/evaluation.py`) and this one differ (the only places):

- ROUGE aggregation. LaMP calls `evaluate.load("rouge")`, which reports the "mid" (median)
  of a `rouge_score` BootstrapAggregator's 1000 resampled means, drawn from numpy's global
  RNG without a seed: a random estimate that changes from run to run. We report the exact
  mean it estimates (same tokenizer, no stemmer, same per-example F-measures).
  `python -m bench.scorer_gap` replays LaMP's aggregation and measures the gap on
  LaMP-7-like predictions (RESULTS.md, "LaMP's official ROUGE against ours"): it stays
  far below the three decimals papers report.
- "nan" and "inf" LaMP-3 ratings. LaMP's `float()` parses them as numbers, and its MAE
  and RMSE (`evaluate`, i.e. scikit-learn) then refuse the whole file ("Input contains
  NaN"/"infinity"): no score at all. We count them as unparseable, like any other text,
  so the example scores the worst rating (parse_rating).
- LaMP-2's label list. `eval/evaluation.py` still lists the retired news categories for
  "LaMP_2"; scored against movie tags every gold and prediction would map to -1 (accuracy
  1.0, F1 0.0 whatever was predicted). We use the movie tags of LaMP's `data/datasets.py`,
  the list LaMP's own training code scores with (dataset.tasks.LAMP2_MOVIE_TAGS).
"""

from __future__ import annotations

import math
from typing import Callable

from rouge_score import rouge_scorer
from sklearn.metrics import f1_score

from dataset.tasks import TaskSpec

# LaMP-3's rating scale; an unparseable output is scored as one of its ends.
RATING_MIN, RATING_MAX = 1.0, 5.0


def label_index(text: str, labels: tuple[str, ...]) -> int:
    """Index of the stripped `text` in `labels`, or -1 when it is not a label."""
    text = text.strip()
    return labels.index(text) if text in labels else -1


def _check_lengths(predictions: list[str], golds: list[str]) -> None:
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} golds")
    if not golds:
        raise ValueError("no examples to score")


def classification_metrics(predictions: list[str], golds: list[str], labels: tuple[str, ...]) -> dict[str, float]:
    """-> {"accuracy", "f1"}; predictions outside `labels` count as wrong."""
    _check_lengths(predictions, golds)
    pred_ids = [label_index(p, labels) for p in predictions]
    gold_ids = [label_index(g, labels) for g in golds]
    accuracy = sum(p == g for p, g in zip(pred_ids, gold_ids)) / len(golds)
    f1 = f1_score(gold_ids, pred_ids, labels=list(range(len(labels))), average="macro", zero_division=0)
    return {"accuracy": float(accuracy), "f1": float(f1)}


def parse_rating(text: str) -> float | None:
    """The number `text` holds ("4", " 3.0 "), or None when it holds none.

    Like LaMP this is Python's float(), so any number counts, even outside 1-5. Unlike
    LaMP, "nan" and "inf" count as unparseable (see the module docstring): LaMP's scorer
    takes them as numbers and then cannot score the file at all.
    """
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def rating_value(prediction: str, gold: float) -> float:
    """The number a LaMP-3 prediction is scored as.

    An unparseable prediction becomes whichever scale end is farther from the gold: 1 for
    a gold of 4 or 5, 5 for a gold of 1 or 2, and 5 for a gold of 3, where both are 2
    away and LaMP's tie goes to 5.
    """
    value = parse_rating(prediction)
    if value is not None:
        return value
    return RATING_MIN if abs(RATING_MIN - gold) > abs(RATING_MAX - gold) else RATING_MAX


def rating_metrics(predictions: list[str], golds: list[str]) -> dict[str, float]:
    """-> {"mae", "rmse"} of LaMP-3 ratings; golds must be numbers."""
    _check_lengths(predictions, golds)
    errors = []
    for index, (prediction, gold_text) in enumerate(zip(predictions, golds)):
        gold = parse_rating(gold_text)
        if gold is None:
            raise ValueError(f"gold #{index} is {gold_text!r}, not a number; LaMP-3 golds are ratings 1-5. "
                             f"Check that the golds belong to LaMP-3.")
        errors.append(rating_value(prediction, gold) - gold)
    mae = sum(abs(error) for error in errors) / len(errors)
    rmse = math.sqrt(sum(error * error for error in errors) / len(errors))
    return {"mae": mae, "rmse": rmse}


def rouge_metrics(predictions: list[str], golds: list[str]) -> dict[str, float]:
    """-> {"rouge-1", "rouge-L"}: the mean over examples of each ROUGE F-measure.

    Scored with `rouge_score` and no stemmer, which is what LaMP's `evaluate.load("rouge")`
    runs by default (its tokenizer lowercases and keeps only [a-z0-9] runs). That wrapper
    reports the "mid" of a bootstrap resampling of the per-example scores, a random
    estimate of their mean; we report the exact mean, which it approximates (module
    docstring).
    """
    _check_lengths(predictions, golds)
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    totals = {"rouge1": 0.0, "rougeL": 0.0}
    for prediction, gold in zip(predictions, golds):
        # score(target, prediction): the gold comes first.
        scores = scorer.score(gold.strip(), prediction.strip())
        for name in totals:
            totals[name] += scores[name].fmeasure
    return {"rouge-1": totals["rouge1"] / len(golds), "rouge-L": totals["rougeL"] / len(golds)}


def _classification(task: TaskSpec, predictions: list[str], golds: list[str]) -> dict[str, float]:
    if task.labels is None:
        raise ValueError(f"{task.name}: its TaskSpec lists accuracy/f1 but has no labels; give it a label list")
    return classification_metrics(predictions, golds, task.labels)


MetricGroup = Callable[[TaskSpec, list[str], list[str]], dict[str, float]]

# Metrics computed together, keyed by the names they produce.
METRIC_GROUPS: dict[tuple[str, ...], MetricGroup] = {
    ("accuracy", "f1"): _classification,
    ("mae", "rmse"): lambda task, predictions, golds: rating_metrics(predictions, golds),
    ("rouge-1", "rouge-L"): lambda task, predictions, golds: rouge_metrics(predictions, golds),
}
METRIC_NAMES: tuple[str, ...] = tuple(name for names in METRIC_GROUPS for name in names)


def task_metrics(task: TaskSpec, predictions: list[str], golds: list[str]) -> dict[str, float]:
    """The metrics `task.metrics` names, in that order, of predictions against golds."""
    results: dict[str, float] = {}
    for name in task.metrics:
        if name in results:
            continue
        group = next((names for names in METRIC_GROUPS if name in names), None)
        if group is None:
            raise ValueError(f"{task.name}: its TaskSpec lists unknown metric {name!r}; "
                             f"known metrics: {', '.join(METRIC_NAMES)}")
        results.update(METRIC_GROUPS[group](task, predictions, golds))
    return {name: results[name] for name in task.metrics}


def example_scores(task: TaskSpec, predictions: list[str], golds: list[str]) -> list[float]:
    """Per-example values of the task's first metric, for paired significance tests:
    1/0 correctness (accuracy), absolute error (mae) or ROUGE-1 F-measure (rouge-1)."""
    _check_lengths(predictions, golds)
    primary = task.metrics[0]
    if primary == "accuracy":
        labels = task.labels or ()
        return [float(label_index(p, labels) == label_index(g, labels) != -1) for p, g in zip(predictions, golds)]
    if primary == "mae":
        return [abs(rating_value(p, parse_rating(g)) - parse_rating(g)) for p, g in zip(predictions, golds)]
    if primary == "rouge-1":
        scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=False)
        return [scorer.score(g.strip(), p.strip())["rouge1"].fmeasure for p, g in zip(predictions, golds)]
    raise ValueError(f"{task.name}: no per-example score for metric {primary!r}")
