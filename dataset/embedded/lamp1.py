"""The embedded offline task: a synthetic LaMP-1 generated from a seed.

It lets the project train and evaluate with no LaMP download. Files follow the official
LaMP-1 layout and format exactly, so the real reader and trainer run unchanged.

It is calibrated to be about as hard as real LaMP-1 for rules that train nothing
(`bench.embedded_references` measures them; a test keeps them in range):

* Papers belong to a subtopic of a research field (12 fields, 4 subtopics each). Papers
  of one subtopic share their methods and objects, papers of one field their data,
  settings and quantities, and every field its sentence templates. Abstracts run to
  real lengths (a few topical sentences padded with field-neutral ones), some make an
  aside into another field, and a few are missing.
* Every user has one to four interests (a subtopic each, sometimes two in one field)
  with unequal weights. Their profile mixes papers of those interests, off-topic papers
  (5-30% of it) and a few field-neutral editorials. Profiles hold 8 to 319 papers,
  log-uniform (many short, a few long), 84 on average like LaMP-1's.
* The question's paper title is the user's new paper, on one of their interests, or
  (40%) a title that names no field at all, as position papers and essays have.
* The cited candidate belongs to one of the user's interests, drawn uniformly, not by
  weight (a minor interest is cited as often as the main one), or sometimes to another
  subtopic of that interest's field. Nearly half the time the other candidate comes from
  the new paper's field, on a subtopic the user does not work on; otherwise from any
  other field, which may be one of the user's or of their off-topic papers. So the
  profile decides most questions but not all, and the new paper's title helps little:
  it shares its field with the wrong candidate about as often as with the right one.
* The correct candidate is [1] for half the questions of each split, in random order.

Papers come from shared per-subtopic pools, so profile texts repeat across users as in
real data, and the number of distinct texts (what the history store encodes) stays
bounded however many users there are.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from dataset.embedded.install import ensure_generated, number_questions, write_generated_task
from dataset.embedded.vocab import (ABSTRACT_TEMPLATES, CROSS_FIELD_TEMPLATES, FIELDS, GENERIC_SENTENCES,
                                    NEUTRAL_ACTIVITIES, NEUTRAL_ADJECTIVES, NEUTRAL_COMMUNITIES, NEUTRAL_PERIODS,
                                    NEUTRAL_TEMPLATES, NEUTRAL_TOPICS, TITLE_TEMPLATES, FieldVocab)

TASK_FOLDER = "LaMP_1"
# Bump when the generated data changes, so ensure_embedded_data replaces old copies.
GENERATOR_VERSION = 3
N_TRAIN, N_DEV, N_TEST = 800, 1000, 200  # default split sizes (users)
FIRST_QUESTION_ID = 100
QUESTION_TEMPLATE = ('For an author who has written the paper with the title "{title}", which reference is '
                     'related? Just answer with [1] or [2] without explanation. [1]: "{ref1}" [2]: "{ref2}"')

SUBTOPICS = 4  # per field: methods and objects are dealt round-robin into this many subtopics
PAPERS_PER_SUBTOPIC = 100
# Field-neutral papers (position papers, community reports) have a pool of their own, this
# many times a subtopic's, so their share of what users read stays the same at any pool size.
EDITORIAL_POOL_RATIO = 2
MISSING_ABSTRACT = 0.03  # share of papers whose abstract is empty
CROSS_FIELD_ASIDE = 0.15  # share of abstracts with a sentence on another field
ABSTRACT_WORDS = (40, 250)  # a target abstract length is drawn log-uniform in this range

MIN_PROFILE, MAX_PROFILE = 8, 320  # log-uniform: mean ~84 items, as LaMP-1's profiles
INTEREST_COUNTS = {1: 0.2, 2: 0.35, 3: 0.3, 4: 0.15}  # how many interests a user has
SAME_FIELD_INTEREST = 0.25  # chance that a further interest is another subtopic of an existing one's field
OFF_TOPIC_SHARE = (0.05, 0.30)  # per user, drawn uniformly: profile share of papers from other fields
EDITORIAL_SHARE = 0.04  # profile share of editorials
INTEREST_SPREAD = 0.3  # chance that an interest's paper comes from another subtopic of its field
POOL_USE = 0.8  # most of a subtopic's pool one profile may hold
NEUTRAL_INPUT_TITLE = 0.4  # chance that the new paper's title names no field ("Towards open peer review")
CITE_FIELD_SPREAD = 0.25  # chance that the cited paper is on another subtopic of its interest's field
NEAR_NEGATIVE = 0.45  # chance that the other candidate comes from the new paper's field


@dataclass(frozen=True)
class Paper:
    """One synthetic paper; the same paper may sit in many users' profiles."""

    id: str
    title: str
    abstract: str


Topic = tuple[str, int]  # (field name, subtopic index)


def generate_embedded_lamp1(out_dir: str | os.PathLike, seed: int = 0, n_train: int = N_TRAIN,
                            n_dev: int = N_DEV, n_test: int = N_TEST,
                            papers_per_subtopic: int = PAPERS_PER_SUBTOPIC) -> Path:
    """Write a synthetic LaMP-1 under `out_dir` and return `out_dir`.

    Writes ``LaMP_1/{train,dev,test}_questions.json`` and ``LaMP_1/{train,dev}_outputs.json``
    (test golds stay hidden, as in LaMP), plus a small marker file. One question per user
    and users never repeat across splits. The same seed gives byte-identical files.
    `papers_per_subtopic` sizes the shared pools: smaller pools mean fewer distinct texts
    (cheaper to encode) and more repetition across users.
    """
    out_dir = Path(out_dir)
    rng = random.Random(seed)
    pools, editorials = _paper_pools(rng, papers_per_subtopic)
    sizes = {"train": n_train, "dev": n_dev, "test": n_test}
    splits = number_questions(sizes, FIRST_QUESTION_ID, lambda n: _balanced_flags(rng, n),
                              lambda question_id, first: _make_question(rng, question_id, first, pools, editorials))
    write_generated_task(out_dir / TASK_FOLDER, TASK_FOLDER, splits,
                         _marker(seed, sizes, papers_per_subtopic))
    return out_dir


def ensure_embedded_data(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Generate the default-size embedded task under `out_dir` unless it is already there.

    Data is generated in a temporary folder inside `out_dir` and renamed into place, so a
    crash never leaves half a dataset. A copy made with another seed or generator version
    is replaced; a LaMP_1 folder the generator did not make is never touched.
    """
    sizes = {"train": N_TRAIN, "dev": N_DEV, "test": N_TEST}  # read now, so a test may shrink them
    pool = PAPERS_PER_SUBTOPIC
    return ensure_generated(out_dir, TASK_FOLDER, _marker(seed, sizes, pool),
                            lambda staging: generate_embedded_lamp1(staging, seed, *sizes.values(), pool))


def _marker(seed: int, sizes: dict[str, int], papers_per_subtopic: int) -> dict:
    return {"generator": "embedded LaMP-1", "version": GENERATOR_VERSION, "seed": seed, "sizes": sizes,
            "papers_per_subtopic": papers_per_subtopic}


# --- papers ---------------------------------------------------------------------------------------------------


def subtopic_vocab(vocab: FieldVocab, subtopic: int) -> FieldVocab:
    """The field's vocabulary narrowed to one subtopic: its share of the methods and objects
    (dealt round-robin), with the field's data, settings, quantities and areas."""
    return FieldVocab(methods=vocab.methods[subtopic::SUBTOPICS], objects=vocab.objects[subtopic::SUBTOPICS],
                      data=vocab.data, settings=vocab.settings, properties=vocab.properties, areas=vocab.areas)


def _paper_pools(rng: random.Random, per_subtopic: int) -> tuple[dict[Topic, list[Paper]], list[Paper]]:
    """`per_subtopic` papers with distinct titles for every (field, subtopic), and the editorials."""
    drafts: dict[Topic, list[tuple[str, str]]] = {}
    for name, vocab in FIELDS.items():
        for subtopic in range(SUBTOPICS):
            titles: dict[str, str] = {}  # title -> abstract; dict keeps generation order
            narrow = subtopic_vocab(vocab, subtopic)
            while len(titles) < per_subtopic:
                title, abstract = _draft_paper(rng, name, narrow)
                titles.setdefault(title, abstract)
            drafts[(name, subtopic)] = list(titles.items())
    editorial_drafts: dict[str, str] = {}
    n_editorials = EDITORIAL_POOL_RATIO * per_subtopic
    while len(editorial_drafts) < n_editorials:
        editorial_drafts.setdefault(_neutral_title(rng), _padding(rng, _abstract_length(rng)))
    # Random ids, so an id says nothing about the field.
    total = sum(len(papers) for papers in drafts.values()) + n_editorials
    ids = iter(rng.sample(range(1_000_000, 10_000_000), total))
    pools = {topic: [Paper(str(next(ids)), title, abstract) for title, abstract in papers]
             for topic, papers in drafts.items()}
    return pools, [Paper(str(next(ids)), title, abstract) for title, abstract in editorial_drafts.items()]


def _slots(rng: random.Random, vocab: FieldVocab) -> dict[str, str]:
    method, method2 = rng.sample(vocab.methods, 2)
    subject, related = rng.sample(vocab.objects, 2)
    return {"method": method, "method2": method2, "object": subject, "related": related,
            "data": rng.choice(vocab.data), "setting": rng.choice(vocab.settings),
            "property": rng.choice(vocab.properties), "area": rng.choice(vocab.areas)}


def _draft_title(rng: random.Random, vocab: FieldVocab) -> str:
    return _capitalize(rng.choice(TITLE_TEMPLATES).format(**_slots(rng, vocab)))


def _draft_paper(rng: random.Random, field: str, vocab: FieldVocab) -> tuple[str, str]:
    """(title, abstract) about one subtopic. The abstract opens with a topical template on the
    title's slots, may add a second topical one and an aside into another field, and is
    padded with field-neutral sentences to a drawn length; a few abstracts are empty."""
    slots = _slots(rng, vocab)
    title = _capitalize(rng.choice(TITLE_TEMPLATES).format(**slots))
    if rng.random() < MISSING_ABSTRACT:
        return title, ""
    target = _abstract_length(rng)
    first, second = rng.sample(ABSTRACT_TEMPLATES, 2)
    sentences = [first.format(**slots)]
    if target > 80:
        sentences.append(second.format(**_slots(rng, vocab)))
    if rng.random() < CROSS_FIELD_ASIDE:
        other = FIELDS[rng.choice([name for name in FIELDS if name != field])]
        sentences.append(rng.choice(CROSS_FIELD_TEMPLATES).format(**_slots(rng, other)))
    words = sum(len(sentence.split()) for sentence in sentences)
    padding = _padding(rng, target - words)
    return title, " ".join([sentences[0], padding, *sentences[1:]] if padding else sentences)


def _abstract_length(rng: random.Random) -> int:
    low, high = ABSTRACT_WORDS
    return int(low * (high / low) ** rng.random())


def _padding(rng: random.Random, words: int) -> str:
    """Distinct field-neutral sentences adding up to about `words` words (none if words <= 0)."""
    sentences, count = [], 0
    for sentence in rng.sample(GENERIC_SENTENCES, len(GENERIC_SENTENCES)):
        if count >= words:
            break
        sentences.append(sentence)
        count += len(sentence.split())
    return " ".join(sentences)


def _neutral_title(rng: random.Random) -> str:
    """An editorial's title that fits any field equally."""
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


# --- users ----------------------------------------------------------------------------------------------------


def _profile_length(rng: random.Random) -> int:
    """Log-uniform in [MIN_PROFILE, MAX_PROFILE): many short profiles, some long ones."""
    return int(MIN_PROFILE * (MAX_PROFILE / MIN_PROFILE) ** rng.random())


def _balanced_flags(rng: random.Random, n: int) -> list[bool]:
    """n flags, half True (rounded at random), in random order: whether the correct
    candidate comes first. Exact balance keeps "always [1]" at chance for every seed."""
    flags = [i < n // 2 + (n % 2) * rng.randrange(2) for i in range(n)]
    rng.shuffle(flags)
    return flags


def _interests(rng: random.Random) -> tuple[list[Topic], list[float]]:
    """A user's interests (distinct subtopics) and their weights, largest first."""
    count = rng.choices(list(INTEREST_COUNTS), weights=list(INTEREST_COUNTS.values()))[0]
    topics: list[Topic] = []
    while len(topics) < count:
        if topics and rng.random() < SAME_FIELD_INTEREST:
            topic = (rng.choice(topics)[0], rng.randrange(SUBTOPICS))
        else:
            topic = (rng.choice(list(FIELDS)), rng.randrange(SUBTOPICS))
        if topic not in topics:
            topics.append(topic)
    weights = sorted((rng.expovariate(1.0) for _ in topics), reverse=True)  # a flat Dirichlet draw
    return topics, [w / sum(weights) for w in weights]


def _spread(rng: random.Random, topic: Topic, chance: float) -> Topic:
    """`topic`, or with probability `chance` another subtopic of its field."""
    if rng.random() >= chance:
        return topic
    return topic[0], rng.choice([s for s in range(SUBTOPICS) if s != topic[1]])


def _draw_profile(rng: random.Random, topics: list[Topic], weights: list[float],
                  pools: dict[Topic, list[Paper]], editorials: list[Paper]) -> list[Paper]:
    length = _profile_length(rng)
    interest_fields = {name for name, _ in topics}
    off_topic = int(length * rng.uniform(*OFF_TOPIC_SHARE) + rng.random())  # stochastic rounding
    n_editorials = sum(rng.random() < EDITORIAL_SHARE for _ in range(length - off_topic))
    other_fields = [name for name in FIELDS if name not in interest_fields]
    draws = [_spread(rng, rng.choices(topics, weights=weights)[0], INTEREST_SPREAD)
             for _ in range(length - off_topic - n_editorials)]
    draws += [(rng.choice(other_fields), rng.randrange(SUBTOPICS)) for _ in range(off_topic)]
    # No pool is used up, so every topic keeps papers to cite. A long profile's overflow goes
    # to the field's other subtopics, as prolific authors broaden, then to any topic.
    cap = int(len(next(iter(pools.values()))) * POOL_USE)
    wanted: Counter[Topic] = Counter()
    for topic in draws:
        if wanted[topic] >= cap:
            room = [(topic[0], s) for s in range(SUBTOPICS) if wanted[(topic[0], s)] < cap]
            topic = rng.choice(room or [t for t in pools if wanted[t] < cap])
        wanted[topic] += 1
    profile = rng.sample(editorials, n_editorials)
    for topic in sorted(wanted):
        profile.extend(rng.sample(pools[topic], wanted[topic]))
    rng.shuffle(profile)
    return profile


def _make_question(rng: random.Random, question_id: str, correct_first: bool, pools: dict[Topic, list[Paper]],
                   editorials: list[Paper]) -> tuple[dict, dict]:
    """One user: (questions record, gold record)."""
    topics, weights = _interests(rng)
    profile = _draw_profile(rng, topics, weights, pools, editorials)
    own = rng.choices(topics, weights=weights)[0]  # the new paper's interest
    written = _spread(rng, own, INTEREST_SPREAD)  # like any of the user's papers, maybe a neighbouring subtopic
    title = _draft_title(rng, subtopic_vocab(FIELDS[written[0]], written[1]))
    if rng.random() < NEUTRAL_INPUT_TITLE:
        title = _neutral_title(rng)
    cited = _spread(rng, rng.choice(topics), CITE_FIELD_SPREAD)  # any interest, whatever its weight
    if rng.random() < NEAR_NEGATIVE:
        # From the new paper's field, on a subtopic the user does not work on where possible.
        near = [(own[0], s) for s in range(SUBTOPICS) if (own[0], s) not in topics and (own[0], s) != cited]
        other = rng.choice(near or [(own[0], s) for s in range(SUBTOPICS) if (own[0], s) != cited])
    else:
        other = (rng.choice([name for name in FIELDS if name != cited[0]]), rng.randrange(SUBTOPICS))

    # Neither candidate may appear verbatim in the profile, so copying is never the answer.
    in_profile = {paper.title for paper in profile} | {title}
    correct = rng.choice([paper for paper in pools[cited] if paper.title not in in_profile])
    wrong = rng.choice([paper for paper in pools[other] if paper.title not in in_profile])
    first, second = (correct, wrong) if correct_first else (wrong, correct)
    question = {
        "id": question_id,
        "input": QUESTION_TEMPLATE.format(title=title, ref1=first.title, ref2=second.title),
        "profile": [{"id": paper.id, "title": paper.title, "abstract": paper.abstract} for paper in profile],
    }
    return question, {"id": question_id, "output": "[1]" if correct_first else "[2]"}
