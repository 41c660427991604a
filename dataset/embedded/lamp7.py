"""The embedded generation task: a synthetic LaMP-7 (tweet paraphrasing) from a seed.

It is the generation counterpart of the embedded LaMP-1 (`dataset.embedded.lamp1`): the same
official file layout, determinism and marker file, so the real reader, trainer and
ROUGE metrics run on it unchanged.

It is calibrated to real LaMP-7 for rules that train nothing (`bench.embedded_references`
measures them; a test keeps them in range): copying the question's tweet scores about
what it scores there, and reading the user's habits off the profile adds a few points,
not a landslide.

* The question is LaMP-7's prompt around a neutral paraphrase of a tweet. The gold is
  the tweet as the user wrote it: the casual wording of the same content, often with an
  interjection any user might drop in ("lol", "ngl"), plus some of the user's markers.
* Every user has markers: a signature closing (one of 8), an opener (one of 4, or
  none), a favourite hashtag (one of 8) and maybe an all-lowercase habit. Each marker
  cycles through its options in shuffled rounds, so all are used equally often and
  none can be guessed. Users differ in how often they use each: some sign nearly every
  tweet, some rarely (`Habits`).
* The profile holds the user's past tweets (4 to 39, many short profiles) on varied
  topics, written with the same habits. So copying the question's tweet misses the
  markers and the casual rewording; reading the markers the user mostly uses off the
  history recovers part of the gap (see `styled_prediction`).

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
from dataset.embedded.style_vocab import (CASUAL_SPELLINGS, CLOSINGS, HASHTAGS, INTERJECTIONS, OPENERS,
                                          PARAPHRASE_ENDINGS, PARAPHRASE_OPENINGS, SLOTS, TWEET_TEMPLATES)

TASK_FOLDER = "LaMP_7"
# Bump when the generated data changes, so ensure_embedded_lamp7 replaces old copies.
GENERATOR_VERSION = 2
N_TRAIN, N_DEV, N_TEST = 800, 1000, 200  # default split sizes (users)
MIN_PROFILE, MAX_PROFILE = 4, 40
FIRST_QUESTION_ID = 7000
# LaMP-7's official question: this prefix followed by the tweet to paraphrase.
INPUT_PREFIX = "Paraphrase the following tweet without any explanation before or after it: "
MARKER_RATES = (0.1, 1.0)  # per user and marker, drawn uniformly: how often a tweet carries it
INTERJECTION_RATE = 0.5  # chance that a tweet carries a random interjection
CASUAL_SPELLING_RATE = 0.4  # chance that a word with a casual spelling is typed that way
PARAPHRASE_FRAME_RATE = 0.6  # chance that the paraphrase adds an opening, and again an ending


@dataclass(frozen=True)
class Style:
    """The markers one tweet carries (None: not this one)."""

    closing: str | None
    opener: str | None
    hashtag: str | None
    lowercase: bool


@dataclass(frozen=True)
class Habits:
    """How one user writes: their markers (`style`) and how often a tweet carries each."""

    style: Style
    closing_rate: float
    opener_rate: float
    hashtag_rate: float

    def draw(self, rng: random.Random) -> Style:
        """The markers of one tweet: each of the user's, with its own rate."""
        return Style(self.style.closing if rng.random() < self.closing_rate else None,
                     self.style.opener if rng.random() < self.opener_rate else None,
                     self.style.hashtag if rng.random() < self.hashtag_rate else None,
                     self.style.lowercase)


def apply_style(body: str, style: Style) -> str:
    """`body` with the markers of `style`: opener, body, hashtag, closing, then the casing rule."""
    parts = [style.opener, body, style.hashtag, style.closing]
    text = " ".join(part for part in parts if part)
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
    splits = number_questions(sizes, FIRST_QUESTION_ID, lambda n: _habits(rng, n),
                              lambda question_id, habits: _make_question(rng, question_id, habits))
    write_generated_task(out_dir / TASK_FOLDER, TASK_FOLDER, splits, _marker(seed, sizes))
    return out_dir


def ensure_embedded_lamp7(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the default-size embedded LaMP-7 under `out_dir` unless it is already there.

    Same contract as `dataset.embedded.lamp1.ensure_embedded_data`: data is generated in a
    temporary folder inside `out_dir` and renamed into place, so a crash never leaves half
    a dataset; a copy made with another seed or generator version is replaced; a LaMP_7
    folder the generator did not make is never touched.
    """
    sizes = {"train": N_TRAIN, "dev": N_DEV, "test": N_TEST}  # read now, so a test may shrink them
    return ensure_generated(out_dir, TASK_FOLDER, _marker(seed, sizes),
                            lambda staging: generate_embedded_lamp7(staging, seed, *sizes.values()))


# --- reference predictors: what reading the history is worth ----------------------------------------------


def neutral_tweet(input_text: str) -> str:
    """The tweet inside a LaMP-7 question (the whole text if the prefix is missing)."""
    return input_text[len(INPUT_PREFIX):] if input_text.startswith(INPUT_PREFIX) else input_text


def read_style(profile_texts: Iterable[str]) -> Style:
    """The markers a user's past tweets mostly carry, read off the texts alone: each kind's
    most frequent marker if more than half of the tweets carry it, and lowercase if more
    than half are all lowercase."""
    texts = list(profile_texts)
    lowered = [text.lower() for text in texts]

    def habitual(options: tuple[str, ...], found) -> str | None:
        counts = Counter(option for text in lowered for option in options if found(text, option.lower()))
        return next((option for option, count in counts.most_common(1) if count * 2 > len(texts)), None)

    return Style(closing=habitual(CLOSINGS, str.endswith),
                 opener=habitual(OPENERS, str.startswith),
                 hashtag=habitual(HASHTAGS, lambda text, tag: tag in text.split()),
                 lowercase=sum(text == low for text, low in zip(texts, lowered)) * 2 > len(texts))


def styled_prediction(input_text: str, profile_texts: Iterable[str]) -> str:
    """Profile-reading rule: the question's tweet with the markers the user mostly uses."""
    return apply_style(neutral_tweet(input_text), read_style(profile_texts))


def blind_prediction(input_text: str) -> str:
    """History-blind rule: the question's tweet, copied."""
    return neutral_tweet(input_text)


# --- generation ----------------------------------------------------------------------------------------------


def _marker(seed: int, sizes: dict[str, int]) -> dict:
    return {"generator": "embedded LaMP-7", "version": GENERATOR_VERSION, "seed": seed, "sizes": sizes}


def _habits(rng: random.Random, n: int) -> list[Habits]:
    """n users' habits. Each marker kind comes from its own shuffled rounds over the options,
    so every marker is the user's own equally often (within one) in every split."""
    styles = [Style(*markers) for markers in zip(_rounds(rng, CLOSINGS, n), _rounds(rng, (None, *OPENERS), n),
                                                 _rounds(rng, HASHTAGS, n), _rounds(rng, (False, True), n))]
    return [Habits(style, *(rng.uniform(*MARKER_RATES) for _ in range(3))) for style in styles]


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
    """(casual body, neutral paraphrase) of one tweet; both fill slots from the same draw.
    The body may type some words casually and carry an interjection, at the start or the end;
    the paraphrase may wrap the tweet in words of its own. Neither depends on the user."""
    casual, neutral = rng.choice(TWEET_TEMPLATES)
    slots = {name: rng.choice(values) for name, values in SLOTS.items()}
    neutral = neutral.format(**slots)
    casual = " ".join(CASUAL_SPELLINGS[word] if word in CASUAL_SPELLINGS and rng.random() < CASUAL_SPELLING_RATE
                      else word for word in casual.format(**slots).split(" "))
    neutral = neutral[:1].upper() + neutral[1:]
    if rng.random() < PARAPHRASE_FRAME_RATE:
        neutral = f"{rng.choice(PARAPHRASE_OPENINGS)} {neutral[:1].lower()}{neutral[1:]}"
    if rng.random() < PARAPHRASE_FRAME_RATE:
        neutral = f"{neutral} {rng.choice(PARAPHRASE_ENDINGS)}"
    if rng.random() < INTERJECTION_RATE:
        word = rng.choice(INTERJECTIONS)
        casual = f"{word} {casual}" if rng.random() < 0.5 else f"{casual} {word}"
    return casual, neutral


def _make_question(rng: random.Random, question_id: str, habits: Habits) -> tuple[dict, dict]:
    """One user with `habits`: (questions record, gold record)."""
    body, neutral = _draw_tweet(rng)
    # Past tweets are distinct and never the asked tweet, so copying the profile never answers.
    bodies: dict[str, None] = {body: None}  # dict keeps generation order
    length = _profile_length(rng)
    while len(bodies) < length + 1:
        bodies.setdefault(_draw_tweet(rng)[0], None)
    profile = [{"id": f"{question_id}{index:02d}", "text": apply_style(past, habits.draw(rng))}
               for index, past in enumerate(list(bodies)[1:])]
    question = {"id": question_id, "input": INPUT_PREFIX + neutral, "profile": profile}
    return question, {"id": question_id, "output": apply_style(body, habits.draw(rng))}
