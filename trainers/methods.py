"""The methods a run can compare: one registry entry each.

A method is a model class (model.py, pplug.py) plus an entry here: the name it has in
results tables, how it is built from a TrainConfig (trainers/builder.py), whether it
trains, and how its data are prepared before training and evaluation (e.g. `rag`
rewrites each question with retrieved profile items). Whether it reads the history
(batch.history) is its class's `reads_history`. The pre-flight check of `--model` and
`--models` (trainers/preflight.py), the run and the comparison all read this registry,
so adding a baseline is one class plus one entry:

    METHODS["my_baseline"] = Method("my baseline (what it is)", MyBaseline, build_my_baseline, trains=True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from torch import nn

from model import BehavioralTwin, InputRule, NoPersonalization, ProfileRule, PromptTuning
from pplug import HistoryDropAugmented, PPlug
from trainers import builder

# task name -> (dataset, {id: gold}), as trainers.builder.load_datasets returns
Sets = dict


def keep_data(cfg, model, train_sets: Sets, eval_sets: Sets) -> tuple[Sets, Sets]:
    return train_sets, eval_sets


def retrieval_augmented_inputs(cfg, model, train_sets: Sets, eval_sets: Sets) -> tuple[Sets, Sets]:
    """rag: each question rewritten with its user's top `rag_k` profile items."""
    return train_sets, builder.retrieval_augmented(cfg, eval_sets, model.llm.tokenizer)


def pplug_augmented(cfg, model, train_sets: Sets, eval_sets: Sets) -> tuple[Sets, Sets]:
    """PPlug's history-drop augmentation of the training data (`pplug_augment` copies)."""
    if not cfg.pplug_augment:
        return train_sets, eval_sets
    return {name: (HistoryDropAugmented(dataset, cfg.pplug_augment, cfg.seed), golds)
            for name, (dataset, golds) in train_sets.items()}, eval_sets


def training_answers_counted(cfg, model: InputRule, train_sets: Sets, eval_sets: Sets) -> tuple[Sets, Sets]:
    """input_rule: the training split's most common answer per labelled task (LaMP-3's rule)."""
    for name, (dataset, _) in train_sets.items():
        if dataset.task.labels:
            model.learn_most_common(dataset.task.name, [e.output for e in dataset.examples if e.output is not None],
                                    dataset.task.labels)
    return train_sets, eval_sets


@dataclass(frozen=True)
class Method:
    display: str
    """How results tables name it."""
    model: type[nn.Module]
    """Its class; `model.reads_history` says whether it looks at batch.history."""
    build: Callable[..., nn.Module] = field(repr=False)
    """TrainConfig -> the model, on the CPU."""
    trains: bool
    """Whether it has weights to fit. A method that does not is only evaluated: no optimizer step."""
    prepare: Callable[..., tuple[Sets, Sets]] = field(default=keep_data, repr=False)
    """(cfg, model, train_sets, eval_sets) -> the data it trains and is evaluated on."""

    @property
    def reads_history(self) -> bool:
        return self.model.reads_history


METHODS: dict[str, Method] = {
    "twin": Method("Behavioral Twin", BehavioralTwin, builder.build_twin, trains=True),
    "pplug": Method("PPlug", PPlug, builder.build_pplug, trains=True, prepare=pplug_augmented),
    "none": Method("frozen LLM, no personalization", NoPersonalization, builder.build_frozen_llm_alone,
                   trains=False),
    "rag": Method("frozen LLM + retrieved profile items", NoPersonalization, builder.build_frozen_llm_alone,
                  trains=False, prepare=retrieval_augmented_inputs),
    "prompt_tuning": Method("prompt tuning (no history)", PromptTuning, builder.build_prompt_tuning, trains=True),
    "mean": Method("mean of history embeddings", BehavioralTwin, builder.build_mean, trains=True),
    # Untrained rules (model.ProfileRule, model.InputRule): no LLM, seconds to run.
    "profile_rule": Method("untrained rule on the history alone", ProfileRule, builder.build_profile_rule,
                           trains=False),
    "input_rule": Method("untrained rule on the question alone", InputRule, builder.build_input_rule,
                         trains=False, prepare=training_answers_counted),
}


def get_method(name: str) -> Method:
    method = METHODS.get(name)
    if method is None:
        raise ValueError(f"model: {name!r} is not one of {', '.join(METHODS)}")
    return method


def build_model(cfg) -> nn.Module:
    """The model of `cfg.model`, built as its registry entry says."""
    return get_method(cfg.model).build(cfg)
