"""The embedded LaMP-7 task: format, determinism, and that the style needs the history.

Reference predictors stand in for models: copying the question's tweet (blind to the
history) must score clearly below applying the markers read off the user's profile.
"""

from __future__ import annotations

import itertools
import json
import time
from collections import Counter
from pathlib import Path

import pytest

from dataset.embedded.lamp7 import (INPUT_PREFIX, STYLES, Style, apply_style, blind_prediction,
                                    generate_embedded_lamp7, neutral_tweet,
                                    oracle_prediction, read_style)
from dataset.embedded.style_vocab import CLOSINGS, OPENERS, SLOTS, TWEET_TEMPLATES
from dataset.embedded.install import EXPECTED_FILES, MARKER
from dataset.lamp import LaMPExample, load_split, read_lamp_split
from dataset.tasks import get_task
from trainers.metrics import rouge_metrics

SPEC = get_task("LaMP-7")
FILES = EXPECTED_FILES
MARKER_TEXTS = tuple(text.lower() for text in CLOSINGS + OPENERS)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("embedded_style")
    start = time.perf_counter()
    assert generate_embedded_lamp7(out, seed=0) == out
    return out, time.perf_counter() - start


@pytest.fixture(scope="module")
def splits(generated) -> dict[str, list[LaMPExample]]:
    out, _ = generated
    return {split: load_split(out, "LaMP-7", split, SPEC.profile_fields) for split in ("train", "dev", "test")}


def texts(example: LaMPExample) -> list[str]:
    return [SPEC.profile_text(item) for item in example.profile]


def true_style(gold: str) -> Style:
    """The style a gold tweet was written in, from the markers it carries."""
    lowered = gold.lower()
    closing = next(c for c in CLOSINGS if lowered.endswith(c.lower()))
    opener = next((o for o in OPENERS if lowered.startswith(o.lower())), None)
    return Style(closing, opener, gold == lowered)


# --- format ------------------------------------------------------------------------------------------------


def test_files_follow_official_layout(generated, splits):
    out, _ = generated
    folder = out / "LaMP_7"
    assert sorted(p.name for p in folder.iterdir()) == sorted(FILES + (MARKER,))  # test golds stay hidden
    assert json.loads((folder / "dev_outputs.json").read_text())["task"] == "LaMP_7"
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [800, 100, 100]
    assert all(e.output is None for e in splits["test"])
    for example in itertools.chain(*splits.values()):
        assert example.input.startswith(INPUT_PREFIX) and len(example.input) > len(INPUT_PREFIX) + 20
        assert all(set(item) == {"id", "text"} and isinstance(item["id"], str) for item in example.profile)
    assert all(isinstance(e.output, str) and e.output for s in ("train", "dev") for e in splits[s])


def test_official_prompt_and_retrieval_query(splits):
    assert INPUT_PREFIX == "Paraphrase the following tweet without any explanation before or after it: "
    for example in splits["dev"]:
        assert SPEC.retrieval_query(example.input) == neutral_tweet(example.input)


def test_generation_is_fast(generated):
    _, seconds = generated
    assert seconds < 2.0


def test_same_seed_same_bytes_other_seed_differs(generated, tmp_path):
    out, _ = generated
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
    assert sum(map(len, ids.values())) == len(set().union(*ids.values())) == 1000
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


# --- the design: neutral questions, styled golds, balanced markers --------------------------------------------


def test_markers_never_occur_in_templates_or_slots():
    vocabulary = [text.lower() for pair in TWEET_TEMPLATES for text in pair]
    vocabulary += [value.lower() for values in SLOTS.values() for value in values]
    for marker in MARKER_TEXTS:
        assert not any(marker in text for text in vocabulary), marker
    assert len(STYLES) == len(set(STYLES)) == len(CLOSINGS) * (len(OPENERS) + 1) * 2


def test_questions_are_neutral_and_golds_styled(splits):
    for example in itertools.chain(*splits.values()):
        tweet = neutral_tweet(example.input).lower()
        assert "#" not in tweet and not any(marker in tweet for marker in MARKER_TEXTS)
        assert tweet.endswith((".", "?"))
    for example in splits["train"] + splits["dev"]:
        style = true_style(example.output)
        # Every past tweet carries the same markers as the gold.
        assert all(true_style(text) == style for text in texts(example))
        assert blind_prediction(example.input) != example.output


def test_styles_are_balanced(splits):
    for split in ("train", "dev"):
        styles = [true_style(e.output) for e in splits[split]]
        for marker, options in (("closing", CLOSINGS), ("opener", (None, *OPENERS)), ("lowercase", (False, True))):
            counts = Counter(getattr(style, marker) for style in styles)
            assert set(counts) == set(options), (split, marker)
            assert max(counts.values()) - min(counts.values()) <= 1, (split, marker, counts)
    assert len(set(true_style(e.output) for e in splits["train"])) == len(STYLES)  # every combination occurs


def test_style_is_readable_from_history(splits):
    for example in itertools.chain(splits["train"], splits["dev"]):
        assert read_style(texts(example)) == true_style(example.output)
    assert read_style(["A tweet with no signature", "another one"]) is None


def test_apply_style():
    assert apply_style("just got home", Style("#onwards", "Quick thought:", False)) == \
        "Quick thought: just got home #onwards"
    assert apply_style("just got home", Style("\u2014 J.", None, False)) == "Just got home \u2014 J."
    assert apply_style("Dune is great", Style("xoxo", "Honestly,", True)) == "honestly, dune is great xoxo"


# --- what the history is worth, in ROUGE ------------------------------------------------------------------------


def test_reading_the_history_beats_copying_the_tweet(splits):
    dev = splits["dev"]
    golds = [e.output for e in dev]
    blind = rouge_metrics([blind_prediction(e.input) for e in dev], golds)
    oracle = rouge_metrics([oracle_prediction(e.input, texts(e)) for e in dev], golds)
    assert oracle["rouge-1"] >= blind["rouge-1"] + 0.1
    assert oracle["rouge-L"] >= blind["rouge-L"] + 0.1
    assert 0.4 <= blind["rouge-1"] <= 0.75  # a light rewrite: copying is a fair but clearly beatable baseline

    # No fixed guess of markers, made without the history, does better than copying.
    for style in STYLES[::2]:  # casing does not change ROUGE
        guessed = rouge_metrics([apply_style(blind_prediction(e.input), style) for e in dev], golds)
        assert guessed["rouge-1"] <= blind["rouge-1"] + 0.01, style

    # Another user's history is no help either: it lends the wrong markers.
    other = rouge_metrics([oracle_prediction(e.input, texts(dev[(i + 1) % len(dev)])) for i, e in enumerate(dev)],
                          golds)
    assert other["rouge-1"] <= blind["rouge-1"]
