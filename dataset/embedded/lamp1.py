"""The embedded offline task: a synthetic LaMP-1 generated from a seed.

It lets the project train and evaluate with no LaMP download. Files follow the official
LaMP-1 layout and format exactly, so the real reader and trainer run unchanged.

The task is built so that the answer depends on the user's history and on nothing else:

* Every user has one main research field; about 85% of their profile papers come from
  it, the rest from random other fields. Profiles hold 8 to 319 papers, log-uniform
  (many short, a few long), 84 on average like LaMP-1's.
* The query paper's title is topic-neutral ("Lessons learned from a decade of ..."), so
  it gives no hint.
* One candidate is a paper of the user's main field that is not in their profile; the
  other is a paper of another field. (main, other) pairs cycle through all ordered field
  pairs, so every field is as often correct as incorrect and a model that ignores the
  history cannot beat chance, while one that reads it can tell every answer.
* The correct candidate is [1] for half the questions of each split, in random order.

Papers come from per-field pools of a few hundred, so profile texts repeat across users
as in real data (and an embedding cache pays off).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dataset.embedded.install import ensure_generated, number_questions, write_generated_task
from dataset.embedded.vocab import (ABSTRACT_TEMPLATES, FIELDS, FieldVocab, NEUTRAL_ACTIVITIES, NEUTRAL_ADJECTIVES,
                                    NEUTRAL_COMMUNITIES, NEUTRAL_PERIODS, NEUTRAL_TEMPLATES, NEUTRAL_TOPICS,
                                    TITLE_TEMPLATES)

TASK_FOLDER = "LaMP_1"
# Bump when the generated data changes, so ensure_embedded_data replaces old copies.
GENERATOR_VERSION = 2
N_TRAIN, N_DEV, N_TEST = 800, 200, 200  # default split sizes (users); 800 train users = 100 steps of 8
PAPERS_PER_FIELD = 300
MIN_PROFILE, MAX_PROFILE = 8, 320  # log-uniform: mean ~84 items, as LaMP-1's profiles
MAIN_FIELD_SHARE = 0.85
FIRST_QUESTION_ID = 100
QUESTION_TEMPLATE = ('For an author who has written the paper with the title "{title}", which reference is '
                     'related? Just answer with [1] or [2] without explanation. [1]: "{ref1}" [2]: "{ref2}"')


@dataclass(frozen=True)
class Paper:
    """One synthetic paper; the same paper may sit in many users' profiles."""

    id: str
    title: str
    abstract: str


def generate_embedded_lamp1(out_dir: str | os.PathLike, seed: int = 0, n_train: int = N_TRAIN,
                            n_dev: int = N_DEV, n_test: int = N_TEST) -> Path:
    """Write a synthetic LaMP-1 under `out_dir` and return `out_dir`.

    Writes ``LaMP_1/{train,dev,test}_questions.json`` and ``LaMP_1/{train,dev}_outputs.json``
    (test golds stay hidden, as in LaMP), plus a small marker file. One question per user
    and users never repeat across splits. The same seed gives byte-identical files.
    """
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    pools = _paper_pools(rng)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}

    def specs(n: int):  # per question: the user's field, the other candidate's, whether the user's is [1]
        return ((*fields, first) for fields, first in zip(_field_pairs(rng, n), _balanced_flags(rng, n)))

    splits = number_questions(sizes, FIRST_QUESTION_ID, specs,
                              lambda question_id, spec: _make_question(rng, question_id, *spec, pools))
    write_generated_task(out_dir / TASK_FOLDER, TASK_FOLDER, splits, _marker(seed, sizes))
    return out_dir


def ensure_embedded_data(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the default-size embedded task under `out_dir` unless it is already there.

    Data is generated in a temporary folder inside `out_dir` and renamed into place, so a
    crash never leaves half a dataset. A copy made with another seed or generator version
    is replaced; a LaMP_1 folder the generator did not make is never touched.
    """
    sizes = {"train": N_TRAIN, "dev": N_DEV, "test": N_TEST}
    return ensure_generated(out_dir, TASK_FOLDER, _marker(seed, sizes),
                            lambda staging: generate_embedded_lamp1(staging, seed))


def _marker(seed: int, sizes: dict[str, int]) -> dict:
    return {"generator": "embedded LaMP-1", "version": GENERATOR_VERSION, "seed": seed, "sizes": sizes}


def _paper_pools(rng: random.Random) -> dict[str, list[Paper]]:
    """PAPERS_PER_FIELD papers with distinct titles for every field."""
    drafts: dict[str, list[tuple[str, str]]] = {}
    for name, vocab in FIELDS.items():
        titles: dict[str, str] = {}  # title -> abstract; dict keeps generation order
        while len(titles) < PAPERS_PER_FIELD:
            title, abstract = _draft_paper(rng, vocab)
            titles.setdefault(title, abstract)
        drafts[name] = list(titles.items())
    # Random ids, so an id says nothing about the field.
    total = sum(len(papers) for papers in drafts.values())
    ids = iter(rng.sample(range(1_000_000, 10_000_000), total))
    return {name: [Paper(str(next(ids)), title, abstract) for title, abstract in papers]
            for name, papers in drafts.items()}


def _draft_paper(rng: random.Random, vocab: FieldVocab) -> tuple[str, str]:
    """(title, abstract) about one coherent topic: both texts fill slots from the same draw."""
    method, method2 = rng.sample(vocab.methods, 2)
    subject, related = rng.sample(vocab.objects, 2)
    slots = {
        "method": method,
        "method2": method2,
        "object": subject,
        "related": related,
        "data": rng.choice(vocab.data),
        "setting": rng.choice(vocab.settings),
        "property": rng.choice(vocab.properties),
        "area": rng.choice(vocab.areas),
    }
    title = _capitalize(rng.choice(TITLE_TEMPLATES).format(**slots))
    abstract = rng.choice(ABSTRACT_TEMPLATES).format(**slots)
    return title, abstract


def _neutral_title(rng: random.Random) -> str:
    """A query title that fits any field equally, so it gives no hint about the answer."""
    slots = {
        "period": rng.choice(NEUTRAL_PERIODS),
        "activity": rng.choice(NEUTRAL_ACTIVITIES),
        "topic": rng.choice(NEUTRAL_TOPICS),
        "adjective": rng.choice(NEUTRAL_ADJECTIVES),
        "community": rng.choice(NEUTRAL_COMMUNITIES),
    }
    return _capitalize(rng.choice(NEUTRAL_TEMPLATES).format(**slots))


def _capitalize(text: str) -> str:
    """Upper-case the first letter unless the first word already has capitals ("eQTL", "SQL")."""
    first_word = text.split(" ", 1)[0]
    if first_word != first_word.lower():
        return text
    return text[:1].upper() + text[1:]


def _field_pairs(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """n (main field, other field) pairs from shuffled rounds over all ordered pairs.

    Each round makes every field the main field and the other field equally often, which
    is what keeps a history-blind model at chance even per field.
    """
    names = list(FIELDS)
    every_pair = [(main, other) for main in names for other in names if main != other]
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        round_ = list(every_pair)
        rng.shuffle(round_)
        pairs.extend(round_)
    return pairs[:n]


def _profile_length(rng: random.Random) -> int:
    """Log-uniform in [MIN_PROFILE, MAX_PROFILE): many short profiles, some long ones."""
    return int(MIN_PROFILE * (MAX_PROFILE / MIN_PROFILE) ** rng.random())


def _balanced_flags(rng: random.Random, n: int) -> list[bool]:
    """n flags, half True (rounded at random), in random order: whether the correct
    candidate comes first. Exact balance keeps "always [1]" at chance for every seed."""
    flags = [i < n // 2 + (n % 2) * rng.randrange(2) for i in range(n)]
    rng.shuffle(flags)
    return flags


def _make_question(rng: random.Random, question_id: str, main: str, other: str, correct_first: bool,
                   pools: dict[str, list[Paper]]) -> tuple[dict, dict]:
    """One user of field `main` whose wrong candidate comes from field `other`:
    (questions record, gold record)."""
    length = _profile_length(rng)
    # Stochastic rounding keeps the noise share at 15% on average and the main field the
    # clear majority even in a 4-item profile.
    n_noise = int(length * (1 - MAIN_FIELD_SHARE) + rng.random())
    noise_choices = [name for name in pools if name != main]
    noise_fields = Counter(rng.choice(noise_choices) for _ in range(n_noise))
    profile = rng.sample(pools[main], length - n_noise)
    for name in sorted(noise_fields):
        profile.extend(rng.sample(pools[name], noise_fields[name]))
    rng.shuffle(profile)

    # Neither candidate may appear verbatim in the profile, so copying is never the answer.
    in_profile = {paper.title for paper in profile}
    correct = rng.choice([paper for paper in pools[main] if paper.title not in in_profile])
    wrong = rng.choice([paper for paper in pools[other] if paper.title not in in_profile])
    first, second = (correct, wrong) if correct_first else (wrong, correct)
    question = {
        "id": question_id,
        "input": QUESTION_TEMPLATE.format(title=_neutral_title(rng), ref1=first.title, ref2=second.title),
        "profile": [{"id": paper.id, "title": paper.title, "abstract": paper.abstract} for paper in profile],
    }
    return question, {"id": question_id, "output": "[1]" if correct_first else "[2]"}
