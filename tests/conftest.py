"""Shared fixtures: a small generated LaMP-1 task and tiny models saved as model folders.

pytest.ini puts the project root and tests/ on the import path, so tests import the
project's modules and the shared builders (tiny_models.py) by name.
"""

import pytest


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
