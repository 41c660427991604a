"""Shared fixtures: a small generated LaMP-1 task and tiny models saved as model folders.

pytest.ini puts the project root and tests/ on the import path, so tests import the
project's modules and the shared builders (tiny_models.py) by name.
"""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def results_file(tmp_path_factory):
    """The RESULTS.md that benchmark scripts write their sections to during the tests: never the
    repository's (bench.common.write_results_section reads the variable when given no path)."""
    from bench.common import RESULTS_ENV
    path = tmp_path_factory.mktemp("results") / "RESULTS.md"
    before = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(RESULTS_ENV)
    else:
        os.environ[RESULTS_ENV] = before


@pytest.fixture(scope="module")
def lamp_dir(tmp_path_factory):
    """LaMP-1 in the official layout: 24 train, 8 dev and 4 test questions."""
    from dataset.embedded.lamp1 import generate_embedded_lamp1
    return generate_embedded_lamp1(tmp_path_factory.mktemp("data"), seed=3, n_train=24, n_dev=8, n_test=4)


@pytest.fixture(scope="module")
def tiny_model_dirs(tmp_path_factory):
    """Folders bert/, llama/ and t5/ written by save_pretrained, as a user would pass them."""
    from tiny_models import tiny_bert, tiny_llama, tiny_t5
    root = tmp_path_factory.mktemp("models")
    for name, (model, tokenizer) in {"bert": tiny_bert(), "llama": tiny_llama(), "t5": tiny_t5()}.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    return root
