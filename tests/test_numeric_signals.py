"""Numeric signals: feature rows, the embedded LaMP-3 whose answer only dates reveal, and the
Q-Former with signals beating the one without on it."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dataset.collate import LaMPDataset, collate
from dataset.embedded.lamp3 import generate_embedded_lamp3, latest_rating
from dataset.history_store import HistoryStore
from dataset.lamp import load_split
from dataset.numeric import NUM_FEATURES, item_features, normalize, years_since_2000
from dataset.tasks import get_task
from model import BehavioralEncoder, BehavioralTwin, FrozenLLM, InputEncoder, QFormer
from tiny_models import tiny_bert, tiny_llama
from trainers.evaluator import rotate_histories

LAMP3 = get_task("LaMP-3")


def test_feature_rows_normalize_each_kind_and_flag_what_is_missing():
    assert normalize("rating", "5") == 1.0 and normalize("rating", 1) == -1.0
    assert years_since_2000("2010-07-01") == pytest.approx(10.5, abs=0.01)
    assert years_since_2000("2010") == years_since_2000(2010) == 10.0
    assert years_since_2000(1262304000) == pytest.approx(10.0, abs=0.01)  # unix seconds of 2010-01-01
    assert normalize("count", 1000) == pytest.approx(1.0) and normalize("count", -3) is None
    row = item_features({"score": "4", "date": "2020-01-01"}, LAMP3.numeric_fields)
    assert len(row) == NUM_FEATURES and row == pytest.approx([0.5, 1.0, 2.0, 1.0, 0.0, 0.0])
    # Missing or malformed values leave the slot empty, flag 0, never an error.
    assert item_features({"score": "n/a", "date": "someday"}, LAMP3.numeric_fields) == [0.0] * NUM_FEATURES
    assert item_features({"score": True}, LAMP3.numeric_fields) == [0.0] * NUM_FEATURES


@pytest.fixture(scope="module")
def ratings_dir(tmp_path_factory):
    return generate_embedded_lamp3(tmp_path_factory.mktemp("lamp3"), seed=0, n_train=480, n_dev=120, n_test=10)


def test_embedded_lamp3_only_the_dates_reveal_the_answer(ratings_dir, tmp_path):
    dev = load_split(ratings_dir, "LaMP-3", "dev", LAMP3.profile_fields)
    golds = [e.output for e in dev]
    assert Counter(golds) == Counter({str(r): 24 for r in range(1, 6)})  # balanced: history-blind = 0.2
    accuracy = lambda rule: sum(rule(e) == e.output for e in dev) / len(dev)  # noqa: E731
    assert accuracy(lambda e: latest_rating(e.profile)) == 1.0
    # The bag of ratings narrows the answer to two, the dates decide between them.
    assert all(len({p["score"] for p in e.profile}) == 2 and e.output in {p["score"] for p in e.profile} for e in dev)
    assert 0.35 <= accuracy(lambda e: Counter(p["score"] for p in e.profile).most_common(1)[0][0]) <= 0.65
    # The question's own review says nothing: the same texts serve every rating.
    texts_by_rating = {r: {p["text"] for e in dev for p in e.profile if p["score"] == r} for r in "15"}
    assert texts_by_rating["1"] & texts_by_rating["5"]
    again = generate_embedded_lamp3(tmp_path, seed=0, n_train=480, n_dev=120, n_test=10)
    dev_file = Path("LaMP_3") / "dev_questions.json"
    assert (again / dev_file).read_bytes() == (ratings_dir / dev_file).read_bytes()


def test_other_history_control_moves_the_numbers_and_item_answers_with_the_texts(ratings_dir):
    examples = load_split(ratings_dir, "LaMP-3", "dev", LAMP3.profile_fields)[:3]
    batch = collate([LaMPDataset(examples, LAMP3, 0, numeric=True)[i] for i in range(3)])
    rotated = rotate_histories(collate([LaMPDataset(examples, LAMP3, 0, numeric=True)[i] for i in (2, 0)]), batch)
    assert rotated.ids == [examples[2].id, examples[0].id]
    assert rotated.history == [batch.history[0], batch.history[1]]
    assert rotated.history_numbers == [batch.history_numbers[0], batch.history_numbers[1]]
    assert rotated.history_outputs == [batch.history_outputs[0], batch.history_outputs[1]]
    assert batch.history_outputs[0] == [str(p["score"]) for p in examples[0].profile]


def probe_accuracy(ratings_dir, store_dir, numeric: bool, steps: int = 160, seed: int = 0) -> float:
    """Train the Q-Former (numeric path on or off) with a linear head on the rating; dev accuracy.

    The real data path (LaMPDataset -> collate -> BehavioralTwin.summarize) on tiny models.
    The encoders are frozen random tiny BERTs, so the texts carry no rating the head could
    learn quickly, and the test is about the dates alone. 160 steps of 32 = about 11 epochs;
    the history store and the input cache encode each text once, as training does.
    """
    history_bert, tok = tiny_bert(seed=1)
    input_bert, input_tok = tiny_bert(seed=1)
    llm, llm_tok = tiny_llama()
    torch.manual_seed(seed)
    twin = BehavioralTwin(BehavioralEncoder(history_bert, tok, "mean", 64, HistoryStore(store_dir)),
                          InputEncoder(input_bert, input_tok, tune_layers=0, max_length=64, cache_mb=16),
                          QFormer(32, num_queries=2, num_layers=1, heads=4, dropout=0.0,
                                  item_features=NUM_FEATURES if numeric else 0),
                          FrozenLLM(llm, llm_tok, "decoder", "Rate."), numeric=numeric)
    head = torch.nn.Linear(32, 5)
    optimizer = torch.optim.Adam([*twin.qformer.parameters(), *head.parameters()], lr=3e-3)

    def batches(split: str) -> list:
        examples = load_split(ratings_dir, "LaMP-3", split, LAMP3.profile_fields)
        dataset = LaMPDataset(examples, LAMP3, max_history=0, numeric=numeric)
        return [collate([dataset[i] for i in range(start, min(start + 32, len(dataset)))])
                for start in range(0, len(dataset), 32)]

    def logits(batch) -> torch.Tensor:  # [B, 5]
        summary, _ = twin.summarize(batch)  # [B, Q, H]
        return head(summary.mean(1))

    def labels(batch) -> torch.Tensor:
        return torch.tensor([int(target) - 1 for target in batch.targets])

    train, dev = batches("train"), batches("dev")
    twin.train()
    for batch in itertools.islice(itertools.cycle(train), steps):
        F.cross_entropy(logits(batch), labels(batch)).backward()
        optimizer.step()
        optimizer.zero_grad()
    twin.eval()
    with torch.no_grad():
        correct = sum((logits(b).argmax(-1) == labels(b)).sum().item() for b in dev)
    return correct / sum(len(b) for b in dev)


@pytest.fixture
def one_thread():
    """Tiny models run several times faster on one thread than on two busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_numeric_signals_beat_the_model_without_them(ratings_dir, one_thread, tmp_path):
    with_signals = probe_accuracy(ratings_dir, tmp_path / "with", numeric=True)
    without = probe_accuracy(ratings_dir, tmp_path / "without", numeric=False)
    # Without the dates at most half the answers can be right (the bag of ratings gives two
    # candidates); with them the rule is exact.
    assert with_signals >= 0.85, (with_signals, without)
    assert without <= 0.6, (with_signals, without)
    assert with_signals - without >= 0.3, (with_signals, without)
