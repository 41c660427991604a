"""Length-grouped sampling: same examples, less padding, deterministic, resumes exactly."""

import json

import pytest
import torch

from dataset.collate import LaMPDataset, group_by_length, llm_lengths
from dataset.embedded.lamp1 import generate_embedded_lamp1
from dataset.lamp import load_split
from dataset.tasks import get_task
from tiny_models import fit_until_saved, make_trainer, tiny_tokenizer, trained_weights
from trainers import checkpoint as ckpt
from trainers.trainer import epoch_order


def padding(order, lengths, batch_size):
    """Padded slots of the batches `order` makes: sum over batches of (longest - each)."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return sum(max(lengths[i] for i in b) - lengths[i] for b in batches for i in b)


def test_grouped_order_is_a_deterministic_permutation_of_length_alike_batches():
    lengths = torch.randint(5, 200, (103,), generator=torch.Generator().manual_seed(1)).tolist()
    order = torch.randperm(103, generator=torch.Generator().manual_seed(2)).tolist()
    grouped = group_by_length(order, lengths, 4, torch.Generator().manual_seed(3), window=5)
    assert sorted(grouped) == list(range(103))
    assert grouped == group_by_length(order, lengths, 4, torch.Generator().manual_seed(3), window=5)
    assert grouped != group_by_length(order, lengths, 4, torch.Generator().manual_seed(4), window=5)
    windows = [set(order[i:i + 20]) for i in range(0, 103, 20)]
    batches = [grouped[i:i + 4] for i in range(0, 103, 4)]
    assert all(any(set(b) <= w for w in windows) for b in batches), "a batch never mixes windows"
    assert set(batches[-1]) <= windows[-1] and len(batches[-1]) == 3, "the partial batch stays last"
    assert padding(grouped, lengths, 4) < padding(order, lengths, 4) / 3


@pytest.fixture(scope="module")
def lamp_dir(tmp_path_factory):
    return generate_embedded_lamp1(tmp_path_factory.mktemp("data"), seed=3, n_train=24, n_dev=8, n_test=4)


def test_llm_lengths_count_truncated_input_and_target_tokens_and_grouping_pads_less(lamp_dir):
    task = get_task("LaMP-1")
    data = LaMPDataset(load_split(lamp_dir, "LaMP-1", "train", task.profile_fields), task, max_history=4)
    tok = tiny_tokenizer()
    lengths = llm_lengths([data, data], tok, max_input_tokens=40, max_target_tokens=2)
    first = data.examples[0]
    expected = min(len(tok(first.input, add_special_tokens=False)["input_ids"]), 40) \
        + min(len(tok(first.output, add_special_tokens=False)["input_ids"]), 2)
    assert len(lengths) == 2 * len(data) and lengths[0] == lengths[len(data)] == expected
    assert max(lengths) == 42

    lengths = llm_lengths([data], tok, max_input_tokens=256, max_target_tokens=64)
    assert len(set(lengths)) > 1
    plain = epoch_order(len(data), seed=0, phase=0, epoch=0)
    grouped = epoch_order(len(data), seed=0, phase=0, epoch=0, lengths=lengths, batch_size=4)
    assert sorted(grouped) == sorted(plain) and padding(grouped, lengths, 4) < padding(plain, lengths, 4)


def test_resume_mid_epoch_with_length_grouping_gives_identical_weights(tmp_path, lamp_dir, monkeypatch):
    settings = {"group_by_length": True, "epochs": 1}
    straight = make_trainer(tmp_path / "straight", lamp_dir, **settings)
    grouped_ids = [i for batch in straight.loader(0, 0, ["LaMP-1"]) for i in batch.ids]
    plain_ids = [i for batch in make_trainer(tmp_path / "plain", lamp_dir).loader(0, 0, ["LaMP-1"]) for i in batch.ids]
    assert grouped_ids != plain_ids, "the setting must change the order, or this test proves nothing"
    straight.fit()
    expected = trained_weights(straight)  # 20 examples / batch 4 = 5 steps

    interrupted = make_trainer(tmp_path / "resumed", lamp_dir, **settings)
    fit_until_saved(interrupted, monkeypatch, step=2)
    state = json.loads((ckpt.find_checkpoint(tmp_path / "resumed") / "state.json").read_text())
    assert state["step_in_epoch"] == 2

    resumed = make_trainer(tmp_path / "resumed", lamp_dir, **settings)
    resumed.fit(resume_from=tmp_path / "resumed")
    got = trained_weights(resumed)
    assert all(torch.equal(got[k], expected[k]) for k in expected), "resumed run diverged from the straight run"
