"""The embedded generation task: a synthetic LaMP-7 (tweet paraphrasing) from a seed.

It is the generation counterpart of the embedded LaMP-1 (`dataset.embedded.lamp1`): the same
official file layout, determinism and marker file, so the real reader, trainer and
ROUGE metrics run on it unchanged.

The task is built so that part of the answer depends on the user's history only:

* Every user has a style: a signature closing (one of 8), an opener (one of 4, or none)
  and possibly an all-lowercase habit. Each marker cycles through its options in
  shuffled rounds, so all are used equally often and none can be guessed.
* The question is LaMP-7's prompt around a neutral paraphrase of a tweet, which carries
  no style marker. The gold is the tweet as the user wrote it: the casual wording of
  the same content, plus the user's markers.
* The profile holds the user's past tweets (4 to 39, many short profiles) on varied
  topics, all in that style. So copying the question's tweet misses the markers, and
  reading them off the history recovers them (see `oracle_prediction`).

The casual rewording is the same for every user, so a model can learn it from training
data alone; only the markers need the history.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from dataset.embedded.install import ensure_generated, number_questions, write_generated_task
from dataset.embedded.style_vocab import CLOSINGS, OPENERS, SLOTS, TWEET_TEMPLATES

TASK_FOLDER = "LaMP_7"
# Bump when the generated data changes, so ensure_embedded_lamp7 replaces old copies.
GENERATOR_VERSION = 1
N_TRAIN, N_DEV, N_TEST = 800, 100, 100  # default split sizes (users)
MIN_PROFILE, MAX_PROFILE = 4, 40
FIRST_QUESTION_ID = 7000
# LaMP-7's official question: this prefix followed by the tweet to paraphrase.
INPUT_PREFIX = "Paraphrase the following tweet without any explanation before or after it: "


@dataclass(frozen=True)
class Style:
    """How one user writes: every tweet gets these markers."""

    closing: str
    opener: str | None
    lowercase: bool


# Every possible style, in a fixed order.
STYLES: tuple[Style, ...] = tuple(Style(closing, opener, lowercase) for closing in CLOSINGS
                                  for opener in (None, *OPENERS) for lowercase in (False, True))


def apply_style(body: str, style: Style) -> str:
    """`body` as a user of `style` tweets it: opener, body, closing, then the casing rule."""
    text = f"{style.opener} {body}" if style.opener else body
    text = f"{text} {style.closing}"
    return text.lower() if style.lowercase else text[:1].upper() + text[1:]


def generate_embedded_lamp7(out_dir: str | os.PathLike, seed: int = 0, n_train: int = N_TRAIN,
                            n_dev: int = N_DEV, n_test: int = N_TEST) -> Path:
    """Write a synthetic LaMP-7 under `out_dir` and return `out_dir`.

    Writes ``LaMP_7/{train,dev,test}_questions.json`` and ``LaMP_7/{train,dev}_outputs.json``
    (test golds stay hidden, as in LaMP), plus a small marker file. One question per user
    and users never repeat across splits. The same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    splits = number_questions(sizes, FIRST_QUESTION_ID, lambda n: _styles(rng, n),
                              lambda question_id, style: _make_question(rng, question_id, style))
    write_generated_task(out_dir / TASK_FOLDER, TASK_FOLDER, splits, _marker(seed, sizes))
    return out_dir


def ensure_embedded_lamp7(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the default-size embedded LaMP-7 under `out_dir` unless it is already there.

    Same contract as `dataset.embedded.ensure_embedded_data`: data is generated in a
    temporary folder inside `out_dir` and renamed into place, so a crash never leaves half
    a dataset; a copy made with another seed or generator version is replaced; a LaMP_7
    folder the generator did not make is never touched.
    """
    sizes = {"train": N_TRAIN, "dev": N_DEV, "test": N_TEST}
    return ensure_generated(out_dir, TASK_FOLDER, _marker(seed, sizes),
                            lambda staging: generate_embedded_lamp7(staging, seed))


# --- reference predictors: what reading the history is worth ----------------------------------------------


def neutral_tweet(input_text: str) -> str:
    """The tweet inside a LaMP-7 question (the whole text if the prefix is missing)."""
    return input_text[len(INPUT_PREFIX):] if input_text.startswith(INPUT_PREFIX) else input_text


def read_style(profile_texts: Iterable[str]) -> Style | None:
    """The style a user's past tweets share, read off the texts alone; None if they show
    no known closing. An opener counts when more than half of the tweets start with it."""
    texts = list(profile_texts)
    lowered = [text.lower() for text in texts]
    closings = Counter(c for text in lowered for c in CLOSINGS if text.endswith(c.lower()))
    if not closings:
        return None
    openers = Counter(o for text in lowered for o in OPENERS if text.startswith(o.lower()))
    opener = next((o for o, count in openers.most_common(1) if count * 2 > len(texts)), None)
    lowercase = all(text == low for text, low in zip(texts, lowered))
    return Style(closings.most_common(1)[0][0], opener, lowercase)


def oracle_prediction(input_text: str, profile_texts: Iterable[str]) -> str:
    """History-aware reference: the question's tweet with the markers read off the profile."""
    tweet = neutral_tweet(input_text)
    style = read_style(profile_texts)
    return tweet if style is None else apply_style(tweet, style)


def blind_prediction(input_text: str) -> str:
    """History-blind reference: the question's tweet, copied."""
    return neutral_tweet(input_text)


# --- generation ----------------------------------------------------------------------------------------------


def _marker(seed: int, sizes: dict[str, int]) -> dict:
    return {"generator": "embedded LaMP-7", "version": GENERATOR_VERSION, "seed": seed, "sizes": sizes}


def _styles(rng: random.Random, n: int) -> list[Style]:
    """n styles whose closing, opener and casing each come from their own shuffled rounds
    over the options, so every marker is used equally often (within one) in every split."""
    return [Style(*markers) for markers in zip(_rounds(rng, CLOSINGS, n), _rounds(rng, (None, *OPENERS), n),
                                               _rounds(rng, (False, True), n))]


def _rounds(rng: random.Random, options: tuple, n: int) -> list:
    """n items from shuffled rounds over `options`: each option n // len(options) times, or one more."""
    items: list = []
    while len(items) < n:
        round_ = list(options)
        rng.shuffle(round_)
        items.extend(round_)
    return items[:n]


def _profile_length(rng: random.Random) -> int:
    """Log-uniform in [MIN_PROFILE, MAX_PROFILE): many short profiles, some long ones."""
    return int(MIN_PROFILE * (MAX_PROFILE / MIN_PROFILE) ** rng.random())


def _draw_tweet(rng: random.Random) -> tuple[str, str]:
    """(casual body, neutral paraphrase) of one tweet; both fill slots from the same draw."""
    casual, neutral = rng.choice(TWEET_TEMPLATES)
    slots = {name: rng.choice(values) for name, values in SLOTS.items()}
    neutral = neutral.format(**slots)
    return casual.format(**slots), neutral[:1].upper() + neutral[1:]


def _make_question(rng: random.Random, question_id: str, style: Style) -> tuple[dict, dict]:
    """One user of `style`: (questions record, gold record)."""
    body, neutral = _draw_tweet(rng)
    # Past tweets are distinct and never the asked tweet, so copying the profile never answers.
    bodies: dict[str, None] = {body: None}  # dict keeps generation order
    length = _profile_length(rng)
    while len(bodies) < length + 1:
        bodies.setdefault(_draw_tweet(rng)[0], None)
    profile = [{"id": f"{question_id}{index:02d}", "text": apply_style(past, style)}
               for index, past in enumerate(list(bodies)[1:])]
    question = {"id": question_id, "input": INPUT_PREFIX + neutral, "profile": profile}
    return question, {"id": question_id, "output": apply_style(body, style)}
