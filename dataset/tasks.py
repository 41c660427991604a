"""The one place that defines a LaMP task: labels, profile fields, retrieval, metrics, budgets.

Adding a task means adding one TaskSpec to TASKS: how one of its profile items reads for
the history encoder, how a retriever gets a query from the question and a document from a
profile item, and which metrics score it. Nothing else (trainer, collator, evaluator)
needs to change.

The retrieval query and corpus follow LaMP's `*_query_corpus_maker` (`LaMP/prompts/prompts.py`):
LaMP-1 queries with the two candidate titles, the other tasks with the text after the
question's fixed instruction ("article:", "review:", ...), and each task's corpus joins
the same profile fields LaMP's BM25/Contriever index; `rag` writes them with the task's
`create_*_prompt` template (RagFormat).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from dataset.numeric import KINDS as NUMERIC_KINDS

ProfileItem = Mapping[str, Any]

# LaMP-2 (movie tagging, the benchmark's current LaMP-2) answers with one of these tags,
# in the order of LaMP's `data/datasets.py`; macro-F1 is taken over this list.
LAMP2_MOVIE_TAGS: tuple[str, ...] = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)

# LaMP-3 ratings as the model writes them; scored as numbers (MAE/RMSE), not as labels.
LAMP3_SCORES: tuple[str, ...] = ("1", "2", "3", "4", "5")


@dataclass(frozen=True)
class RagFormat:
    """How LaMP's `create_*_prompt` (`LaMP/prompts/prompts.py`) writes retrieved items.

    Each item becomes `item` filled from its fields, with the `shorten` field cut to the
    item's share of the budget; items are joined by ", and ". The share is LaMP's
    arithmetic (dataset/retrieval/): the budget, less `spare` tokens, less 2 per joiner,
    less the tokens of `reserve`, split evenly; an item's field gets its share less the
    item's fixed cost, `frame`: the tokens of that template filled from the item (LaMP
    measures the item with a blank in place of the cut field, in its own words, which are
    not always `item`'s), or a fixed count (LaMP-1 counts 2 for the quotes).
    `placement` puts the items in the question: "after_title" right after the word "title"
    (LaMP-1), "before" writes "<items><lead><question>".
    """

    item: str  # e.g. '"{title}" is the title for "{text}" '
    shorten: str  # the field that is cut to the budget
    frame: str | int  # e.g. '"{title}" is the title for " " ', or 2
    placement: str = "before"  # "before" | "after_title"
    lead: str = ". "  # between the items and the question (placement "before")
    reserve: str = ""  # text whose tokens LaMP takes off the items' budget (LaMP-5, LaMP-7)
    spare: int = 1  # tokens LaMP keeps back from the items' budget (none for LaMP-1)


@dataclass(frozen=True)
class TaskSpec:
    """Everything the data pipeline, model, retriever and metrics need to know about one task."""

    name: str  # "LaMP-1"
    # The closed set of outputs the task allows (LaMP-1..3), None for free text. Scoring
    # is chosen by `metrics`, not by this: LaMP-3 has labels but is scored as a number.
    labels: tuple[str, ...] | None
    profile_fields: tuple[str, ...]  # fields each profile item must have
    metrics: tuple[str, ...]  # e.g. ("accuracy", "f1"); names known to trainers.metrics
    max_new_tokens: int  # generation budget for this task's outputs
    render_profile_item: Callable[[ProfileItem], str] = field(repr=False, compare=False)
    corpus_fields: tuple[str, ...]  # profile fields a retriever indexes, joined in this order
    # Question text -> the part a retriever should search the profile with.
    extract_query: Callable[[str], str] = field(repr=False, compare=False)
    rag: RagFormat  # how the `rag` baseline writes retrieved items into the question
    # (profile field, kind) pairs the numeric-signal path reads (dataset/numeric.py); items
    # lacking a field just leave its slot empty.
    numeric_fields: tuple[tuple[str, str], ...] = ()
    # The profile field that holds the user's own answer of this task's kind (LaMP-2 the
    # tag, LaMP-3 the score, LaMP-4..7 the title or tweet), which the untrained profile
    # rule answers with; None when profile items answer no such question (LaMP-1's papers).
    profile_output: str | None = None
    # Question text -> the answer options it spells out, one text per label in label order
    # (LaMP-1: its two references); () where the labels are the same for every question.
    extract_candidates: Callable[[str], tuple[str, ...]] = field(default=lambda _: (), repr=False, compare=False)

    def __post_init__(self) -> None:
        # Checked at import, so a mistyped spec fails loudly before any data is read.
        if self.labels is not None and not self.labels:
            raise ValueError(f"TaskSpec {self.name}: labels is empty; use None for a free-text task")
        if self.max_new_tokens <= 0:
            raise ValueError(f"TaskSpec {self.name}: max_new_tokens must be positive, got {self.max_new_tokens}")
        if not self.metrics:
            raise ValueError(f"TaskSpec {self.name}: metrics is empty; name at least one metric")
        unknown = [name for name in self.corpus_fields if name not in self.profile_fields]
        if unknown:
            raise ValueError(f"TaskSpec {self.name}: corpus_fields {unknown} are not in profile_fields "
                             f"{self.profile_fields}; the loader would not guarantee them. Add them there.")
        bad_kinds = [kind for _, kind in self.numeric_fields if kind not in NUMERIC_KINDS]
        if bad_kinds:
            raise ValueError(f"TaskSpec {self.name}: numeric kinds {bad_kinds} are not among {NUMERIC_KINDS}")
        if self.profile_output is not None and self.profile_output not in self.profile_fields:
            raise ValueError(f"TaskSpec {self.name}: profile_output {self.profile_output!r} is not in profile_fields "
                             f"{self.profile_fields}")
        templates = [self.rag.item] + ([self.rag.frame] if isinstance(self.rag.frame, str) else [])
        rag_fields = {name for text in templates for _, name, _, _ in string.Formatter().parse(text) if name}
        rag_fields |= {self.rag.shorten}
        if not rag_fields <= set(self.profile_fields):
            raise ValueError(f"TaskSpec {self.name}: the rag format uses fields {sorted(rag_fields)}, but "
                             f"profile_fields is {self.profile_fields}")

    def profile_text(self, item: ProfileItem) -> str:
        """Text of one profile item for the history encoder."""
        return self.render_profile_item(item)

    def retrieval_query(self, input_text: str) -> str:
        """The part of a question a retriever searches the user's profile with."""
        return self.extract_query(input_text)

    def candidates(self, input_text: str) -> tuple[str, ...]:
        """The answer options the question itself spells out (LaMP-1's references), else ()."""
        return self.extract_candidates(input_text)

    def retrieval_text(self, item: ProfileItem) -> str:
        """One profile item as a retrieval document: its corpus fields joined by spaces."""
        parts = (str(item[name]).strip() for name in self.corpus_fields)
        return " ".join(part for part in parts if part)


def join_sentences(*parts: object) -> str:
    """Join text parts into sentences: strip each, skip empty ones, and add a period only
    between parts where the earlier one lacks final punctuation (no "title.. Abstract")."""
    pieces = [str(part).strip() for part in parts]
    pieces = [piece for piece in pieces if piece]
    joined = [piece if piece.endswith((".", "?", "!")) else piece + "." for piece in pieces[:-1]]
    return " ".join(joined + pieces[-1:])


# --- retrieval queries ------------------------------------------------------------------------------------
# When a question does not have the expected shape, every extractor falls back to the
# whole question: the query only ranks profile items, and the whole question still
# carries the words that matter, whereas LaMP's code would crash on such a record.

# LaMP-1: '... with the title "T", which reference is related? ... [1]: "A" [2]: "B"'.
# Anchoring on the "[1]:"/"[2]:" markers rather than counting quotes (as LaMP does) keeps
# the query right when the paper title itself contains quotes.
_LAMP1_CANDIDATES = re.compile(r'\[1\]:\s*"(?P<first>.*)"\s*\[2\]:\s*"(?P<second>.*)"\s*$', re.DOTALL)


def lamp1_candidates(input_text: str) -> tuple[str, str] | None:
    """The two candidate references of a LaMP-1 question, or None if it has no such shape."""
    match = _LAMP1_CANDIDATES.search(input_text)
    return None if match is None else (match["first"].strip(), match["second"].strip())


def lamp1_paper_title(input_text: str) -> str | None:
    """The user's own paper in '... the paper with the title "T", which reference ...', or None."""
    start = input_text.find('title "')
    end = input_text.find('",', start + 7)
    return input_text[start + 7:end] if start >= 0 and end >= 0 else None


def _lamp1_query(input_text: str) -> str:
    # LaMP searches with the two candidate references, not the user's own paper title:
    # the profile paper that resembles a candidate is the evidence for picking it.
    candidates = lamp1_candidates(input_text)
    return input_text.strip() if candidates is None else " ".join(candidates)


def text_after(marker: str) -> Callable[[str], str]:
    """A query extractor: the question text after the first `marker`, stripped."""

    def extract(input_text: str) -> str:
        position = input_text.find(marker)
        if position < 0:
            return input_text.strip()
        return input_text[position + len(marker):].strip()

    return extract


# --- profile texts for the history encoder ----------------------------------------------------------------
# The short, decisive field (tag, rating, title) goes first: the encoder truncates long
# items, and the label of a long review or movie plot must survive that.


def _lamp1_profile_text(item: ProfileItem) -> str:
    # LaMP-1 profile items are the author's papers; title and abstract carry the topic.
    return join_sentences(item["title"], item["abstract"])


def _lamp2_profile_text(item: ProfileItem) -> str:
    # A movie the user tagged: the tag is what the model must learn to predict.
    return join_sentences(f"Tag: {str(item['tag']).strip()}", item["description"])


def _lamp3_profile_text(item: ProfileItem) -> str:
    # A review with the rating the user gave; str() because a score may be stored as a number.
    return join_sentences(f"Rating: {str(item['score']).strip()} out of 5", item["text"])


def _titled_text_profile_text(item: ProfileItem) -> str:
    # LaMP-4 headline + article, LaMP-6 subject + email: the user's titling style.
    return join_sentences(item["title"], item["text"])


def _lamp5_profile_text(item: ProfileItem) -> str:
    # The user's own paper title followed by its abstract.
    return join_sentences(item["title"], item["abstract"])


def _lamp7_profile_text(item: ProfileItem) -> str:
    # A past tweet of the user; its wording is the style to imitate.
    return str(item["text"]).strip()


_CLASSIFICATION = ("accuracy", "f1")
_REGRESSION = ("mae", "rmse")
_GENERATION = ("rouge-1", "rouge-L")
# Profile items that carry a date (a time-ordered export, the embedded LaMP-3) give it to
# the numeric-signal path; items without one leave the slot empty.
_DATED = (("date", "date"),)

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="LaMP-1",  # personalized citation identification, answer "[1]" or "[2]"
            labels=("[1]", "[2]"),
            profile_fields=("title", "abstract"),
            metrics=_CLASSIFICATION,
            max_new_tokens=4,
            render_profile_item=_lamp1_profile_text,
            corpus_fields=("title", "abstract"),
            extract_query=_lamp1_query,
            extract_candidates=lambda text: lamp1_candidates(text) or (),
            rag=RagFormat('"{title}"', "title", frame=2, placement="after_title", spare=0),
            numeric_fields=_DATED,
        ),
        TaskSpec(
            name="LaMP-2",  # personalized movie tagging, one of 15 tags
            labels=LAMP2_MOVIE_TAGS,
            profile_fields=("description", "tag"),
            metrics=_CLASSIFICATION,
            max_new_tokens=8,  # longest tags ("social commentary") take a few subword tokens
            render_profile_item=_lamp2_profile_text,
            # The tag is left out of the corpus: the query (a plot) has no tag to match.
            corpus_fields=("description",),
            extract_query=text_after("description:"),
            rag=RagFormat('the tag for the movie: "{description}" is "{tag}" ', "description",
                          frame='the tag for the movie: " " is "{tag}" '),
            numeric_fields=_DATED,
            profile_output="tag",
        ),
        TaskSpec(
            name="LaMP-3",  # personalized product rating, 1-5
            labels=LAMP3_SCORES,
            profile_fields=("text", "score"),
            metrics=_REGRESSION,
            max_new_tokens=4,
            render_profile_item=_lamp3_profile_text,
            corpus_fields=("text",),
            extract_query=text_after("review:"),
            rag=RagFormat('{score} is the score for "{text}" ', "text", frame='{score} is the score for " " '),
            numeric_fields=(("score", "rating"), *_DATED),
            profile_output="score",
        ),
        TaskSpec(
            name="LaMP-4",  # personalized news headline generation
            labels=None,
            profile_fields=("text", "title"),
            metrics=_GENERATION,
            max_new_tokens=64,  # headlines are rarely over 30 tokens; headroom, EOS ends earlier
            render_profile_item=_titled_text_profile_text,
            corpus_fields=("title", "text"),
            extract_query=text_after("article:"),
            rag=RagFormat('"{title}" is the title for "{text}" ', "text", frame='"{title}" is the title for " " '),
            numeric_fields=_DATED,
            profile_output="title",
        ),
        TaskSpec(
            name="LaMP-5",  # personalized scholarly title generation
            labels=None,
            profile_fields=("abstract", "title"),
            metrics=_GENERATION,
            max_new_tokens=64,
            render_profile_item=_lamp5_profile_text,
            corpus_fields=("title", "abstract"),
            extract_query=text_after("paper:"),
            # LaMP measures the frame without the "for" it writes.
            rag=RagFormat('"{title}" is a title for "{abstract}" ', "abstract", frame='"{title}" is a title " " ',
                          lead=". Following the given patterns ", reserve="Following the given patterns"),
            numeric_fields=_DATED,
            profile_output="title",
        ),
        TaskSpec(
            name="LaMP-6",  # personalized email subject generation (Avocado corpus, not public)
            labels=None,
            profile_fields=("text", "title"),
            metrics=_GENERATION,
            max_new_tokens=64,
            render_profile_item=_titled_text_profile_text,
            corpus_fields=("text",),  # LaMP's retriever indexes the email bodies only
            extract_query=text_after(":"),
            rag=RagFormat('"{title}" is the title for "{text}" ', "text", frame='"{title}" is the title for " " '),
            numeric_fields=_DATED,
            profile_output="title",
        ),
        TaskSpec(
            name="LaMP-7",  # personalized tweet paraphrasing
            labels=None,
            profile_fields=("text",),
            metrics=_GENERATION,
            max_new_tokens=128,  # a tweet is at most 280 characters, under ~100 tokens
            render_profile_item=_lamp7_profile_text,
            corpus_fields=("text",),
            extract_query=text_after(":"),
            # LaMP reserves the tokens of "by user" but writes "by a person".
            rag=RagFormat('"{text}" ', "text", frame='"" ',
                          lead=" are written by a person. Following the given patterns ",
                          reserve="are written by user. Following the given patterns"),
            numeric_fields=_DATED,
            profile_output="text",
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """The TaskSpec called `name`; "LaMP_1" is accepted for "LaMP-1" as in folder names."""
    spec = TASKS.get(name) or TASKS.get(name.replace("_", "-"))
    if spec is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}")
    return spec
