"""LaMP's metrics with the official semantics (LaMP `eval/evaluation.py`).

Classification: predictions and golds are stripped and mapped to their index in the
task's label list; anything outside the list maps to -1 and so is always wrong.
Accuracy, plus macro-F1 over the label list (not over whatever labels occur).
"""

from __future__ import annotations

from sklearn.metrics import f1_score


def label_index(text: str, labels: tuple[str, ...]) -> int:
    text = text.strip()
    return labels.index(text) if text in labels else -1


def classification_metrics(predictions: list[str], golds: list[str], labels: tuple[str, ...]) -> dict[str, float]:
    """-> {"accuracy", "f1"}; predictions outside `labels` count as wrong."""
    if len(predictions) != len(golds):
        raise ValueError(f"{len(predictions)} predictions for {len(golds)} golds")
    if not golds:
        raise ValueError("no examples to score")
    pred_ids = [label_index(p, labels) for p in predictions]
    gold_ids = [label_index(g, labels) for g in golds]
    accuracy = sum(p == g for p, g in zip(pred_ids, gold_ids)) / len(golds)
    f1 = f1_score(gold_ids, pred_ids, labels=list(range(len(labels))), average="macro", zero_division=0)
    return {"accuracy": float(accuracy), "f1": float(f1)}


def task_metrics(task, predictions: list[str], golds: list[str]) -> dict[str, float]:
    """Metrics of `task` (a dataset.tasks.TaskSpec)."""
    if task.labels is not None:
        return classification_metrics(predictions, golds, task.labels)
    raise NotImplementedError(f"{task.name}: generation metrics are not implemented yet")
