"""The embedded numeric task: a synthetic LaMP-3 (product rating) whose answer only dates reveal.

Same official file layout, determinism and marker file as the other embedded tasks. It
is the task on which the numeric-signal path (`numeric_signals`) must earn its place:

* Every user's taste changed once. Reviews before their change date all carry one
  rating, reviews after it another (`old`, `new`, never equal). The question asks for
  the rating of a new review, and the gold is the user's current rating, `new`.
* Review texts are neutral: no wording depends on the rating, and the question's own
  review says nothing either.
* The profile is shuffled (not in time order) and holds about as many old as new
  reviews, in random proportion. So the texts, and even the bag of ratings they carry
  (LaMP-3's profile text shows each rating), tell the two ratings apart but not which
  is current: a model reading only them is right about half the time (each of the two
  is the current one equally often), one that ignores the history 0.2. Only the `date`
  field says which rating is the recent one, and reading it gets every answer right
  (`latest_rating`).
* (old, new) cycles through the 20 ordered pairs of distinct ratings, so every answer
  is equally frequent and independent of the old rating.
"""

from __future__ import annotations

import datetime
import os
import random
from pathlib import Path
from typing import Iterator

from dataset.embedded.install import ensure_generated, number_questions, write_generated_task

TASK_FOLDER = "LaMP_3"
# Bump when the generated data changes, so ensure_embedded_lamp3 replaces old copies.
GENERATOR_VERSION = 1
N_TRAIN, N_DEV, N_TEST = 800, 100, 100  # default split sizes (users)
MIN_PROFILE, MAX_PROFILE = 6, 30
FIRST_QUESTION_ID = 3000
QUESTION_TEMPLATE = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
                     "or 5 without further explanation. review: {review}")
# Change dates fall in these years; old reviews up to 4 years before, new ones up to 2 after.
FIRST_CHANGE_YEAR, LAST_CHANGE_YEAR = 2010, 2018
OLD_SPAN_DAYS, NEW_SPAN_DAYS = 4 * 365, 2 * 365

PRODUCTS = ("blender", "desk lamp", "backpack", "phone case", "coffee grinder", "yoga mat", "rain jacket",
            "board game", "kitchen scale", "bike light", "travel mug", "extension cord", "notebook",
            "shower curtain", "water bottle", "keyboard", "picture frame", "garden hose", "pillow", "toaster")
PEOPLE = ("my sister", "our office", "my father", "the kids", "a friend", "myself", "my neighbour", "our cabin")
TIMINGS = ("two days after ordering", "within the week", "a little later than planned", "on the promised date")
USES = ("daily", "on weekends", "for a few weeks now", "mostly in the evenings", "on a recent trip",
        "alongside the older one")
OBSERVATIONS = ("The colour matches the photos.", "It comes in a plain cardboard box.",
                "The manual is two pages long.", "It is about the size I expected.",
                "Setup took a few minutes.", "It weighs roughly what the listing says.",
                "The cable is a standard length.", "There is a small logo on the side.")
TEMPLATES = (
    "I bought this {product} for {person}. It arrived {timing}. {observation} We have used it {use}.",
    "Ordered the {product} for {person}; it came {timing}. {observation} It has been in use {use}.",
    "This {product} replaced an older one. It arrived {timing} and we have had it {use}. {observation}",
    "Got a {product} for {person}. {observation} Delivery was {timing}, and it has been used {use}.",
)


def review_text(rng: random.Random) -> str:
    """A product review whose words say nothing about the rating."""
    return rng.choice(TEMPLATES).format(product=rng.choice(PRODUCTS), person=rng.choice(PEOPLE),
                                        timing=rng.choice(TIMINGS), use=rng.choice(USES),
                                        observation=rng.choice(OBSERVATIONS))


def latest_rating(profile: list[dict]) -> str:
    """The rating of the most recent review: the rule the dates make exact."""
    return max(profile, key=lambda item: item["date"])["score"]


def generate_embedded_lamp3(out_dir: str | os.PathLike, seed: int = 0, n_train: int = N_TRAIN,
                            n_dev: int = N_DEV, n_test: int = N_TEST) -> Path:
    """Write a synthetic LaMP-3 under `out_dir` and return `out_dir`; the same seed gives the same files."""
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    splits = number_questions(sizes, FIRST_QUESTION_ID, lambda n: _rating_changes(rng, n),
                              lambda question_id, change: _make_question(rng, question_id, *change))
    write_generated_task(out_dir / TASK_FOLDER, "LaMP_3", splits, _marker(seed, sizes))
    return out_dir


def _rating_changes(rng: random.Random, n: int) -> Iterator[tuple[int, int]]:
    """n (old, new) ratings from shuffled rounds over all 20 pairs, which keeps the answers
    balanced; each round is drawn when it is needed, between the questions' own draws."""
    pairs = [(old, new) for old in range(1, 6) for new in range(1, 6) if old != new]
    cycle: list[tuple[int, int]] = []
    for _ in range(n):
        if not cycle:
            cycle = list(pairs)
            rng.shuffle(cycle)
        yield cycle.pop()


def ensure_embedded_lamp3(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the default-size embedded LaMP-3 under `out_dir` unless it is already there."""
    sizes = {"train": N_TRAIN, "dev": N_DEV, "test": N_TEST}
    return ensure_generated(out_dir, TASK_FOLDER, _marker(seed, sizes),
                            lambda staging: generate_embedded_lamp3(staging, seed))


def _marker(seed: int, sizes: dict[str, int]) -> dict:
    return {"generator": "embedded LaMP-3 (ratings changed over time)", "version": GENERATOR_VERSION, "seed": seed,
            "sizes": sizes}


def _make_question(rng: random.Random, question_id: str, old: int, new: int) -> tuple[dict, dict]:
    length = int(MIN_PROFILE * (MAX_PROFILE / MIN_PROFILE) ** rng.random())  # log-uniform: many short profiles
    # Symmetric around one half, so the majority rating is the current one only half the time.
    n_new = min(length - 1, max(1, round(length * rng.uniform(0.3, 0.7))))
    change = datetime.date(rng.randint(FIRST_CHANGE_YEAR, LAST_CHANGE_YEAR), rng.randint(1, 12), rng.randint(1, 28))
    profile = []
    for index in range(length):
        recent = index < n_new
        offset = rng.randint(0, NEW_SPAN_DAYS) if recent else -rng.randint(1, OLD_SPAN_DAYS)
        profile.append({"id": f"{question_id}{index:03d}", "text": review_text(rng),
                        "score": str(new if recent else old),
                        "date": (change + datetime.timedelta(days=offset)).isoformat()})
    rng.shuffle(profile)
    question = {"id": question_id, "input": QUESTION_TEMPLATE.format(review=review_text(rng)), "profile": profile}
    return question, {"id": question_id, "output": str(new)}
