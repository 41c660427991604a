"""Turn LaMP examples into dataset items and batches of strings (the model tokenizes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence, TypeVar

import torch
from torch.utils.data import Dataset

from dataset.lamp import LaMPExample
from dataset.numeric import item_features
from dataset.tasks import ProfileItem, TaskSpec, get_task

T = TypeVar("T")


@dataclass
class Batch:
    """What the model consumes: strings only, one list entry per example."""

    ids: list[str]
    task: list[str]  # task name per example
    history: list[list[str]]  # profile texts per example, at most max_history each
    inputs: list[str]  # the question text
    targets: list[str] | None  # gold outputs; None if any example lacks one
    # What each example searches its history with: its task's retrieval query (LaMP's own
    # convention, e.g. the two candidate titles for LaMP-1). Here so no model asks the tasks.
    query: list[str]
    # The answers each example's task allows (TaskSpec.labels), None for free text.
    choices: list[tuple[str, ...] | None]
    # Per example, per history item, its dataset.numeric feature row (numeric_signals only).
    history_numbers: list[list[list[float]]] | None = None
    # Per example, per history item, the item's own answer (TaskSpec.profile_output), for the
    # rule baselines; None when the task's items carry none.
    history_outputs: list[list[str]] | None = None
    # Per example, the answer options its question spells out (TaskSpec.candidates; LaMP-1
    # the two references), () where its task has fixed labels.
    candidates: list[tuple[str, ...]] | None = None

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class LaMPItem:
    """One example ready for batching."""

    id: str
    task: str
    history: list[str]
    input: str
    target: str | None
    numbers: list[list[float]] | None = None  # a feature row per history item (numeric_signals)
    outputs: list[str] | None = None  # each history item's own answer (TaskSpec.profile_output)


def select_history(profile_texts: Sequence[T], max_history: int) -> list[T]:
    """Keep the last `max_history` profile entries, in file order.

    LaMP's time-based profiles are chronological, so the last entries are the user's
    most recent activity, which best reflects current interests (PPlug likewise keeps
    the last 512). `max_history <= 0` keeps everything.
    """
    if max_history <= 0:
        return list(profile_texts)
    return list(profile_texts[-max_history:])


class LaMPDataset(Dataset):
    """Examples of one task as LaMPItems.

    Examples are read and profile texts rendered on access rather than up front: real LaMP
    profiles are large, and a LaMPSplit reads each example from its Arrow table when asked.
    """

    def __init__(self, examples: list[LaMPExample], task: TaskSpec, max_history: int, numeric: bool = False,
                 render: Callable[[ProfileItem], str] | None = None):
        self.examples = examples
        self.task = task
        # Profile item -> history text: the task's rendering, or a method's own (PPlug's).
        self.render = render or task.profile_text
        self.max_history = max_history
        self.numeric = numeric  # also give each history item's numeric features

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> LaMPItem:
        example = self.examples[index]
        numbers = None
        if self.numeric:
            numbers = [item_features(item, self.task.numeric_fields)
                       for item in select_history(example.profile, self.max_history)]
        outputs = None
        if self.task.profile_output is not None:
            outputs = [str(item[self.task.profile_output]).strip()
                       for item in select_history(example.profile, self.max_history)]
        return LaMPItem(id=example.id, task=self.task.name, history=self._history(example),
                        input=example.input, target=example.output, numbers=numbers, outputs=outputs)

    def encoder_texts(self, indices: Iterable[int] | None = None) -> list[str]:
        """Distinct texts the history encoder embeds for this dataset (or for its examples at
        `indices`), in first-seen order, so each is computed once: the selected history items,
        and each question's retrieval query and the answer options it spells out (for the
        relevance signals and rules)."""
        seen: dict[str, None] = {}
        for example in self.examples if indices is None else (self.examples[i] for i in indices):
            seen.update(dict.fromkeys(self._history(example)))
            seen[self.task.retrieval_query(example.input)] = None
            seen.update(dict.fromkeys(self.task.candidates(example.input)))
        return list(seen)

    def _history(self, example: LaMPExample) -> list[str]:
        # Select before rendering so long profiles cost only what is kept.
        return [self.render(item) for item in select_history(example.profile, self.max_history)]


def collate(items: Sequence[LaMPItem]) -> Batch:
    """Stack items into a Batch (use as a DataLoader collate_fn); the task of each item
    gives its retrieval query and allowed answers."""
    targets = [item.target for item in items]
    tasks = [get_task(item.task) for item in items]
    return Batch(
        ids=[item.id for item in items],
        task=[item.task for item in items],
        history=[list(item.history) for item in items],
        inputs=[item.input for item in items],
        targets=None if any(target is None for target in targets) else targets,
        query=[task.retrieval_query(item.input) for task, item in zip(tasks, items)],
        choices=[task.labels for task in tasks],
        history_numbers=None if any(item.numbers is None for item in items) else [item.numbers for item in items],
        history_outputs=None if any(item.outputs is None for item in items) else [item.outputs for item in items],
        candidates=[task.candidates(item.input) for task, item in zip(tasks, items)],
    )


def llm_lengths(datasets: Sequence[LaMPDataset], tokenizer, max_input_tokens: int, max_target_tokens: int) -> list[int]:
    """Tokens of each example's input and target as the LLM reads them (truncated alike),
    in the order of ConcatDataset(datasets). The rest of the LLM input is the same for all."""
    # Only the texts are kept: examples (with their profiles) are read one at a time.
    pairs = [(e.input, e.output or "") for d in datasets for e in d.examples]

    def count(texts: list[str], limit: int) -> list[int]:
        ids = tokenizer(texts, add_special_tokens=False, truncation=True, max_length=limit)["input_ids"]
        return [len(i) for i in ids]
    return [a + b for a, b in zip(count([i for i, _ in pairs], max_input_tokens),
                                  count([o for _, o in pairs], max_target_tokens))]


def group_by_length(order: list[int], lengths: Sequence[int], batch_size: int, generator: torch.Generator,
                    window: int = 50) -> list[int]:
    """Reorder a shuffled epoch so that each batch holds examples of similar length.

    `order` is cut into windows of `window` batches; each window is sorted by length and
    cut into batches, so a batch pads to a length its examples share (dynamic padding then
    wastes little). The full batches are shuffled, so long and short ones alternate; the one
    partial batch stays last, where the DataLoader cuts it. The result depends only on
    `order` and `generator`: a resumed run sees the same batches and skips the right ones.
    """
    span = batch_size * window
    batches = []
    for start in range(0, len(order), span):
        window_items = sorted(order[start:start + span], key=lambda i: lengths[i])  # stable: ties keep order
        batches += [window_items[i:i + batch_size] for i in range(0, len(window_items), batch_size)]
    full, partial = batches, []
    if batches and len(batches[-1]) < batch_size:  # only the last window can be short
        full, partial = batches[:-1], batches[-1:]
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return [i for batch in shuffled + partial for i in batch]
