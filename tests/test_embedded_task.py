"""The embedded LaMP-1 task: format, determinism, realism, and calibration to real LaMP-1.

Simple rules stand in for models. Rules blind to the history must sit near chance; a
reader that knows the generator's vocabulary must beat the untrained embedding rules
(so a learned method has room above them); and those rules, with the real MiniLM, must
score in the ranges real LaMP-1 puts them in.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from bench.embedded_references import lamp1_references, unit_encoder
from dataset.embedded import lamp1
from dataset.embedded.lamp1 import SUBTOPICS, generate_embedded_lamp1, subtopic_vocab
from dataset.embedded.vocab import (CROSS_FIELD_TEMPLATES, FIELDS, GENERIC_SENTENCES, NEUTRAL_ACTIVITIES,
                                    NEUTRAL_ADJECTIVES, NEUTRAL_COMMUNITIES, NEUTRAL_PERIODS, NEUTRAL_TEMPLATES,
                                    NEUTRAL_TOPICS, content_words)
from dataset.embedded.install import EXPECTED_FILES, MARKER
from dataset.lamp import LaMPExample, load_split, read_lamp_split
from dataset.tasks import get_task

SPEC = get_task("LaMP-1")
FILES = EXPECTED_FILES
QUESTION = re.compile(r'^For an author who has written the paper with the title "(.+)", which reference is related\? '
                      r'Just answer with \[1\] or \[2\] without explanation\. \[1\]: "(.+)" \[2\]: "(.+)"$')
SIZES = {"n_train": 200, "n_dev": 500, "n_test": 20}
# The calibration test's data: a smaller shared pool than the default (fewer distinct texts
# for the real encoder to read) and enough dev users for the ranges to hold.
PAPERS_PER_SUBTOPIC = 25
CALIBRATION_SIZES = {"n_train": 0, "n_dev": 500, "n_test": 0}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embedded")
    assert generate_embedded_lamp1(out, seed=0, papers_per_subtopic=PAPERS_PER_SUBTOPIC, **SIZES) == out
    return out


@pytest.fixture(scope="module")
def splits(generated) -> dict[str, list[LaMPExample]]:
    return {split: list(load_split(generated, "LaMP-1", split, SPEC.profile_fields)) for split in ("train", "dev", "test")}


def parse(example: LaMPExample) -> tuple[str, str, str]:
    """-> (query title, candidate [1], candidate [2])."""
    match = QUESTION.match(example.input)
    assert match, example.input
    return match.groups()


def right_and_wrong(example: LaMPExample) -> tuple[str, str]:
    _, first, second = parse(example)
    return (first, second) if example.output == "[1]" else (second, first)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


FIELD_OF_WORD = {word: name for name, vocab in FIELDS.items() for word in vocab.words()}
# Phrases that name one subtopic: its methods and objects.
TOPIC_OF_PHRASE = {phrase.lower(): (name, s) for name, vocab in FIELDS.items() for s in range(SUBTOPICS)
                   for phrase in subtopic_vocab(vocab, s).methods + subtopic_vocab(vocab, s).objects}


@functools.lru_cache(maxsize=None)  # papers repeat across users
def field_of(text: str) -> str | None:
    """The field whose distinctive vocabulary `text` uses most."""
    votes = Counter(FIELD_OF_WORD[word] for word in content_words(text) if word in FIELD_OF_WORD)
    return votes.most_common(1)[0][0] if votes else None


@functools.lru_cache(maxsize=None)
def topic_of(title: str) -> tuple[str, int] | None:
    """(field, subtopic) of a paper title, from the subtopic phrases it names."""
    votes = Counter(topic for phrase, topic in TOPIC_OF_PHRASE.items() if phrase in title.lower())
    return votes.most_common(1)[0][0] if votes else None


def accuracy(examples: list[LaMPExample], rule) -> float:
    return sum(rule(example) == example.output for example in examples) / len(examples)


def topic_vote(example: LaMPExample, profile: list[dict]) -> str:
    """A reader that knows the vocabulary: the candidate whose subtopic (then field) the
    profile's titles name more often."""
    topics = Counter(topic_of(item["title"]) for item in profile)
    fields = Counter(topic[0] for topic in topics.elements() if topic)
    _, first, second = parse(example)
    score = [topics[topic_of(c)] + 0.1 * fields[topic_of(c)[0]] for c in (first, second)]
    return "[1]" if score[0] >= score[1] else "[2]"


# --- format ------------------------------------------------------------------------------------------------


def test_files_follow_official_layout(generated, splits):
    folder = generated / "LaMP_1"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES + (MARKER,))  # test golds stay hidden
    assert json.loads((folder / "dev_outputs.json").read_text())["task"] == "LaMP_1"
    assert [len(splits[s]) for s in ("train", "dev", "test")] == list(SIZES.values())
    assert all(e.output is None for e in splits["test"])
    for example in itertools.chain(*splits.values()):
        parse(example)
        assert all(set(item) == {"id", "title", "abstract"} for item in example.profile)
        assert all(isinstance(item["id"], str) for item in example.profile)
        assert example.output in (None, "[1]", "[2]")


def test_default_sizes():
    # Dev is large enough for a 2-point difference to be significant; train keeps one
    # epoch of the default run short.
    assert (lamp1.N_TRAIN, lamp1.N_DEV) == (800, 1000)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    small = {"n_train": 6, "n_dev": 4, "n_test": 2, "papers_per_subtopic": 10}
    for name, seed in (("a", 0), ("b", 0), ("other", 1)):
        generate_embedded_lamp1(tmp_path / name, seed=seed, **small)
    for name in FILES:
        reference = (tmp_path / "a" / "LaMP_1" / name).read_bytes()
        assert (tmp_path / "b" / "LaMP_1" / name).read_bytes() == reference
        assert (tmp_path / "other" / "LaMP_1" / name).read_bytes() != reference


def test_small_sizes(tmp_path):
    generate_embedded_lamp1(tmp_path, seed=3, n_train=5, n_dev=3, n_test=1, papers_per_subtopic=10)
    questions = tmp_path / "LaMP_1" / "dev_questions.json"
    examples = read_lamp_split(questions, tmp_path / "LaMP_1" / "dev_outputs.json", SPEC.profile_fields)
    assert len(examples) == 3


def test_users_disjoint_across_splits(splits):
    ids = {split: {e.id for e in examples} for split, examples in splits.items()}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())) == sum(SIZES.values())
    profiles = Counter(tuple(item["id"] for item in e.profile) for e in itertools.chain(*splits.values()))
    assert profiles.most_common(1)[0][1] == 1  # no user appears twice under another id


def test_inputs_are_short(splits):
    for example in splits["dev"]:
        query, first, second = parse(example)
        assert all(3 <= len(title.split()) <= 16 for title in (query, first, second))
        assert len(example.input.split()) <= 72


# --- realism: vocabularies, abstracts, profiles -----------------------------------------------------------------


def test_fields_have_distinct_vocabularies():
    assert len(FIELDS) >= 12
    for (a, va), (b, vb) in itertools.combinations(FIELDS.items(), 2):
        assert not va.words() & vb.words(), (a, b, va.words() & vb.words())
    neutral = set().union(*(content_words(re.sub(r"\{\w+\}", " ", text)) for text in
                            NEUTRAL_TEMPLATES + NEUTRAL_PERIODS + NEUTRAL_ACTIVITIES + NEUTRAL_TOPICS +
                            NEUTRAL_ADJECTIVES + NEUTRAL_COMMUNITIES + GENERIC_SENTENCES + CROSS_FIELD_TEMPLATES))
    for name, vocab in FIELDS.items():
        assert not vocab.words() & neutral, (name, vocab.words() & neutral)
    # Subtopics of a field split its methods and objects without overlap.
    for vocab in FIELDS.values():
        parts = [set(subtopic_vocab(vocab, s).methods + subtopic_vocab(vocab, s).objects) for s in range(SUBTOPICS)]
        assert sum(map(len, parts)) == len(set().union(*parts)) == len(vocab.methods) + len(vocab.objects)


def test_abstracts_have_realistic_lengths(splits):
    abstracts = {item["title"]: item["abstract"] for e in splits["train"] for item in e.profile}
    lengths = [len(text.split()) for text in abstracts.values()]
    assert 80 <= sum(lengths) / len(lengths) <= 160
    assert max(lengths) >= 200
    assert 0.01 <= lengths.count(0) / len(lengths) <= 0.08  # a few are missing, as in real data


def test_paper_texts_repeat_across_users_from_a_bounded_pool(splits):
    titles = Counter(item["title"] for e in splits["train"] for item in e.profile)
    pool = len(FIELDS) * SUBTOPICS * PAPERS_PER_SUBTOPIC + lamp1.EDITORIAL_POOL_RATIO * PAPERS_PER_SUBTOPIC
    assert len(titles) <= pool
    assert sum(titles.values()) > 5 * len(titles)


def test_profiles_vary_in_length_and_mix_interests_with_noise(splits):
    lengths = [len(e.profile) for e in splits["train"] + splits["dev"]]
    assert min(lengths) <= 12 and max(lengths) >= 200
    assert sorted(lengths)[len(lengths) // 2] < 70  # skewed: many short profiles
    assert 65 <= sum(lengths) / len(lengths) <= 105  # LaMP-1's profiles average 84 items
    several, editorials, main_share = 0, 0, []
    for example in splits["dev"]:
        fields = Counter(field_of(SPEC.profile_text(item)) for item in example.profile)
        editorials += fields.pop(None, 0)
        shares = sorted((count / len(example.profile) for count in fields.values()), reverse=True)
        main_share.append(shares[0])
        several += len(shares) > 1 and shares[1] >= 0.15
    assert several >= 0.4 * len(splits["dev"])  # many users have more than one interest
    assert 0.4 <= sum(main_share) / len(main_share) <= 0.8
    assert editorials >= 0.01 * sum(len(e.profile) for e in splits["dev"])  # field-neutral items


def test_candidates_relate_to_part_of_the_profile(splits):
    """The cited paper's field is in the profile, but often not its main field; the other
    candidate's field is sometimes in the profile too (one of the user's fields, or noise)."""
    cited_present, cited_main, wrong_present = 0, 0, 0
    for example in splits["train"] + splits["dev"]:
        right, wrong = right_and_wrong(example)
        fields = Counter(field_of(SPEC.profile_text(item)) for item in example.profile)
        fields.pop(None, None)
        cited_present += fields[field_of(right)] > 0
        cited_main += field_of(right) == fields.most_common(1)[0][0]
        wrong_present += fields[field_of(wrong)] > 0
    n = len(splits["train"]) + len(splits["dev"])
    assert cited_present >= 0.9 * n  # a minor interest may have no paper yet in a short profile
    assert 0.4 * n <= cited_main <= 0.8 * n
    assert 0.5 * n <= wrong_present <= 0.9 * n


def test_labels_balanced(splits):
    for split in ("train", "dev"):
        share = sum(e.output == "[1]" for e in splits[split]) / len(splits[split])
        assert 0.45 <= share <= 0.55


def test_every_field_about_equally_often_correct_and_incorrect(splits):
    correct, incorrect = Counter(), Counter()
    for example in splits["train"] + splits["dev"]:
        right, wrong = right_and_wrong(example)
        correct[field_of(right)] += 1
        incorrect[field_of(wrong)] += 1
    assert set(correct) == set(incorrect) == set(FIELDS)
    n = len(splits["train"]) + len(splits["dev"])
    for name in FIELDS:  # ~42 each; a field that were always wrong would stand out
        assert abs(correct[name] - incorrect[name]) <= 0.06 * n, name


def test_no_candidate_appears_in_its_users_profile(splits):
    for example in itertools.chain(*splits.values()):
        titles = {item["title"] for item in example.profile}
        query, first, second = parse(example)
        assert first not in titles and second not in titles
        assert len({query, first, second}) == 3


# --- what reading the history is worth -------------------------------------------------------------------------


def test_history_blind_rules_stay_near_chance(splits):
    dev = splits["dev"]
    assert 0.45 <= accuracy(dev, lambda e: "[1]") <= 0.55

    def title_overlap(example):
        query, first, second = parse(example)
        return "[1]" if len(words(first) & words(query)) >= len(words(second) & words(query)) else "[2]"
    assert 0.4 <= accuracy(dev, title_overlap) <= 0.62

    # Memorizing which candidate titles were right in training must not transfer.
    right_count = Counter()
    for example in splits["train"]:
        right, wrong = right_and_wrong(example)
        right_count[right] += 1
        right_count[wrong] -= 1

    def memorized(example):
        _, first, second = parse(example)
        return "[1]" if right_count[first] >= right_count[second] else "[2]"
    assert 0.4 <= accuracy(dev, memorized) <= 0.6


def test_a_reader_of_subtopics_beats_the_embedding_rules_but_not_by_everything(splits):
    """Knowing the generator's vocabulary gets well above the untrained embedding rules
    (tested below) but not to 100%: some questions the profile cannot settle."""
    score = accuracy(splits["dev"], lambda e: topic_vote(e, e.profile))
    assert 0.76 <= score <= 0.9


def test_another_users_history_gives_chance(splits):
    """The evaluator's 'other history' control: reading a different user's profile is useless."""
    dev = splits["dev"]
    score = sum(topic_vote(e, dev[(i + 1) % len(dev)].profile) == e.output for i, e in enumerate(dev)) / len(dev)
    assert 0.4 <= score <= 0.6


def test_untrained_rules_score_as_on_real_lamp1(tmp_path):
    """With the real MiniLM (the embedded default's history encoder), in ranges around what
    the same rules score on real LaMP-1's dev questions."""
    generate_embedded_lamp1(tmp_path, seed=0, papers_per_subtopic=PAPERS_PER_SUBTOPIC, **CALIBRATION_SIZES)
    results = lamp1_references(tmp_path, unit_encoder("minilm", tmp_path / "cache"))
    assert results["always [1]"]["accuracy"] == pytest.approx(0.5, abs=0.01)
    assert 0.45 <= results["closest to the input paper's title"]["accuracy"] <= 0.60
    mean_rule = results["closest to the mean profile embedding"]["accuracy"]
    assert 0.66 <= mean_rule <= 0.76
    # The most similar paper rule scores about the same, as on real LaMP-1 (slightly more).
    assert 0 <= results["closest to the most similar profile paper"]["accuracy"] - mean_rule <= 0.06
