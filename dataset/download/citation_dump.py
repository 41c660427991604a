"""Extra LaMP-1 training data built from a citation dump (DBLP style), with a leak audit.

    python -m dataset.download.citation_dump --dump papers.jsonl --out DATA_DIR [--seed 0]
        [--dev-fraction 0.1] [--test-fraction 0.1] [--min-profile 2] [--max-profile 512]
        [--per-author 1] [--drop-leaks] [--lenient]

writes ``DATA_DIR/LaMP_1/{train,dev,test}_{questions,outputs}.json`` in LaMP's official
format (``dataset.lamp.load_split`` reads them) and ``DATA_DIR/LaMP_1/leak_audit.json``.

Input, one paper per record:

* JSON lines (``.jsonl``, ``.ndjson``, ``.json``): one object per line with ``id``,
  ``title``, ``abstract``, ``authors`` (a list of names or ids) and ``references`` (a
  list of cited paper ids). The field spellings of the DBLP-Citation-network releases
  (AMiner) are accepted too: ``authors`` as ``[{"name": ..., "id": ..., "org": ...}]``
  (the author id is the key when present, else the name), integer ids, and
  ``indexed_abstract`` (``{"IndexLength": n, "InvertedIndex": {word: [positions]}}``,
  v11/v12) in place of ``abstract``. v12 ships as one JSON array written one record per
  line (a ``[`` line, then records each prefixed by ``,``, then ``]``); that layout is
  read line by line too. Other fields (venue, year, fos, ...) are ignored. A dump that
  is not JSON line by line (a one-line array, v13's ``NumberInt(...)``) is rejected
  with the line that failed.
* CSV (``.csv``, UTF-8, header row): columns ``id,title,abstract,authors,references``
  (others ignored); ``authors`` and ``references`` hold several values joined by ``;``
  (LIST_SEPARATOR), e.g. ``Ada Lovelace;Alan Turing``. An empty ``references`` cell
  means the paper cites nothing.

Every field is required; a title, abstract or author list that is empty counts as
missing. ``--lenient`` accepts real dumps' gaps instead: papers without id, title,
abstract or authors are skipped (and counted), and a missing ``references`` is read as
"cites nothing" (such papers can still be profile items and negatives). References to
papers that are not in the dump are ignored.

Construction, per author (deterministic from the seed):

* a query paper is one of the author's papers that cites a paper in the dump the author
  did not write: that cited paper is the correct candidate. Self-citations are never
  the answer, because the author's own papers are the profile, and an answer copied
  from the profile would let a model score by copying instead of personalizing;
* the wrong candidate is a random paper of the dump that the query does not cite, the
  author did not write, and whose title is neither a cited title nor one of the
  author's titles;
* the profile is the author's other papers (never the query, nor a copy of it with the
  same title), at least ``--min-profile`` of them, a seeded sample of ``--max-profile``
  when there are more;
* up to ``--per-author`` questions per author; the correct candidate is [1] for half of
  each split's questions, in seeded random order.

Authors are split, not questions: every author's questions sit in exactly one split.

Leak audit: a question leaks when its correct candidate's title equals (case and
whitespace normalised) the title of a paper in the author's profile, so a model can copy
the answer from the history. The builder adds none of its own, but dumps hold duplicate
records (preprint and journal version, one paper under two ids); those are reported per
split, and ``--drop-leaks`` removes them.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, TextIO

from tqdm.auto import tqdm

from dataset.atomic import atomic_write_text
from dataset.embedded.lamp1 import QUESTION_TEMPLATE  # LaMP-1's official question wording

TASK_FOLDER = "LaMP_1"
SPLITS = ("train", "dev", "test")
AUDIT_FILE = "leak_audit.json"
GENERATOR = "dataset.citation_dump"  # in the audit file; marks a LaMP_1 folder as ours (the name it was first written under)
FIELDS = ("id", "title", "abstract", "authors", "references")
LIST_SEPARATOR = ";"  # joins several authors / references in one CSV cell
JSON_LINES_SUFFIXES = (".jsonl", ".ndjson", ".json")
CSV_SUFFIXES = (".csv",)
ID_PREFIX = "cite-"  # question ids; keeps them apart from official LaMP ids in joint data
# Random draws for a wrong candidate before falling back to scanning the whole dump;
# in a real dump nearly every paper qualifies, so the scan is for tiny dumps only.
_NEGATIVE_TRIES = 64
_SHOWN_IDS = 3  # ids a summary line shows


class CitationDumpError(ValueError):
    """The dump is missing or breaks the accepted format, or no usable data results."""


# --------------------------------------------------------------------------- reading


@dataclass
class Paper:
    """One paper of the dump, its fields validated and normalised."""

    id: str
    title: str  # whitespace collapsed to single spaces: it goes into a one-line question
    abstract: str
    authors: tuple[str, ...]  # author keys: the dump's author id when given, else the name
    references: tuple[str, ...]  # cited paper ids, in dump order, some maybe not in the dump
    line: int  # line of the dump where the record starts, for messages
    norm_title: str = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.norm_title = normalize_title(self.title)


@dataclass
class Dump:
    """The papers of a dump file and what reading it skipped."""

    path: Path
    papers: list[Paper]
    skipped: int = 0  # incomplete records dropped under lenient reading
    missing_references: int = 0  # records read as citing nothing under lenient reading


def normalize_title(title: str) -> str:
    """The form in which two titles count as the same: case-folded, whitespace collapsed."""
    return " ".join(title.split()).casefold()


def read_dump(path: str | os.PathLike, lenient: bool = False) -> Dump:
    """Read and validate a dump (JSON lines or CSV, chosen by extension).

    Raises CitationDumpError naming the file, line and field of the first problem.
    Paper ids must be unique. See the module docstring for the accepted fields.
    """
    path = Path(path)
    if not path.is_file():
        raise CitationDumpError(f"{path}: file not found. Pass the dump with --dump "
                                f"(JSON lines: {', '.join(JSON_LINES_SUFFIXES)}; or {', '.join(CSV_SUFFIXES)}).")
    suffix = path.suffix.lower()
    if suffix in JSON_LINES_SUFFIXES:
        records = _json_lines(path)
    elif suffix in CSV_SUFFIXES:
        records = _csv_records(path)
    else:
        raise CitationDumpError(
            f"{path}: unknown extension {path.suffix!r}. Name the dump *.jsonl, *.ndjson or *.json for JSON "
            f"lines (one paper object per line) or *.csv for CSV with columns {','.join(FIELDS)}.")
    dump = Dump(path=path, papers=[])
    first_line: dict[str, int] = {}
    for line, record in tqdm(records, desc=f"reading {path.name}", unit=" papers", disable=None):
        paper = _paper_from_record(record, f"{path}: line {line}", line, lenient)
        if paper is None:
            dump.skipped += 1
            continue
        if record.get("references") is None:
            dump.missing_references += 1
        if paper.id in first_line:
            raise CitationDumpError(
                f'{path}: line {line}: field "id" {paper.id!r} repeats the paper of line {first_line[paper.id]}. '
                f"Paper ids must be unique; deduplicate the dump.")
        first_line[paper.id] = line
        dump.papers.append(paper)
    return dump


def _json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) per record of a JSON-lines file, also in v12's array layout."""
    with path.open(encoding="utf-8") as handle:
        line = 0
        try:
            for line, text in enumerate(handle, start=1):
                text = text.strip()
                # v12: "[" and "]" on their own lines, every record after the first
                # prefixed by ",". Stripping those makes each line a standalone object.
                if text in ("", "[", "]"):
                    continue
                if text.startswith(","):
                    text = text[1:].lstrip()
                try:
                    record = json.loads(text)
                except json.JSONDecodeError as error:
                    raise CitationDumpError(
                        f"{path}: line {line}: malformed JSON at column {error.colno}: {error.msg}. The dump "
                        f"must hold one complete paper object per line; fix or remove that line "
                        f"(a truncated download usually breaks the last line).") from error
                if not isinstance(record, dict):
                    raise CitationDumpError(
                        f"{path}: line {line}: holds {_kind(record)}, expected one paper object per line. A JSON "
                        f"array on one line is not read; write one object per line (JSON lines).")
                yield line, record
        except UnicodeDecodeError as error:
            raise CitationDumpError(f"{path}: line {line + 1}: not valid UTF-8 ({error.reason}). Re-encode the "
                                    f"dump as UTF-8.") from error


def _csv_records(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number where the row starts, record shaped like a JSON-lines object) per row."""
    with path.open(encoding="utf-8", newline="") as handle:
        try:
            yield from _csv_rows(path, handle)
        except UnicodeDecodeError as error:
            raise CitationDumpError(f"{path}: not valid UTF-8 ({error.reason}). Re-encode the dump as "
                                    f"UTF-8.") from error


def _csv_rows(path: Path, handle: TextIO) -> Iterator[tuple[int, dict]]:
    """The rows of `_csv_records`, read from the open file."""
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise CitationDumpError(f"{path}: empty file; expected a header row {','.join(FIELDS)}.")
    columns = {name.strip(): index for index, name in enumerate(header)}
    missing = [name for name in FIELDS if name not in columns]
    if missing:
        raise CitationDumpError(
            f"{path}: line 1 (header): no column {', '.join(map(repr, missing))}. The header must name "
            f"{','.join(FIELDS)} (other columns are ignored).")
    start = reader.line_num + 1
    for row in reader:
        if row:  # csv yields [] for a blank line
            cells = {name: row[index] if index < len(row) else None for name, index in columns.items()}
            for name in ("authors", "references"):
                if cells[name] is not None:
                    cells[name] = [part.strip() for part in cells[name].split(LIST_SEPARATOR) if part.strip()]
            yield start, cells
        start = reader.line_num + 1  # a quoted cell may span lines


def _paper_from_record(record: Mapping[str, Any], where: str, line: int, lenient: bool) -> Paper | None:
    """Validate one record; None when lenient and the record lacks a required field.

    A value of the wrong type is always an error: it means the file is not what we think.
    """
    values = {
        "id": _parse_id(record.get("id"), where),
        "title": _parse_text(record.get("title"), where, "title"),
        "abstract": _parse_abstract(record, where),
        "authors": _parse_authors(record.get("authors"), where),
    }
    references = _parse_references(record.get("references"), where)
    missing = [name for name, value in values.items() if value is None]
    if missing and lenient:
        return None
    if references is None and not lenient:
        missing.append("references")
    if missing:
        raise CitationDumpError(
            f"{where}: required field(s) {', '.join(map(repr, missing))} missing or empty (paper id "
            f"{values['id']!r}). Every paper needs {', '.join(FIELDS)}; a paper citing nothing has "
            f'"references": [] (CSV: an empty cell). Fix the record, or pass --lenient to skip papers with '
            f"gaps and read missing references as none.")
    return Paper(id=values["id"], title=" ".join(values["title"].split()), abstract=values["abstract"],
                 authors=values["authors"], references=references or (), line=line)


def _parse_id(value: Any, where: str, name: str = "id") -> str | None:
    # bool is an int subclass, but true as an id is surely a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        return value.strip()
    raise CitationDumpError(f'{where}: field "{name}" is {_kind(value)}, expected a string or integer id.')


def _parse_text(value: Any, where: str, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise CitationDumpError(f'{where}: field "{name}" is {_kind(value)}, expected a string.')
    return value.strip() or None


def _parse_abstract(record: Mapping[str, Any], where: str) -> str | None:
    """The plain "abstract", else the text rebuilt from DBLP v11/v12's "indexed_abstract"."""
    text = _parse_text(record.get("abstract"), where, "abstract")
    indexed = record.get("indexed_abstract")
    if text is not None or indexed is None:
        return text
    if not isinstance(indexed, dict):
        raise CitationDumpError(f'{where}: field "indexed_abstract" is {_kind(indexed)}, expected an object '
                                f'{{"IndexLength": n, "InvertedIndex": {{word: [positions]}}}}.')
    length, index = indexed.get("IndexLength"), indexed.get("InvertedIndex")
    if not isinstance(length, int) or not isinstance(index, dict):
        raise CitationDumpError(f'{where}: field "indexed_abstract" needs an integer "IndexLength" and an '
                                f'object "InvertedIndex"; got {_kind(length)} and {_kind(index)}.')
    words = [""] * length
    for word, positions in index.items():
        if not isinstance(positions, list) or not all(isinstance(p, int) and 0 <= p < length for p in positions):
            raise CitationDumpError(f'{where}: field "indexed_abstract": positions of {word!r} must be integers '
                                    f"in [0, {length}); got {positions!r}.")
        for position in positions:
            words[position] = word
    return " ".join(word for word in words if word) or None


def _parse_authors(value: Any, where: str) -> tuple[str, ...] | None:
    """Author keys: names/ids as given, or for DBLP objects the "id" (else the "name")."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise CitationDumpError(f'{where}: field "authors" is {_kind(value)}, expected a list of names, ids or '
                                f'{{"name", "id"}} objects (CSV: values joined by "{LIST_SEPARATOR}").')
    keys: dict[str, None] = {}  # ordered set: an author listed twice is one author
    for index, author in enumerate(value):
        if isinstance(author, dict):
            key = _parse_id(author.get("id"), where, f"authors[{index}].id") or _parse_text(
                author.get("name"), where, f"authors[{index}].name")
            if key is None:
                raise CitationDumpError(f'{where}: field "authors" item #{index} has neither "id" nor "name". '
                                        f"Fix or remove that author.")
        else:
            key = _parse_id(author, where, f"authors[{index}]")
            if key is None:
                raise CitationDumpError(f'{where}: field "authors" item #{index} is empty. Fix or remove it.')
        keys[key] = None
    return tuple(keys) or None


def _parse_references(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise CitationDumpError(f'{where}: field "references" is {_kind(value)}, expected a list of paper ids '
                                f'(CSV: ids joined by "{LIST_SEPARATOR}").')
    ids: dict[str, None] = {}
    for index, reference in enumerate(value):
        key = _parse_id(reference, where, f"references[{index}]")
        if key is not None:
            ids[key] = None
    return tuple(ids)


def _kind(value: Any) -> str:
    """JSON-flavoured name of a value's type, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class Draft:
    """One question before it gets its id and candidate order."""

    author: str
    query: Paper
    positive: Paper  # cited by the query: the correct candidate
    negative: Paper  # not cited by the query
    profile: tuple[Paper, ...]  # the author's other papers, dump order


@dataclass(frozen=True)
class Example:
    """A finished question: id, candidate order and, when it leaks, the profile paper."""

    id: str
    draft: Draft
    correct_first: bool  # whether the correct candidate is [1]

    @property
    def leak(self) -> Paper | None:
        """The profile paper whose title is the correct candidate's, if any."""
        return leaked_profile_item(self.draft)

    def question(self) -> dict:
        """The official LaMP-1 questions record."""
        draft = self.draft
        first, second = (draft.positive, draft.negative) if self.correct_first else (draft.negative, draft.positive)
        return {
            "id": self.id,
            "input": QUESTION_TEMPLATE.format(title=draft.query.title, ref1=first.title, ref2=second.title),
            "profile": [{"id": paper.id, "title": paper.title, "abstract": paper.abstract}
                        for paper in draft.profile],
        }

    def gold(self) -> dict:
        """The official LaMP-1 outputs record."""
        return {"id": self.id, "output": "[1]" if self.correct_first else "[2]"}


def leaked_profile_item(draft: Draft) -> Paper | None:
    """The first profile paper with the correct candidate's (normalised) title, or None."""
    return next((paper for paper in draft.profile if paper.norm_title == draft.positive.norm_title), None)


def index_authors(papers: Sequence[Paper]) -> dict[str, list[Paper]]:
    """Author key -> their papers, in dump order."""
    by_author: dict[str, list[Paper]] = {}
    for paper in papers:
        for author in paper.authors:
            by_author.setdefault(author, []).append(paper)
    return by_author


def build_drafts(papers: Sequence[Paper], *, seed: int, min_profile: int, max_profile: int,
                 per_author: int) -> dict[str, list[Draft]]:
    """Author key -> their questions (only authors with at least one), sorted by author.

    Each author draws from their own RNG seeded by (seed, author), so an author's query,
    profile and correct candidate do not depend on the other authors of the dump (the
    wrong candidate, drawn from the whole dump, does).
    """
    by_id = {paper.id: paper for paper in papers}
    drafts: dict[str, list[Draft]] = {}
    authors = sorted(index_authors(papers).items())
    for author, own in tqdm(authors, desc="building questions", unit=" authors", disable=None):
        if len(own) <= min_profile:  # the query needs min_profile other papers beside it
            continue
        rng = random.Random(f"{seed}:author:{author}")  # str seeds hash with SHA-512: stable across runs
        order = list(own)
        rng.shuffle(order)
        own_titles = {paper.norm_title for paper in own}
        found: list[Draft] = []
        for query in order:
            if len(found) == per_author:
                break
            draft = _draft_for_query(author, query, own, own_titles, papers, by_id, rng, min_profile, max_profile)
            if draft is not None:
                found.append(draft)
        if found:
            drafts[author] = found
    return drafts


def _draft_for_query(author: str, query: Paper, own: list[Paper], own_titles: set[str], papers: Sequence[Paper],
                     by_id: Mapping[str, Paper], rng: random.Random, min_profile: int,
                     max_profile: int) -> Draft | None:
    """The question `author` gets for `query`, or None when the query does not make one."""
    cited = [by_id[ref] for ref in query.references if ref in by_id and ref != query.id]
    # Not the author's own paper (the profile holds it: a copied answer) and not a copy
    # of the query itself (the question would name the answer).
    positives = [paper for paper in cited if author not in paper.authors and paper.norm_title != query.norm_title]
    if not positives:
        return None
    # A record with the query's title is the query under another id (preprint, journal
    # version): keep it out of the history along with the query.
    profile = [paper for paper in own if paper.id != query.id and paper.norm_title != query.norm_title]
    if len(profile) < min_profile:
        return None
    if len(profile) > max_profile:
        keep = sorted(rng.sample(range(len(profile)), max_profile))
        profile = [profile[index] for index in keep]
    positive = rng.choice(positives)
    # A wrong candidate titled like a cited paper would be a right answer in disguise, and
    # one titled like the author's own paper would be copyable from the history.
    forbidden_titles = own_titles | {paper.norm_title for paper in cited}
    negative = _sample_negative(rng, papers, author, set(query.references), forbidden_titles)
    if negative is None:
        return None
    return Draft(author=author, query=query, positive=positive, negative=negative, profile=tuple(profile))


def _sample_negative(rng: random.Random, papers: Sequence[Paper], author: str, cited_ids: set[str],
                     forbidden_titles: set[str]) -> Paper | None:
    """A random paper not by `author`, not cited, with no forbidden title; None if none is."""
    def allowed(paper: Paper) -> bool:
        return author not in paper.authors and paper.id not in cited_ids and paper.norm_title not in forbidden_titles

    for _ in range(_NEGATIVE_TRIES):
        candidate = papers[rng.randrange(len(papers))]
        if allowed(candidate):
            return candidate
    pool = [paper for paper in papers if allowed(paper)]
    return rng.choice(pool) if pool else None


def split_authors(authors: Sequence[str], seed: int, dev_fraction: float,
                  test_fraction: float) -> dict[str, list[str]]:
    """Shuffle the authors (seeded) and cut them into train/dev/test lists.

    A non-zero fraction gets at least one author, so asking for a dev split never yields
    an empty one; train must keep at least one.
    """
    order = sorted(authors)
    random.Random(f"{seed}:split").shuffle(order)
    n_test, n_dev = _share(len(order), test_fraction), _share(len(order), dev_fraction)
    if len(order) - n_test - n_dev < 1:
        raise CitationDumpError(
            f"only {len(order)} author(s) have questions: too few for a train split beside {n_dev} dev and "
            f"{n_test} test author(s). Use a larger dump, lower --min-profile, or lower the fractions.")
    return {"train": order[n_test + n_dev:], "dev": order[n_test:n_test + n_dev], "test": order[:n_test]}


def _share(total: int, fraction: float) -> int:
    return max(1, round(total * fraction)) if fraction > 0 else 0


def finish_examples(drafts_by_split: Mapping[str, Sequence[Draft]], seed: int) -> dict[str, list[Example]]:
    """Give questions ids (unique across splits) and candidate orders balanced per split."""
    examples: dict[str, list[Example]] = {}
    next_id = 0
    for split in SPLITS:
        drafts = drafts_by_split[split]
        flags = _balanced_flags(random.Random(f"{seed}:positions:{split}"), len(drafts))
        examples[split] = [Example(f"{ID_PREFIX}{next_id + index}", draft, flag)
                           for index, (draft, flag) in enumerate(zip(drafts, flags))]
        next_id += len(drafts)
    return examples


def _balanced_flags(rng: random.Random, n: int) -> list[bool]:
    """n flags, half True (an odd one out at random), shuffled: exact balance keeps an
    "always [1]" model at chance."""
    flags = [index < n // 2 + (n % 2) * rng.randrange(2) for index in range(n)]
    rng.shuffle(flags)
    return flags


# --------------------------------------------------------------------------- audit and output


@dataclass
class SplitReport:
    """One split's numbers for the summary."""

    authors: int
    examples: int  # before dropping leaks
    leaks: list[str]  # ids of the leaking questions
    dropped: int

    @property
    def leak_fraction(self) -> float:
        return len(self.leaks) / self.examples if self.examples else 0.0


@dataclass
class BuildReport:
    """What build_citation_lamp1 read, built and wrote."""

    dump: Dump
    folder: Path  # DATA_DIR/LaMP_1
    splits: dict[str, SplitReport]


def leak_audit(examples: Mapping[str, Sequence[Example]], dropped: bool) -> dict:
    """The audit document: per split and in total, how many questions leak, and which."""
    splits, total_examples, total_leaks = {}, 0, 0
    for split in SPLITS:
        leaking = [example for example in examples[split] if example.leak is not None]
        count = len(examples[split])
        splits[split] = {
            "examples": count,
            "leaks": len(leaking),
            "fraction": len(leaking) / count if count else 0.0,
            "dropped": len(leaking) if dropped else 0,
            "ids": [example.id for example in leaking],
            "details": [{"id": example.id, "author": example.draft.author, "query_paper": example.draft.query.id,
                         "correct_paper": example.draft.positive.id, "profile_paper": example.leak.id,
                         "title": example.draft.positive.title} for example in leaking],
        }
        total_examples += count
        total_leaks += len(leaking)
    return {
        "generator": GENERATOR,
        "rule": "a question leaks when its correct candidate's title, case and whitespace normalised, equals the "
                "title of a paper in the author's profile",
        "drop_leaks": dropped,
        "total": {"examples": total_examples, "leaks": total_leaks,
                  "fraction": total_leaks / total_examples if total_examples else 0.0,
                  "dropped": total_leaks if dropped else 0},
        "splits": splits,
    }


def build_citation_lamp1(dump: str | os.PathLike, out_dir: str | os.PathLike, *, seed: int = 0,
                         dev_fraction: float = 0.1, test_fraction: float = 0.1, min_profile: int = 2,
                         max_profile: int = 512, per_author: int = 1, drop_leaks: bool = False,
                         lenient: bool = False) -> BuildReport:
    """Build LaMP-1 files under `out_dir`/LaMP_1 from the dump at `dump`; see the module doc.

    Same dump and arguments give byte-identical files. Refuses to write into a LaMP_1
    folder that holds data this builder did not write (official or embedded LaMP-1).
    """
    _check_options(dev_fraction, test_fraction, min_profile, max_profile, per_author)
    folder = Path(out_dir) / TASK_FOLDER
    _check_out_folder(folder)  # before reading: a dump can take minutes
    data = read_dump(dump, lenient=lenient)
    drafts = build_drafts(data.papers, seed=seed, min_profile=min_profile, max_profile=max_profile,
                          per_author=per_author)
    if not drafts:
        raise CitationDumpError(
            f"{data.path}: no author has a question. An author needs at least {min_profile + 1} papers, one of "
            f"which cites a paper in the dump that they did not write ({len(data.papers)} papers read, "
            f"{data.skipped} skipped). Lower --min-profile or use a larger dump.")
    authors = split_authors(list(drafts), seed, dev_fraction, test_fraction)
    examples = finish_examples({split: [draft for author in authors[split] for draft in drafts[author]]
                                for split in SPLITS}, seed)
    audit = leak_audit(examples, drop_leaks)
    # The audit first: it marks the folder as ours, so a rerun after a crash may overwrite.
    atomic_write_text(folder / AUDIT_FILE, json.dumps(audit, ensure_ascii=False, indent=1) + "\n")
    for split in SPLITS:
        kept = [example for example in examples[split] if not (drop_leaks and example.leak is not None)]
        atomic_write_text(folder / f"{split}_questions.json",
                          json.dumps([example.question() for example in kept], ensure_ascii=False))
        atomic_write_text(folder / f"{split}_outputs.json",
                          json.dumps({"task": TASK_FOLDER, "golds": [example.gold() for example in kept]},
                                     ensure_ascii=False))
    reports = {split: SplitReport(authors=len(authors[split]), examples=len(examples[split]),
                                  leaks=audit["splits"][split]["ids"], dropped=audit["splits"][split]["dropped"])
               for split in SPLITS}
    return BuildReport(dump=data, folder=folder, splits=reports)


def _check_options(dev_fraction: float, test_fraction: float, min_profile: int, max_profile: int,
                   per_author: int) -> None:
    """Report every bad option at once."""
    problems = []
    for name, value in (("--dev-fraction", dev_fraction), ("--test-fraction", test_fraction)):
        if not 0 <= value < 1:
            problems.append(f"{name} must be in [0, 1), got {value}")
    if dev_fraction + test_fraction >= 1:
        problems.append(f"--dev-fraction + --test-fraction must leave authors for train, got "
                        f"{dev_fraction} + {test_fraction}")
    if min_profile < 1:
        problems.append(f"--min-profile must be at least 1 (LaMP profiles are never empty), got {min_profile}")
    if max_profile < max(min_profile, 1):
        problems.append(f"--max-profile must be at least --min-profile ({min_profile}), got {max_profile}")
    if per_author < 1:
        problems.append(f"--per-author must be at least 1, got {per_author}")
    if problems:
        raise CitationDumpError("bad options: " + "; ".join(problems))


def _check_out_folder(folder: Path) -> None:
    """Refuse to overwrite LaMP-1 data this builder did not write: official data took a
    download, and overwriting the embedded task would leave its marker lying."""
    if not folder.is_dir():
        return
    audit = folder / AUDIT_FILE
    try:
        ours = json.loads(audit.read_text(encoding="utf-8")).get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        ours = False
    data_files = sorted(path.name for path in folder.glob("*_questions.json")) + sorted(
        path.name for path in folder.glob("*_outputs.json"))
    if data_files and not ours:
        raise CitationDumpError(
            f"{folder}: holds LaMP-1 data this builder did not write ({', '.join(data_files[:4])}); refusing "
            f"to overwrite it. Choose another --out folder for the citation-dump data.")


def format_summary(report: BuildReport) -> str:
    """Human-readable summary of a build: input, split sizes and the leak audit."""
    dump = report.dump
    lines = [f"read {len(dump.papers)} papers from {dump.path.name}"
             + (f" ({dump.skipped} incomplete skipped, {dump.missing_references} without references read as "
                f"citing nothing)" if dump.skipped or dump.missing_references else ""),
             "leak audit (correct candidate's title is in the author's own profile):"]
    total_examples = sum(split.examples for split in report.splits.values())
    total_leaks = sum(len(split.leaks) for split in report.splits.values())
    total_dropped = sum(split.dropped for split in report.splits.values())
    for name, split in report.splits.items():
        shown = ", ".join(split.leaks[:_SHOWN_IDS]) + (", ..." if len(split.leaks) > _SHOWN_IDS else "")
        lines.append(f"  {name:5}: {len(split.leaks)} of {split.examples} questions leak "
                     f"({split.leak_fraction:.1%}){f' [{shown}]' if shown else ''}; {split.dropped} dropped, "
                     f"{split.examples - split.dropped} written (authors: {split.authors})")
    fraction = total_leaks / total_examples if total_examples else 0.0
    lines.append(f"  total: {total_leaks} of {total_examples} questions leak ({fraction:.1%}); {total_dropped} "
                 f"dropped" + ("" if total_dropped or not total_leaks else " (pass --drop-leaks to remove them)"))
    lines.append(f"wrote {report.folder} (audit ids in {AUDIT_FILE})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset.download.citation_dump",
        description="Build extra LaMP-1 (citation identification) data from a DBLP-style citation dump, with an "
                    "author-disjoint train/dev/test split and a leak audit.")
    parser.add_argument("--dump", required=True, help="papers as JSON lines (.jsonl/.ndjson/.json) or .csv")
    parser.add_argument("--out", required=True, help="data folder; files go to OUT/LaMP_1/")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random choice (default 0)")
    parser.add_argument("--dev-fraction", type=float, default=0.1, help="share of authors in dev (default 0.1)")
    parser.add_argument("--test-fraction", type=float, default=0.1, help="share of authors in test (default 0.1)")
    parser.add_argument("--min-profile", type=int, default=2, help="fewest profile papers per question (default 2)")
    parser.add_argument("--max-profile", type=int, default=512,
                        help="most profile papers per question; more are sampled down (default 512)")
    parser.add_argument("--per-author", type=int, default=1,
                        help="most questions per author (default 1, as in LaMP)")
    parser.add_argument("--drop-leaks", action="store_true",
                        help="leave out questions whose answer's title is in the author's profile")
    parser.add_argument("--lenient", action="store_true",
                        help="skip papers lacking id/title/abstract/authors and read missing references as none, "
                             "instead of stopping at the first such record")
    args = parser.parse_args(argv)
    try:
        report = build_citation_lamp1(
            args.dump, args.out, seed=args.seed, dev_fraction=args.dev_fraction, test_fraction=args.test_fraction,
            min_profile=args.min_profile, max_profile=args.max_profile, per_author=args.per_author,
            drop_leaks=args.drop_leaks, lenient=args.lenient)
    except CitationDumpError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
