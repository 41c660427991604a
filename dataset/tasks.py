"""The one place that defines a LaMP task: labels, profile fields, metrics, budgets.

Adding a task means adding one TaskSpec to TASKS, with a function that turns one of its
profile items into the text the history encoder reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

ProfileItem = Mapping[str, Any]


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data pipeline, model and metrics need to know about one task."""

    name: str  # "LaMP-1"
    labels: tuple[str, ...] | None  # label list of a classification task, None for generation
    profile_fields: tuple[str, ...]  # fields each profile item must have
    metrics: tuple[str, ...]  # e.g. ("accuracy", "f1")
    max_new_tokens: int  # generation budget for this task's outputs
    render_profile_item: Callable[[ProfileItem], str] = field(repr=False, compare=False)

    def profile_text(self, item: ProfileItem) -> str:
        """Text of one profile item for the history encoder."""
        return self.render_profile_item(item)


def join_sentences(*parts: object) -> str:
    """Join text parts into sentences: strip each, skip empty ones, and add a period only
    between parts where the earlier one lacks final punctuation (no "title.. Abstract")."""
    pieces = [str(part).strip() for part in parts]
    pieces = [piece for piece in pieces if piece]
    joined = [piece if piece.endswith((".", "?", "!")) else piece + "." for piece in pieces[:-1]]
    return " ".join(joined + pieces[-1:])


def _lamp1_profile_text(item: ProfileItem) -> str:
    # LaMP-1 profile items are the author's papers; title and abstract carry the topic.
    return join_sentences(item["title"], item["abstract"])


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="LaMP-1",  # personalized citation identification
            labels=("[1]", "[2]"),
            profile_fields=("title", "abstract"),
            metrics=("accuracy", "f1"),
            max_new_tokens=4,
            render_profile_item=_lamp1_profile_text,
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The TaskSpec called `name`; "LaMP_1" is accepted for "LaMP-1" as in folder names."""
    spec = TASKS.get(name) or TASKS.get(name.replace("_", "-"))
    if spec is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return spec
