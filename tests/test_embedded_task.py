"""The embedded LaMP-1 task: format, determinism, and that the answer needs the history.

Simple rules stand in for models: rules blind to the history must sit at chance, rules
that read it must score high. If a blind rule scores well, the task leaks the answer.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from collections import Counter
from pathlib import Path

import pytest

from dataset.embedded.lamp1 import generate_embedded_lamp1
from dataset.embedded.vocab import (FIELDS, NEUTRAL_ACTIVITIES, NEUTRAL_ADJECTIVES, NEUTRAL_COMMUNITIES,
                                    NEUTRAL_PERIODS, NEUTRAL_TEMPLATES, NEUTRAL_TOPICS, content_words)
from dataset.embedded.install import EXPECTED_FILES, MARKER
from dataset.lamp import LaMPExample, load_split, read_lamp_split
from dataset.tasks import get_task

SPEC = get_task("LaMP-1")
FILES = EXPECTED_FILES
QUESTION = re.compile(r'^For an author who has written the paper with the title "(.+)", which reference is related\? '
                      r'Just answer with \[1\] or \[2\] without explanation\. \[1\]: "(.+)" \[2\]: "(.+)"$')


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("embedded")
    start = time.perf_counter()
    assert generate_embedded_lamp1(out, seed=0) == out
    return out, time.perf_counter() - start


@pytest.fixture(scope="module")
def splits(generated) -> dict[str, list[LaMPExample]]:
    out, _ = generated
    return {split: load_split(out, "LaMP-1", split, SPEC.profile_fields) for split in ("train", "dev", "test")}


def parse(example: LaMPExample) -> tuple[str, str, str]:
    """-> (query title, candidate [1], candidate [2])."""
    match = QUESTION.match(example.input)
    assert match, example.input
    return match.groups()


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def profile_words(example: LaMPExample) -> set[str]:
    return set().union(*(words(SPEC.profile_text(item)) for item in example.profile))


FIELD_OF_WORD = {word: name for name, vocab in FIELDS.items() for word in vocab.words()}


def field_of(text: str) -> str | None:
    """The field whose distinctive vocabulary `text` uses most."""
    votes = Counter(FIELD_OF_WORD[word] for word in content_words(text) if word in FIELD_OF_WORD)
    return votes.most_common(1)[0][0] if votes else None


def accuracy(examples: list[LaMPExample], rule) -> float:
    return sum(rule(example) == example.output for example in examples) / len(examples)


# --- format ------------------------------------------------------------------------------------------------


def test_files_follow_official_layout(generated, splits):
    out, _ = generated
    folder = out / "LaMP_1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES + (MARKER,))  # test golds stay hidden
    assert json.loads((folder / "dev_outputs.json").read_text())["task"] == "LaMP_1"
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [800, 200, 200]
    assert all(e.output is None for e in splits["test"])
    for example in itertools.chain(*splits.values()):
        parse(example)
        assert all(set(item) == {"id", "title", "abstract"} for item in example.profile)
        assert all(isinstance(item["id"], str) for item in example.profile)
        assert example.output in (None, "[1]", "[2]")


def test_generation_is_fast(generated):
    _, seconds = generated
    assert seconds < 2.0


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    out, _ = generated
    generate_embedded_lamp1(tmp_path / "same", seed=0)
    generate_embedded_lamp1(tmp_path / "other", seed=1)
    for name in FILES:
        reference = (out / "LaMP_1" / name).read_bytes()
        assert (tmp_path / "same" / "LaMP_1" / name).read_bytes() == reference
        assert (tmp_path / "other" / "LaMP_1" / name).read_bytes() != reference


def test_small_sizes(tmp_path):
    generate_embedded_lamp1(tmp_path, seed=3, n_train=5, n_dev=3, n_test=1)
    questions = tmp_path / "LaMP_1" / "dev_questions.json"
    examples = read_lamp_split(questions, tmp_path / "LaMP_1" / "dev_outputs.json", SPEC.profile_fields)
    assert len(examples) == 3


def test_users_disjoint_across_splits(splits):
    ids = {split: {e.id for e in examples} for split, examples in splits.items()}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())) == 1200
    profiles = Counter(tuple(item["id"] for item in e.profile) for e in itertools.chain(*splits.values()))
    assert profiles.most_common(1)[0][1] == 1  # no user appears twice under another id


def test_inputs_are_short(splits):
    for example in splits["dev"]:
        query, first, second = parse(example)
        assert all(4 <= len(title.split()) <= 14 for title in (query, first, second))
        assert len(example.input.split()) <= 64


# --- the design: data of distinct fields, neutral queries, history decides -------------------------------------


def test_fields_have_distinct_vocabularies():
    assert len(FIELDS) >= 12
    for (a, va), (b, vb) in itertools.combinations(FIELDS.items(), 2):
        assert not va.words() & vb.words(), (a, b, va.words() & vb.words())
    neutral = set().union(*(content_words(re.sub(r"\{\w+\}", " ", text)) for text in
                            NEUTRAL_TEMPLATES + NEUTRAL_PERIODS + NEUTRAL_ACTIVITIES + NEUTRAL_TOPICS +
                            NEUTRAL_ADJECTIVES + NEUTRAL_COMMUNITIES))
    for name, vocab in FIELDS.items():
        assert not vocab.words() & neutral, (name, vocab.words() & neutral)


def test_query_titles_are_topic_neutral(splits):
    assert all(field_of(parse(e)[0]) is None for e in splits["dev"])


def test_paper_titles_repeat_across_users(splits):
    titles = Counter(item["title"] for e in splits["train"] for item in e.profile)
    assert len(titles) <= 12 * 400
    assert sum(titles.values()) > 5 * len(titles)


def test_profiles_vary_in_length_and_favour_one_field(splits):
    lengths = [len(e.profile) for e in splits["dev"]]
    assert min(lengths) <= 12 and max(lengths) >= 200
    assert sorted(lengths)[len(lengths) // 2] < 70  # skewed: many short profiles
    assert 65 <= sum(lengths) / len(lengths) <= 105  # LaMP-1's profiles average 84 items
    main_share = []
    for example in splits["dev"]:
        fields = Counter(field_of(SPEC.profile_text(item)) for item in example.profile)
        assert None not in fields
        main_share.append(fields.most_common(1)[0][1] / len(example.profile))
    assert min(main_share) >= 0.6
    assert 0.8 <= sum(main_share) / len(main_share) <= 0.9


def test_labels_balanced(splits):
    for split in ("train", "dev"):
        share = sum(e.output == "[1]" for e in splits[split]) / len(splits[split])
        assert 0.4 <= share <= 0.6


def test_every_field_equally_often_correct_and_incorrect(splits):
    correct, incorrect = Counter(), Counter()
    for example in splits["train"]:
        _, first, second = parse(example)
        right, wrong = (first, second) if example.output == "[1]" else (second, first)
        correct[field_of(right)] += 1
        incorrect[field_of(wrong)] += 1
    assert set(correct) == set(incorrect) == set(FIELDS)
    for name in FIELDS:
        assert abs(correct[name] - incorrect[name]) <= 16, name


def test_no_candidate_appears_in_its_users_profile(splits):
    for example in itertools.chain(*splits.values()):
        titles = {item["title"] for item in example.profile}
        _, first, second = parse(example)
        assert first not in titles and second not in titles
        assert first != second


def test_history_blind_rules_are_at_chance(splits):
    dev = splits["dev"]
    assert 0.4 <= accuracy(dev, lambda e: "[1]") <= 0.6

    def query_overlap(example):
        query, first, second = parse(example)
        return "[1]" if len(words(first) & words(query)) >= len(words(second) & words(query)) else "[2]"
    assert 0.4 <= accuracy(dev, query_overlap) <= 0.6

    # Memorizing which candidate titles were right in training must not transfer.
    right_count = Counter()
    for example in splits["train"]:
        _, first, second = parse(example)
        right, wrong = (first, second) if example.output == "[1]" else (second, first)
        right_count[right] += 1
        right_count[wrong] -= 1

    def memorized(example):
        _, first, second = parse(example)
        return "[1]" if right_count[first] >= right_count[second] else "[2]"
    assert 0.4 <= accuracy(dev, memorized) <= 0.6


def test_history_reading_rules_score_high(splits):
    """Word overlap with the profile, weighted by rarity (idf over training profiles) so
    that template words every profile shares do not count."""
    train = splits["train"]
    document_frequency = Counter(word for e in train for word in profile_words(e))

    def weight(overlap: set[str]) -> float:
        return sum(math.log(len(train) / (1 + document_frequency[word])) for word in overlap)

    def profile_overlap(example):
        _, first, second = parse(example)
        seen = profile_words(example)
        return "[1]" if weight(words(first) & seen) >= weight(words(second) & seen) else "[2]"
    assert accuracy(splits["dev"], profile_overlap) >= 0.9

    # A reader that knows each field's vocabulary reaches ~100%: the task is solvable.
    def field_vote(example):
        _, first, _ = parse(example)
        votes = Counter(field_of(SPEC.profile_text(item)) for item in example.profile)
        return "[1]" if field_of(first) == votes.most_common(1)[0][0] else "[2]"
    assert accuracy(splits["dev"], field_vote) >= 0.97


def test_another_users_history_gives_chance(splits):
    """The evaluator's 'other history' control: reading a different user's profile is useless."""
    dev = splits["dev"]

    def with_next_users_profile(index):
        example = dev[index]
        _, first, _ = parse(example)
        other = dev[(index + 1) % len(dev)]
        votes = Counter(field_of(SPEC.profile_text(item)) for item in other.profile)
        return "[1]" if field_of(first) == votes.most_common(1)[0][0] else "[2]"
    score = sum(with_next_users_profile(i) == e.output for i, e in enumerate(dev)) / len(dev)
    assert 0.35 <= score <= 0.65
