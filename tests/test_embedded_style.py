"""The embedded LaMP-7 task: format, determinism, that the style needs the history, and
calibration to real LaMP-7.

Reference predictors stand in for models: copying the question's tweet (blind to the
history) must score about what it scores on real LaMP-7, and applying the markers read
off the user's profile must add a few points, as personalization does there.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from dataset.embedded import lamp7
from dataset.embedded.lamp7 import (INPUT_PREFIX, Habits, Style, apply_style, blind_prediction,
                                    generate_embedded_lamp7, neutral_tweet, read_style, styled_prediction)
from dataset.embedded.style_vocab import (CLOSINGS, HASHTAGS, INTERJECTIONS, OPENERS, PARAPHRASE_ENDINGS,
                                          PARAPHRASE_OPENINGS, SLOTS, TWEET_TEMPLATES)
from dataset.embedded.install import EXPECTED_FILES, MARKER
from dataset.lamp import LaMPExample, load_split, read_lamp_split
from dataset.tasks import get_task
from trainers.metrics import rouge_metrics

SPEC = get_task("LaMP-7")
FILES = EXPECTED_FILES
MARKER_TEXTS = tuple(text.lower() for text in CLOSINGS + OPENERS + HASHTAGS)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("embedded_style")
    assert generate_embedded_lamp7(out, seed=0) == out
    return out


@pytest.fixture(scope="module")
def splits(generated) -> dict[str, list[LaMPExample]]:
    return {split: list(load_split(generated, "LaMP-7", split, SPEC.profile_fields)) for split in ("train", "dev", "test")}


def texts(example: LaMPExample) -> list[str]:
    return [SPEC.profile_text(item) for item in example.profile]


def markers_of(text: str) -> Style:
    """The markers one tweet carries."""
    lowered = text.lower()
    return Style(next((c for c in CLOSINGS if lowered.endswith(c.lower())), None),
                 next((o for o in OPENERS if lowered.startswith(o.lower())), None),
                 next((h for h in HASHTAGS if h in lowered.split()), None), text == lowered)


# --- format ------------------------------------------------------------------------------------------------


def test_files_follow_official_layout(generated, splits):
    folder = generated / "LaMP_7"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES + (MARKER,))  # test golds stay hidden
    assert json.loads((folder / "dev_outputs.json").read_text())["task"] == "LaMP_7"
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [800, 1000, 200]
    assert all(e.output is None for e in splits["test"])
    for example in itertools.chain(*splits.values()):
        assert example.input.startswith(INPUT_PREFIX) and len(example.input) > len(INPUT_PREFIX) + 20
        assert all(set(item) == {"id", "text"} and isinstance(item["id"], str) for item in example.profile)
    assert all(isinstance(e.output, str) and e.output for s in ("train", "dev") for e in splits[s])


def test_official_prompt_and_retrieval_query(splits):
    assert INPUT_PREFIX == "Paraphrase the following tweet without any explanation before or after it: "
    for example in splits["dev"]:
        assert SPEC.retrieval_query(example.input) == neutral_tweet(example.input)


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    out = generated
    generate_embedded_lamp7(tmp_path / "same", seed=0)
    generate_embedded_lamp7(tmp_path / "other", seed=1)
    for name in FILES:
        reference = (out / "LaMP_7" / name).read_bytes()
        assert (tmp_path / "same" / "LaMP_7" / name).read_bytes() == reference
        assert (tmp_path / "other" / "LaMP_7" / name).read_bytes() != reference


def test_small_sizes(tmp_path):
    generate_embedded_lamp7(tmp_path, seed=3, n_train=5, n_dev=3, n_test=1)
    folder = tmp_path / "LaMP_7"
    examples = read_lamp_split(folder / "dev_questions.json", folder / "dev_outputs.json", SPEC.profile_fields)
    assert len(examples) == 3
    assert len(json.loads((folder / "test_questions.json").read_text())) == 1


def test_users_disjoint_across_splits(splits):
    ids = {split: {e.id for e in examples} for split, examples in splits.items()}
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())) == 2000
    item_ids = [item["id"] for e in itertools.chain(*splits.values()) for item in e.profile]
    assert len(item_ids) == len(set(item_ids))  # no past tweet is shared by two users
    profiles = Counter(tuple(texts(e)) for e in itertools.chain(*splits.values()))
    assert profiles.most_common(1)[0][1] == 1


def test_profiles_vary_in_length_and_content(splits):
    lengths = [len(e.profile) for e in itertools.chain(*splits.values())]
    assert min(lengths) == 4 and max(lengths) == 39
    assert sorted(lengths)[len(lengths) // 2] < 20  # skewed: many short profiles
    for example in itertools.chain(*splits.values()):
        past = texts(example)
        assert len(set(past)) == len(past)
        assert example.output not in past  # copying a past tweet never answers
    # Varied content: many distinct tweets, every template and slot value in use.
    bodies = {text for e in splits["train"] for text in texts(e)}
    assert len(bodies) > 5000
    joined = "\n".join(bodies).lower()
    assert all(value.lower() in joined for values in SLOTS.values() for value in values)


# --- the design: neutral questions, golds with some of the user's markers, balanced markers ----------------------


def test_markers_never_occur_in_templates_slots_or_paraphrase_frames():
    vocabulary = [text.lower() for pair in TWEET_TEMPLATES for text in pair]
    vocabulary += [value.lower() for values in SLOTS.values() for value in values]
    vocabulary += [text.lower() for text in PARAPHRASE_OPENINGS + PARAPHRASE_ENDINGS]
    for marker in MARKER_TEXTS:
        assert not any(marker in text for text in vocabulary), marker
    for word in INTERJECTIONS:  # as whole words: "fr" may sit inside "friends"
        assert not any(word in re.findall(r"[a-z0-9]+", text) for text in vocabulary), word


def test_questions_are_neutral_and_golds_carry_only_the_users_markers(splits):
    for example in itertools.chain(*splits.values()):
        tweet = neutral_tweet(example.input).lower()
        assert "#" not in tweet and not any(marker in tweet for marker in MARKER_TEXTS)
        assert tweet.endswith((".", "?"))
    carried = Counter()
    for example in splits["train"] + splits["dev"]:
        tweets = [*texts(example), example.output]
        markers = [markers_of(text) for text in tweets]
        for kind in ("closing", "opener", "hashtag"):
            used = {getattr(m, kind) for m in markers} - {None}
            assert len(used) <= 1, (example.id, kind, used)  # one user, one marker of each kind
            carried[kind] += getattr(markers_of(example.output), kind) is not None
        assert blind_prediction(example.input) != example.output
    n = len(splits["train"]) + len(splits["dev"])
    for kind in ("closing", "opener", "hashtag"):  # used often, not always (openers: 4 users in 5 have one)
        assert 0.35 * n <= carried[kind] <= 0.75 * n, (kind, carried[kind])


def test_users_markers_are_balanced_and_their_rates_vary():
    habits = lamp7._habits(random.Random(0), 1000)
    for kind, options in (("closing", CLOSINGS), ("opener", (None, *OPENERS)), ("hashtag", HASHTAGS),
                          ("lowercase", (False, True))):
        counts = Counter(getattr(h.style, kind) for h in habits)
        assert set(counts) == set(options), kind
        assert max(counts.values()) - min(counts.values()) <= 1, (kind, counts)
    rates = [h.closing_rate for h in habits]
    assert min(rates) < 0.2 and max(rates) > 0.9


def test_habits_draw_each_marker_at_its_rate():
    habits = Habits(Style("xoxo", "Honestly,", "#truestory", True), closing_rate=0.9, opener_rate=0.1,
                    hashtag_rate=0.5)
    rng = random.Random(1)
    drawn = [habits.draw(rng) for _ in range(2000)]
    assert 0.85 <= sum(s.closing == "xoxo" for s in drawn) / 2000 <= 0.95
    assert 0.05 <= sum(s.opener == "Honestly," for s in drawn) / 2000 <= 0.15
    assert 0.45 <= sum(s.hashtag == "#truestory" for s in drawn) / 2000 <= 0.55
    assert all(s.lowercase for s in drawn) and {s.closing for s in drawn} == {"xoxo", None}


def test_read_style_keeps_the_markers_most_tweets_carry():
    past = ["Honestly, rain again #truestory xoxo", "Honestly, new phone xoxo", "lunch was great xoxo",
            "Honestly, long day #truestory"]
    assert read_style(past) == Style("xoxo", "Honestly,", None, False)  # the hashtag is on 2 of 4: not a habit
    assert read_style(["a tweet with no signature", "another one"]) == Style(None, None, None, True)


def test_apply_style():
    assert apply_style("just got home", Style("#onwards", "Quick thought:", None, False)) == \
        "Quick thought: just got home #onwards"
    assert apply_style("just got home", Style("\u2014 J.", None, "#nofilter", False)) == "Just got home #nofilter \u2014 J."
    assert apply_style("Dune is great", Style("xoxo", "Honestly,", None, True)) == "honestly, dune is great xoxo"
    assert apply_style("Dune is great", Style(None, None, None, False)) == "Dune is great"


# --- what the history is worth, in ROUGE: calibrated to real LaMP-7 ------------------------------------------


def test_copying_and_reading_the_history_score_as_on_real_lamp7(splits):
    """Copying the tweet scores in a range around what it scores on real LaMP-7; reading the
    user's markers adds a few points, about what personalization adds there."""
    dev = splits["dev"]
    golds = [e.output for e in dev]
    blind = rouge_metrics([blind_prediction(e.input) for e in dev], golds)
    styled = rouge_metrics([styled_prediction(e.input, texts(e)) for e in dev], golds)
    assert 0.40 <= blind["rouge-1"] <= 0.52
    assert 0.03 <= styled["rouge-1"] - blind["rouge-1"] <= 0.08
    assert 0.03 <= styled["rouge-L"] - blind["rouge-L"] <= 0.08

    # No fixed guess of markers, made without the history, does better than copying.
    for closing, opener, hashtag in zip(CLOSINGS, (None, *OPENERS) * 2, HASHTAGS):
        guess = Style(closing, opener, hashtag, False)
        guessed = rouge_metrics([apply_style(blind_prediction(e.input), guess) for e in dev], golds)
        assert guessed["rouge-1"] <= blind["rouge-1"] + 0.005, guess

    # Another user's history is no help either: it lends the wrong markers.
    other = rouge_metrics([styled_prediction(e.input, texts(dev[(i + 1) % len(dev)])) for i, e in enumerate(dev)],
                          golds)
    assert other["rouge-1"] <= blind["rouge-1"]
