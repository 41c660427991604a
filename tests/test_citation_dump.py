"""LaMP-1 data from a citation dump: format, author-disjoint split, determinism, leak audit.

A small dump is built in code: regular authors whose papers cite a shared pool of papers
written by outsiders (plus self-citations and references to papers not in the dump), a
ring of co-authored papers, and one planted leak: an author whose own paper carries the
title (differently cased and spaced) of the one paper all their other papers cite.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from dataset.download.citation_dump import (AUDIT_FILE, LIST_SEPARATOR, CitationDumpError, build_citation_lamp1, build_drafts,
                                   main, normalize_title, read_dump)
from dataset.lamp import LaMPExample, load_split

SPLITS = ("train", "dev", "test")
PROFILE_FIELDS = ("title", "abstract")
QUESTION = re.compile(r'^For an author who has written the paper with the title "(.+)", which reference is related\? '
                      r'Just answer with \[1\] or \[2\] without explanation\. \[1\]: "(.+)" \[2\]: "(.+)"$')
N_AUTHORS = 12
N_POOL = 24
LEAKY = "Lea Leaky"
LEAK_TITLE = "Graph kernels for molecules"  # the pool paper the leaky author always cites
LEAK_COPY = "GRAPH  kernels for Molecules "  # the leaky author's own paper: same title, normalised
BUILD = dict(seed=0, dev_fraction=0.2, test_fraction=0.2, per_author=2)


def make_papers() -> list[dict]:
    """The test dump as JSON-lines records (77 papers, 13 authors with questions)."""
    papers = []
    for k in range(N_POOL):
        title = f'Cited work {k}: "fast", robust' if k == 3 else f"Cited work {k} on topic {k % 5}"
        papers.append(_paper(f"pool-{k}", title, [f"Outsider {k}"], []))
    papers.append(_paper("pool-leak", LEAK_TITLE, ["Outsider leak"], []))
    for i in range(N_AUTHORS):
        for j in range(4):
            references = [f"pool-{(2 * i + j) % N_POOL}", f"pool-{(3 * i + 2 * j + 5) % N_POOL}", "not-in-dump"]
            if j > 0:
                references.append(f"a{i}-p{j - 1}")  # a self-citation: must never be the answer
            # Paper 0 is co-written with the next author, so profiles share papers across authors.
            authors = [f"Author {i}", f"Author {(i + 1) % N_AUTHORS}"] if j == 0 else [f"Author {i}"]
            papers.append(_paper(f"a{i}-p{j}", f"Paper {j} by author {i}", authors, references))
    papers.append(_paper("leaky-copy", LEAK_COPY, [LEAKY], []))
    for j in range(3):
        papers.append(_paper(f"leaky-p{j}", f"Leaky paper {j}", [LEAKY], ["pool-leak", "leaky-copy"]))
    return papers


def _paper(paper_id: str, title: str, authors: list[str], references: list[str]) -> dict:
    abstract = f"We study {title.lower()}.\nResults follow." if paper_id == "pool-1" else f"We study {title.lower()}."
    return {"id": paper_id, "title": title, "abstract": abstract, "authors": authors, "references": references}


def write_jsonl(path: Path, papers: list[dict]) -> Path:
    path.write_text("".join(json.dumps(paper) + "\n" for paper in papers), encoding="utf-8")
    return path


def write_csv(path: Path, papers: list[dict]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "abstract", "authors", "references", "year"])  # extra column ignored
        for paper in papers:
            writer.writerow([paper["id"], paper["title"], paper["abstract"], LIST_SEPARATOR.join(paper["authors"]),
                             LIST_SEPARATOR.join(paper["references"]), "2020"])
    return path


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("dump") / "papers.jsonl", make_papers())


@pytest.fixture(scope="module")
def built(dump, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("built")
    build_citation_lamp1(dump, out, **BUILD)
    return out


@pytest.fixture(scope="module")
def splits(built) -> dict[str, list[LaMPExample]]:
    return {split: load_split(built, "LaMP-1", split, PROFILE_FIELDS) for split in SPLITS}


PAPERS = {paper["id"]: paper for paper in make_papers()}
BY_TITLE = {paper["title"]: paper for paper in PAPERS.values()}  # raw titles are unique


def parse(example: LaMPExample) -> tuple[dict, dict, dict]:
    """-> (query paper, correct paper, wrong paper) of a question."""
    match = QUESTION.match(example.input)
    assert match, example.input
    query, first, second = (BY_TITLE[title] for title in match.groups())
    return (query, first, second) if example.output == "[1]" else (query, second, first)


def author_of(example: LaMPExample) -> str:
    """The one author who wrote the query and every profile paper."""
    query, _, _ = parse(example)
    common = set(query["authors"]).intersection(*(PAPERS[item["id"]]["authors"] for item in example.profile))
    assert len(common) == 1, (example.id, common)
    return common.pop()


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((folder / "LaMP_1").iterdir())}


def test_reads_back_as_official_lamp1(splits):
    assert all(splits[split] for split in SPLITS)
    for examples in splits.values():
        for example in examples:
            assert example.output in ("[1]", "[2]")
            assert QUESTION.match(example.input)
            assert all(set(item) == {"id", "title", "abstract"} for item in example.profile)


def test_splits_are_author_disjoint_and_cover_every_author(splits):
    authors = {split: {author_of(example) for example in splits[split]} for split in SPLITS}
    assert not authors["train"] & authors["dev"]
    assert not authors["train"] & authors["test"]
    assert not authors["dev"] & authors["test"]
    assert set().union(*authors.values()) == {f"Author {i}" for i in range(N_AUTHORS)} | {LEAKY}
    # per_author=2: every author has two questions, on two different query papers.
    per_author = Counter(author_of(example) for examples in splits.values() for example in examples)
    assert set(per_author.values()) == {2}
    ids = [example.id for examples in splits.values() for example in examples]
    assert len(ids) == len(set(ids))


def test_correct_candidate_is_cited_and_wrong_one_is_not(splits):
    for examples in splits.values():
        for example in examples:
            author = author_of(example)
            query, correct, wrong = parse(example)
            assert correct["id"] in query["references"]
            assert wrong["id"] not in query["references"]
            assert author not in correct["authors"], "a self-citation became the answer"
            assert author not in wrong["authors"]
            assert normalize_title(wrong["title"]) != normalize_title(correct["title"])


def test_candidate_rules_hold_for_every_seed(dump):
    """The same rules on the drafts of many seeds: one seed's 26 questions may dodge a bug."""
    papers = read_dump(dump).papers
    for seed in range(10):
        drafts = build_drafts(papers, seed=seed, min_profile=2, max_profile=512, per_author=4)
        for author, questions in drafts.items():
            own_titles = {paper.norm_title for paper in papers if author in paper.authors}
            for draft in questions:
                assert author in draft.query.authors
                assert draft.positive.id in draft.query.references and author not in draft.positive.authors
                assert draft.negative.id not in draft.query.references and author not in draft.negative.authors
                assert draft.negative.norm_title not in own_titles | {draft.positive.norm_title}
                assert draft.query.id not in {paper.id for paper in draft.profile}
                assert all(author in paper.authors for paper in draft.profile)


def test_wrong_candidate_avoids_lookalikes(tmp_path):
    """Copies of the author's own titles and of the cited title, under other authors and
    ids, are as bad a wrong candidate as the papers themselves; only "n" qualifies."""
    papers = [_paper("cited", "The cited paper", ["Outsider"], []),
              _paper("cited-copy", "the  CITED paper", ["Copier"], []),
              _paper("n", "An unrelated paper", ["Outsider"], [])]
    for j in range(4):
        papers.append(_paper(f"own-{j}", f"Own paper {j}", ["Ann"], ["cited"]))
        papers.append(_paper(f"own-copy-{j}", f"own paper {j}", ["Copier"], []))
    dump = read_dump(write_jsonl(tmp_path / "lookalikes.jsonl", papers)).papers
    for seed in range(10):
        drafts = build_drafts(dump, seed=seed, min_profile=2, max_profile=512, per_author=4)
        assert {draft.negative.id for draft in drafts["Ann"]} == {"n"}
        assert len(drafts["Ann"]) == 4 and set(drafts) == {"Ann"}


def test_titles_match_up_to_case_and_whitespace():
    assert normalize_title("  Graph\tKernels  for\nMOLECULES ") == normalize_title("graph kernels for molecules")
    assert normalize_title("Graph kernels") != normalize_title("Graph kernel")


def test_profile_is_the_authors_other_papers(splits):
    for examples in splits.values():
        for example in examples:
            author = author_of(example)
            query, _, _ = parse(example)
            ids = [item["id"] for item in example.profile]
            assert query["id"] not in ids
            expected = [pid for pid, paper in PAPERS.items() if author in paper["authors"] and pid != query["id"]]
            assert ids == expected  # every other paper, in dump order (well under --max-profile)
            for item in example.profile:
                # Titles go into a one-line question, so their whitespace is collapsed.
                assert item["title"] == " ".join(PAPERS[item["id"]]["title"].split())
                assert item["abstract"] == PAPERS[item["id"]]["abstract"]


def test_golds_are_balanced_per_split(splits):
    for examples in splits.values():
        counts = Counter(example.output for example in examples)
        assert abs(counts["[1]"] - counts["[2]"]) <= 1, counts


def test_same_seed_same_bytes_other_seed_other_data(dump, built, tmp_path):
    build_citation_lamp1(dump, tmp_path / "again", **BUILD)
    assert files(tmp_path / "again") == files(built)
    build_citation_lamp1(dump, tmp_path / "seed1", **{**BUILD, "seed": 1})
    assert files(tmp_path / "seed1")["train_questions.json"] != files(built)["train_questions.json"]


def test_csv_dump_gives_the_same_data(built, tmp_path):
    papers = make_papers()
    build_citation_lamp1(write_csv(tmp_path / "papers.csv", papers), tmp_path / "csv", **BUILD)
    assert files(tmp_path / "csv") == files(built)


def test_leak_audit_finds_exactly_the_planted_leak(built, splits):
    audit = json.loads((built / "LaMP_1" / AUDIT_FILE).read_text(encoding="utf-8"))
    leaky = {example.id for examples in splits.values() for example in examples if author_of(example) == LEAKY}
    assert len(leaky) == 2
    found = {i for split in SPLITS for i in audit["splits"][split]["ids"]}
    assert found == leaky
    assert audit["total"] == {"examples": 2 * (N_AUTHORS + 1), "leaks": 2, "fraction": 2 / 26, "dropped": 0}
    for split in SPLITS:
        entry = audit["splits"][split]
        assert entry["leaks"] == len(entry["ids"])
        assert entry["fraction"] == pytest.approx(entry["leaks"] / entry["examples"])
        for detail in entry["details"]:
            assert (detail["author"], detail["correct_paper"], detail["profile_paper"]) == (
                LEAKY, "pool-leak", "leaky-copy")


def test_drop_leaks_removes_only_the_leaks(dump, built, splits, tmp_path, capsys):
    out = tmp_path / "dropped"
    assert main(["--dump", str(dump), "--out", str(out), "--dev-fraction", "0.2", "--test-fraction", "0.2",
                 "--per-author", "2", "--drop-leaks"]) == 0
    summary = capsys.readouterr().out
    assert "total: 2 of 26 questions leak (7.7%); 2 dropped" in summary
    audit = json.loads((out / "LaMP_1" / AUDIT_FILE).read_text(encoding="utf-8"))
    assert audit["drop_leaks"] is True and audit["total"]["dropped"] == 2
    leaked = {i for split in SPLITS for i in audit["splits"][split]["ids"]}
    for split in SPLITS:
        kept = load_split(out, "LaMP-1", split, PROFILE_FIELDS)
        # Every other question is unchanged: same id, text, profile and gold.
        expected = [example for example in splits[split] if example.id not in leaked]
        assert [(e.id, e.input, e.profile, e.output) for e in kept] == [
            (e.id, e.input, e.profile, e.output) for e in expected]


def test_profile_limits(dump, tmp_path):
    build_citation_lamp1(dump, tmp_path / "capped", **{**BUILD, "max_profile": 2})
    capped = [e for split in SPLITS for e in load_split(tmp_path / "capped", "LaMP-1", split, PROFILE_FIELDS)]
    assert capped and all(len(example.profile) == 2 for example in capped)
    # Regular authors have 5 papers (one co-written), the leaky author 4: profiles of 4
    # leave only regular authors, and no one has 6 papers for a profile of 5.
    build_citation_lamp1(dump, tmp_path / "min4", **{**BUILD, "min_profile": 4})
    long = [e for split in SPLITS for e in load_split(tmp_path / "min4", "LaMP-1", split, PROFILE_FIELDS)]
    assert long and all(len(example.profile) == 4 for example in long)
    assert all(author_of(example) != LEAKY for example in long)
    with pytest.raises(CitationDumpError, match="no author has a question.*--min-profile"):
        build_citation_lamp1(dump, tmp_path / "min5", **{**BUILD, "min_profile": 5})


def test_reads_dblp_citation_network_v12_layout(tmp_path):
    records = [
        {"id": 11, "title": "Deep  nets\n", "authors": [{"name": "Ann Lee", "org": "Uni", "id": 7},
                                                        {"name": "Bo Chen"}],
         "indexed_abstract": {"IndexLength": 4, "InvertedIndex": {"deep": [0, 2], "nets": [1], "work": [3]}},
         "references": [12, 99], "venue": {"raw": "X"}, "year": 2019},
        {"id": 12, "title": "Shallow nets", "authors": [{"name": "Bo Chen", "id": 8}], "abstract": "Plain text.",
         "references": []},
    ]
    path = tmp_path / "dblp.v12.json"
    path.write_text("[\n" + json.dumps(records[0]) + "\n," + json.dumps(records[1]) + "\n]\n", encoding="utf-8")
    dump = read_dump(path)
    first, second = dump.papers
    assert (first.id, first.title, first.abstract) == ("11", "Deep nets", "deep nets deep work")
    assert first.authors == ("7", "Bo Chen") and first.references == ("12", "99")
    assert (second.authors, second.references, second.line) == (("8",), (), 3)


def test_malformed_json_line_names_file_and_line(tmp_path):
    lines = [json.dumps(paper) for paper in make_papers()[:2]] + ['{"id": "x", "title": ']
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(CitationDumpError, match=r"broken\.jsonl: line 3: malformed JSON"):
        read_dump(path)


def test_missing_field_names_file_line_and_field(tmp_path):
    papers = make_papers()[:3]
    del papers[1]["abstract"]
    path = write_jsonl(tmp_path / "gap.jsonl", papers)
    with pytest.raises(CitationDumpError, match=r"gap\.jsonl: line 2: required field\(s\) 'abstract' missing"):
        read_dump(path)
    lenient = read_dump(path, lenient=True)
    assert [paper.id for paper in lenient.papers] == [papers[0]["id"], papers[2]["id"]] and lenient.skipped == 1

    path = tmp_path / "short.csv"
    # Row 2's abstract spans two lines, so the short row starts on line 4.
    path.write_text('id,title,abstract,authors,references\na,T1,"two\nlines",X,\nb,T2\n', encoding="utf-8")
    with pytest.raises(CitationDumpError, match=r"short\.csv: line 4: required field\(s\) 'abstract', 'authors', "
                                                r"'references' missing"):
        read_dump(path)


def test_other_bad_input_gets_clear_errors(dump, tmp_path, capsys):
    with pytest.raises(CitationDumpError, match="nowhere.jsonl: file not found"):
        read_dump(tmp_path / "nowhere.jsonl")
    (tmp_path / "papers.xml").write_text("<dblp/>", encoding="utf-8")
    with pytest.raises(CitationDumpError, match="unknown extension '.xml'"):
        read_dump(tmp_path / "papers.xml")
    papers = make_papers()[:2]
    papers[1]["id"] = papers[0]["id"]
    with pytest.raises(CitationDumpError, match="line 2: field \"id\" 'pool-0' repeats the paper of line 1"):
        read_dump(write_jsonl(tmp_path / "dup.jsonl", papers))
    papers[1]["authors"] = "Ann;Bo"
    with pytest.raises(CitationDumpError, match="line 2: field \"authors\" is a string, expected a list"):
        read_dump(write_jsonl(tmp_path / "authors.jsonl", papers))
    # Official (or embedded) LaMP-1 data in the output folder is never overwritten.
    official = tmp_path / "lamp" / "LaMP_1"
    official.mkdir(parents=True)
    (official / "train_questions.json").write_text("[]", encoding="utf-8")
    assert main(["--dump", str(dump), "--out", str(tmp_path / "lamp")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (official / "train_questions.json").read_text(encoding="utf-8") == "[]"
    with pytest.raises(CitationDumpError, match="--dev-fraction must be in.*--per-author must be at least 1"):
        build_citation_lamp1(dump, tmp_path / "opts", dev_fraction=1.5, per_author=0)
