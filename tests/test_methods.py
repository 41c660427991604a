"""The method registry drives validation and the run; the batch carries each example's query and choices."""

import dataclasses

import pytest

from dataset.collate import LaMPItem, collate
from dataset.tasks import get_task
from trainers import config as config_lib
from trainers.methods import METHODS, Method, build_model, get_method
from trainers.preflight import method_problems, preflight


def test_settings_accept_exactly_the_registered_methods(monkeypatch):
    problems = method_problems(config_lib.TrainConfig(model="nope", models=["twin", "other"]))
    assert problems == ["model: 'nope' is not one of " + ", ".join(METHODS),
                        "models: ['other'] are not among " + ", ".join(METHODS)]
    with pytest.raises(config_lib.ConfigError, match="model: 'nope' is not one of twin, pplug"):
        preflight(config_lib.TrainConfig(model="nope"))
    # One entry is all a new method needs for the settings to know it.
    monkeypatch.setitem(METHODS, "other", Method("another method", object, lambda cfg: None, trains=False))
    assert method_problems(config_lib.TrainConfig(model="other", models=["twin", "other"])) == []
    with pytest.raises(ValueError, match="model: 'missing' is not one of twin, pplug"):
        get_method("missing")


def test_each_entry_builds_its_class_and_trains_as_it_says(tiny_model_dirs, tmp_path):
    cfg = config_lib.TrainConfig(encoder=str(tiny_model_dirs / "bert"), llm=str(tiny_model_dirs / "llama"),
                                 cache_dir=str(tmp_path), qformer_heads=4)
    for name, method in METHODS.items():
        model = build_model(dataclasses.replace(cfg, model=name))
        assert type(model) is method.model, name
        assert bool(model.trainable_parameters()) == method.trains, name
        assert model.reads_history == method.reads_history, name


def test_collate_puts_each_examples_retrieval_query_and_allowed_answers_on_the_batch():
    lamp1 = 'For an author who has written the paper with the title "T", which reference is related? ' \
            'Just answer with [1] or [2] without explanation. [1]: "Graph cuts" [2]: "Sparse codes"'
    lamp7 = "Paraphrase the following tweet without any explanation before or after it: so tired today"
    batch = collate([LaMPItem("1", "LaMP-1", ["h"], lamp1, "[1]"), LaMPItem("2", "LaMP-7", [], lamp7, "x")])
    assert batch.query == ["Graph cuts Sparse codes", "so tired today"]
    assert batch.choices == [("[1]", "[2]"), None]
    assert batch.choices[0] is get_task("LaMP-1").labels
