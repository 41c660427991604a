"""Score a predictions file against a golds file, both in LaMP's official format.

    python -m trainers.evaluate --task LaMP-2 --preds preds.json --golds dev_outputs.json

Both files are ``{"task": "LaMP_<i>", "golds": [{"id", "output"}, ...]}``. The task's
metrics (see dataset/tasks.py) are printed as one JSON object on stdout; problems go to
stderr. Like LaMP's evaluator, the two files must hold the same ids; with
--allow-missing, ids found in only one file are reported and the metrics cover the golds
that have a prediction. Exit status: 0 scored, 1 bad files or ids, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from dataset.lamp import LaMPFormatError, read_outputs
from dataset.tasks import TASKS, get_task
from trainers.metrics import task_metrics

# How many example ids a mismatch message shows: enough to look them up, short enough to read.
SHOWN_IDS = 5


class IdMismatchError(ValueError):
    """The predictions do not cover the golds (or cover ids the golds lack)."""


@dataclass(frozen=True)
class IdComparison:
    """How the ids of a predictions file and a golds file differ, each in file order."""

    missing: list[str]  # gold ids without a prediction
    extra: list[str]  # prediction ids without a gold
    scored: list[str]  # gold ids with a prediction

    @property
    def matches(self) -> bool:
        return not self.missing and not self.extra


def compare_ids(predictions: dict[str, str], golds: dict[str, str]) -> IdComparison:
    """Split the ids of both files into missing, extra and scorable ones."""
    return IdComparison(
        missing=[gold_id for gold_id in golds if gold_id not in predictions],
        extra=[pred_id for pred_id in predictions if pred_id not in golds],
        scored=[gold_id for gold_id in golds if gold_id in predictions],
    )


def mismatch_lines(comparison: IdComparison, preds_path: str | os.PathLike,
                   golds_path: str | os.PathLike, n_golds: int) -> list[str]:
    """One human-readable line per kind of mismatch, with counts and example ids."""
    lines = []
    if comparison.missing:
        lines.append(f"{len(comparison.missing)} of {n_golds} gold ids in {golds_path} have no prediction "
                     f"in {preds_path} (e.g. {_shown(comparison.missing)})")
    if comparison.extra:
        lines.append(f"{len(comparison.extra)} prediction ids in {preds_path} have no gold in {golds_path} "
                     f"(e.g. {_shown(comparison.extra)})")
    return lines


def evaluate_files(task_name: str, preds_path: str | os.PathLike, golds_path: str | os.PathLike,
                   allow_missing: bool = False,
                   warn: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict[str, float]:
    """The metrics of `task_name` for the predictions file against the golds file.

    Raises LaMPFormatError for a malformed file or one of another task, IdMismatchError
    when the ids differ and `allow_missing` is off. With it on, each mismatch is passed
    to `warn` and the golds that have a prediction are scored.
    """
    task = get_task(task_name)
    golds = read_outputs(golds_path, task.name)
    predictions = read_outputs(preds_path, task.name)
    comparison = compare_ids(predictions, golds)
    if not comparison.matches:
        lines = mismatch_lines(comparison, preds_path, golds_path, len(golds))
        if not allow_missing:
            raise IdMismatchError(
                "; ".join(lines) + ". Both files must hold the same ids; check that they come from the same "
                "task and split, or pass --allow-missing to score only the golds that have a prediction.")
        for line in lines:
            warn(f"warning: {line}")
        if not comparison.scored:
            raise IdMismatchError(f"no prediction in {preds_path} has an id of {golds_path}; nothing to score. "
                                  f"Check that both files come from the same task and split.")
        warn(f"warning: scoring {len(comparison.scored)} of {len(golds)} golds")
    ids = comparison.scored
    return task_metrics(task, [predictions[i] for i in ids], [golds[i] for i in ids])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainers.evaluate",
        description="Score LaMP predictions against golds (both official outputs files); "
                    "prints the metrics as JSON.")
    parser.add_argument("--task", required=True, help=f"task name: {', '.join(TASKS)} (LaMP_1 also accepted)")
    parser.add_argument("--preds", required=True, help='predictions file {"task", "golds": [{"id", "output"}]}')
    parser.add_argument("--golds", required=True, help="golds file in the same format, e.g. dev_outputs.json")
    parser.add_argument("--allow-missing", action="store_true",
                        help="report ids found in only one file and score the golds that have a prediction, "
                             "instead of failing")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        get_task(args.task)
    except ValueError as error:
        parser.error(str(error))  # exits with status 2 and the usage line
    try:
        metrics = evaluate_files(args.task, args.preds, args.golds, allow_missing=args.allow_missing)
    except (LaMPFormatError, IdMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ValueError as error:  # e.g. a LaMP-3 gold that is not a number
        print(f"error: {args.golds}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


def _shown(ids: list[str]) -> str:
    return ", ".join(map(repr, ids[:SHOWN_IDS])) + (", ..." if len(ids) > SHOWN_IDS else "")


if __name__ == "__main__":
    sys.exit(main())
