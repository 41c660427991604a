"""Task specs: every LaMP task is defined, and each turns a hand-written record in the
official format into the expected history text, retrieval query and retrieval document."""

from __future__ import annotations

import json

import pytest

from dataset.lamp import read_lamp_split
from dataset.tasks import LAMP2_MOVIE_TAGS, TASKS, RagFormat, TaskSpec, get_task, text_after

# One official-format question per task (the instruction wording is LaMP's), the profile
# item it carries, and what the spec must make of them.
EXAMPLES = {
    "LaMP-1": dict(
        input='For an author who has written the paper with the title "Learning to rank", which reference is '
              'related? Just answer with [1] or [2] without explanation. [1]: "BM25 revisited" '
              '[2]: "Protein folding at scale"',
        item={"id": "10", "title": "Neural ranking", "abstract": "We rank documents."},
        # LaMP queries with the two candidate titles, not the author's own title.
        query="BM25 revisited Protein folding at scale",
        profile_text="Neural ranking. We rank documents.",
        retrieval_text="Neural ranking We rank documents.",
    ),
    "LaMP-2": dict(
        input="Which tag does this movie relate to among the following tags? Just answer with the tag name "
              "without further explanation. tags: [sci-fi, based on a book, comedy, action, twist ending, "
              "dystopia, dark comedy, classic, psychology, fantasy, romance, thought-provoking, social "
              "commentary, violence, true story] description: A detective hunts a killer.",
        item={"id": "20", "tag": "dark comedy", "description": "Two hitmen talk about burgers."},
        query="A detective hunts a killer.",
        profile_text="Tag: dark comedy. Two hitmen talk about burgers.",
        retrieval_text="Two hitmen talk about burgers.",  # no tag: the query has none to match
    ),
    "LaMP-3": dict(
        input="What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
              "or 5 without further explanation. review: Broke after two days.",
        item={"id": "30", "text": "Works fine, ships fast.", "score": "4"},
        query="Broke after two days.",
        profile_text="Rating: 4 out of 5. Works fine, ships fast.",
        retrieval_text="Works fine, ships fast.",
    ),
    "LaMP-4": dict(
        input="Generate a headline for the following article: The city council voted on Monday.",
        item={"id": "40", "text": "The vote was postponed.", "title": "Council delays budget"},
        query="The city council voted on Monday.",
        profile_text="Council delays budget. The vote was postponed.",
        retrieval_text="Council delays budget The vote was postponed.",
    ),
    "LaMP-5": dict(
        input="Generate a title for the following abstract of a paper: We propose a fast parser.",
        item={"id": "50", "abstract": "A parser that runs in linear time.", "title": "Parsing in linear time"},
        query="We propose a fast parser.",
        profile_text="Parsing in linear time. A parser that runs in linear time.",
        retrieval_text="Parsing in linear time A parser that runs in linear time.",
    ),
    "LaMP-6": dict(
        input="Generate a subject for the following email: Please send the report by Friday.",
        item={"id": "60", "text": "The report is due next week.", "title": "Report due"},
        query="Please send the report by Friday.",
        profile_text="Report due. The report is due next week.",
        retrieval_text="The report is due next week.",  # LaMP indexes email bodies only
    ),
    "LaMP-7": dict(
        input="Paraphrase the following tweet without any explanation before or after it: just landed "
              "in paris!! so tired",
        item={"id": "70", "text": " coffee first, then emails "},
        query="just landed in paris!! so tired",
        profile_text="coffee first, then emails",
        retrieval_text="coffee first, then emails",
    ),
}


def test_every_lamp_task_has_a_spec():
    assert sorted(TASKS) == [f"LaMP-{i}" for i in range(1, 8)]
    assert sorted(EXAMPLES) == sorted(TASKS)
    for name, spec in TASKS.items():
        assert spec.name == name
        assert get_task(name.replace("-", "_")) is spec


def test_metric_names_per_task():
    for name in ("LaMP-1", "LaMP-2"):
        assert get_task(name).metrics == ("accuracy", "f1")
    assert get_task("LaMP-3").metrics == ("mae", "rmse")
    for name in ("LaMP-4", "LaMP-5", "LaMP-6", "LaMP-7"):
        assert get_task(name).metrics == ("rouge-1", "rouge-L")
        assert get_task(name).labels is None


def test_label_lists():
    assert get_task("LaMP-1").labels == ("[1]", "[2]")
    # LaMP-2 is movie tagging: 15 distinct tags, in the order of LaMP's get_all_labels.
    assert get_task("LaMP-2").labels is LAMP2_MOVIE_TAGS
    assert len(set(LAMP2_MOVIE_TAGS)) == 15
    assert LAMP2_MOVIE_TAGS[0] == "sci-fi" and LAMP2_MOVIE_TAGS[-1] == "true story"
    assert get_task("LaMP-3").labels == ("1", "2", "3", "4", "5")


def test_budgets_and_corpus_fields_are_consistent():
    for spec in TASKS.values():
        assert spec.max_new_tokens > 0
        assert spec.corpus_fields and set(spec.corpus_fields) <= set(spec.profile_fields)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_official_example(tmp_path, name):
    """The record goes through the official reader (which checks the spec's profile
    fields), then the spec renders its profile item and query as written above."""
    spec, example = get_task(name), EXAMPLES[name]
    path = tmp_path / "dev_questions.json"
    path.write_text(json.dumps([{"id": "1", "input": example["input"], "profile": [example["item"]]}]))
    [loaded] = read_lamp_split(path, required_profile_fields=spec.profile_fields)
    item = loaded.profile[0]
    assert spec.profile_text(item) == example["profile_text"]
    assert spec.retrieval_query(loaded.input) == example["query"]
    assert spec.retrieval_text(item) == example["retrieval_text"]


def test_lamp3_score_may_be_a_number():
    assert get_task("LaMP-3").profile_text({"text": "Meh.", "score": 2}) == "Rating: 2 out of 5. Meh."


def test_lamp1_query_survives_quotes_in_the_paper_title():
    # Quoted strings here: 'The ', ' model', 'Graph cuts', 'Sparse codes'; taking the 2nd and 3rd
    # (LaMP's way) would query ' model Graph cuts' and lose the second candidate.
    text = ('For an author who has written the paper with the title "The "best" model", which reference is '
            'related? Just answer with [1] or [2] without explanation. [1]: "Graph cuts" [2]: "Sparse codes"')
    assert get_task("LaMP-1").retrieval_query(text) == "Graph cuts Sparse codes"


def test_query_falls_back_to_whole_input_when_shape_differs():
    assert get_task("LaMP-1").retrieval_query("  which of [1] or [2]?  ") == "which of [1] or [2]?"
    assert get_task("LaMP-4").retrieval_query(" Headline for this text ") == "Headline for this text"
    assert text_after("review:")("no marker here") == "no marker here"
    # Only the first marker counts, as in LaMP: a later "review:" stays in the query.
    assert text_after("review:")("review: a review: nested") == "a review: nested"


def test_retrieval_text_skips_empty_fields():
    # LaMP-5 corpus is title then abstract; an empty abstract leaves no trailing space.
    assert get_task("LaMP-5").retrieval_text({"title": " Parsing ", "abstract": ""}) == "Parsing"


def test_spec_rejects_corpus_field_the_loader_does_not_check():
    with pytest.raises(ValueError, match="corpus_fields.*'body'"):
        TaskSpec(name="LaMP-X", labels=None, profile_fields=("text",), metrics=("rouge-1",),
                 max_new_tokens=8, render_profile_item=str, corpus_fields=("body",),
                 extract_query=str.strip, rag=RagFormat('"{text}"', "text", frame=2))
    with pytest.raises(ValueError, match="max_new_tokens"):
        TaskSpec(name="LaMP-X", labels=None, profile_fields=("text",), metrics=("rouge-1",),
                 max_new_tokens=0, render_profile_item=str, corpus_fields=("text",),
                 extract_query=str.strip, rag=RagFormat('"{text}"', "text", frame=2))
