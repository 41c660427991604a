"""Reader and writer of the LaMP benchmark's official JSON files.

``{split}_questions.json`` holds a list of ``{"id", "input", "profile": [{...}, ...]}``
records and ``{split}_outputs.json`` holds ``{"task": "LaMP_<i>", "golds": [{"id",
"output"}, ...]}``. The test split ships without outputs. Task names use a dash
("LaMP-1"); folders and the "task" field use an underscore ("LaMP_1"). Where the files
sit under a data folder (the downloader's flattened layout or LaMP's own server layout,
found automatically) is dataset/layout.py's business.

Questions files are read through Arrow tables (dataset/lamp_arrow.py): converted once per
file version into the cache folder, each example read and built when asked for.

Every format problem raises LaMPFormatError naming the file, the record (id, or index
when there is no usable id), the field and what to do, because these files are large
and a bare KeyError deep in training is useless. That includes a gold outside a
classification task's labels and an outputs file whose "task" names another task.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from dataset.atomic import atomic_write_text
from dataset.lamp_arrow import ArrowQuestions, NotStreamable, iter_json_array, open_questions
from dataset.layout import LAYOUT_HELP, TIME_FOLDER, download_advice, official_task_name, split_paths

# How many example ids an error message shows; enough to find them, short enough to read.
_SHOWN_IDS = 3
# How many folder entries a "file missing" message lists.
_SHOWN_FILES = 20
# How many of a task's labels a "not a label" message lists.
_SHOWN_LABELS = 5


class LaMPFormatError(ValueError):
    """A LaMP file is missing or does not follow the official format."""


@dataclass
class LaMPExample:
    """One LaMP question with its user's profile and, when known, the gold output."""

    id: str
    input: str  # the question text exactly as in the file
    profile: list[dict]  # raw profile items
    output: str | None = None  # None when the outputs file is absent (test split)


class LaMPSplit(Sequence[LaMPExample]):
    """The examples of one split in file order, each built when asked for from the questions
    file's Arrow table, with its gold when the outputs are known. A slice is a LaMPSplit too
    (nothing is read to make it). With `keep_last` > 0 an example's profile holds its last
    `keep_last` items only, all that training reads (dataset.collate.select_history), and
    only those are decoded. With `inputs` (one per example) those replace the questions'
    own inputs, as the rag baseline rewrites them, and the profiles are still read lazily."""

    def __init__(self, questions: ArrowQuestions, outputs: list[str] | None, rows: range | None = None,
                 keep_last: int = 0, inputs: Sequence[str] | None = None):
        self.questions = questions
        self.outputs = outputs  # the gold of each row of the table, or None (hidden golds)
        self.rows = range(len(questions)) if rows is None else rows
        self.keep_last = keep_last
        if inputs is not None and len(inputs) != len(self.rows):
            raise ValueError(f"inputs: {len(inputs)} for a split of {len(self.rows)} examples")
        self.inputs = inputs  # [len(rows)] or None (the file's)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._derived(rows=self.rows[index], inputs=None if self.inputs is None else self.inputs[index])
        row = self.rows[index]
        example_id, text, profile = self.questions.row(row, self.keep_last)
        text = text if self.inputs is None else self.inputs[index]
        return LaMPExample(example_id, text, profile, None if self.outputs is None else self.outputs[row])

    def keeping_last(self, items: int) -> LaMPSplit:
        """The same examples, each profile cut to its last `items` items (0: whole profiles)."""
        return self._derived(keep_last=items)

    def with_inputs(self, inputs: Sequence[str]) -> LaMPSplit:
        """The same examples with these inputs [len(self)] in place of the file's."""
        return self._derived(inputs=list(inputs))

    def _derived(self, **changes) -> LaMPSplit:
        """This split with some of rows, keep_last and inputs changed, the others carried over."""
        kept = {"rows": self.rows, "keep_last": self.keep_last, "inputs": self.inputs}
        return LaMPSplit(self.questions, self.outputs, **{**kept, **changes})

    def golds(self) -> dict[str, str]:
        """id -> gold output of every example (empty when the golds are hidden), without
        reading any profile."""
        if self.outputs is None:
            return {}
        ids = self.questions.ids()
        return {ids[r]: self.outputs[r] for r in self.rows}


def load_split(data_dir: str | os.PathLike, task: str, split: str, required_profile_fields: Iterable[str] = (),
               labels: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None) -> LaMPSplit:
    """Read one split of one task from `data_dir` in either layout (dataset/layout.py).

    Golds are required for every split except "test", whose outputs LaMP keeps hidden:
    there a missing outputs file gives examples with ``output=None``. The outputs file
    must be `task`'s, and with `labels` (a classification task's) every gold one of them.
    With `cache_dir`, the questions' Arrow table is kept there (see read_lamp_split).
    """
    check_split_files(data_dir, [task], split)
    questions, outputs = split_paths(data_dir, task, split)
    if split == "test" and not outputs.is_file():
        return read_lamp_split(questions, None, required_profile_fields, cache_dir=cache_dir)
    return read_lamp_split(questions, outputs, required_profile_fields, task=task, labels=labels,
                           cache_dir=cache_dir)


def check_split_files(data_dir: str | os.PathLike, tasks: Iterable[str], split: str) -> None:
    """Raise LaMPFormatError unless every task in `tasks` has the files of `split`.

    The error names the missing files, lists what `data_dir` does hold and gives the
    command that downloads the missing tasks. Callers reading several tasks check them
    all first, so a missing task fails at once, not after the others (LaMP files are
    large) have been loaded.
    """
    data_dir = Path(data_dir)
    missing: list[tuple[str, Path]] = []
    for task in tasks:
        questions, outputs = split_paths(data_dir, task, split)
        # Test golds are hidden by LaMP, so only test questions are required.
        required = (questions,) if split == "test" else (questions, outputs)
        missing += [(task, path) for path in required if not path.is_file()]
    if missing:
        tasks_missing = list(dict.fromkeys(task for task, _ in missing))
        raise LaMPFormatError(_missing_file_message(
            missing[0][1], data_dir, tasks_missing, [path.relative_to(data_dir) for _, path in missing[1:]]))


def read_lamp_split(questions_path: str | os.PathLike, outputs_path: str | os.PathLike | None = None,
                    required_profile_fields: Iterable[str] = (), *, task: str | None = None,
                    labels: Sequence[str] | None = None, cache_dir: str | os.PathLike | None = None) -> LaMPSplit:
    """Read and validate a questions file and, if given, its outputs file.

    Examples keep the questions file's order. Integer ids are accepted and turned into
    strings. Every profile item must carry each field in `required_profile_fields`. With
    `task`, an outputs file whose "task" field names another task is refused; with
    `labels`, so is a gold that (stripped, as the metrics read it) is none of them.
    Every record is checked when the file is converted to its Arrow table: once per
    version of the file under `cache_dir`, in memory on every call without one.
    """
    questions_path = Path(questions_path)
    required = tuple(required_profile_fields)
    if not questions_path.is_file():
        raise LaMPFormatError(_missing_file_message(questions_path))
    questions = open_questions(questions_path, lambda: _validated_rows(questions_path, required),
                               None if cache_dir is None else Path(cache_dir), required)
    outputs = None
    if outputs_path is not None:
        outputs = _match_golds(questions.ids(), questions_path, Path(outputs_path), task, labels)
    return LaMPSplit(questions, outputs)


def _records(path: Path) -> Iterator[Any]:
    """The elements of the questions file's top-level array, streamed. A file that does not
    stream as a UTF-8 JSON array is parsed whole instead, which names its problem."""
    streamed = 0
    try:
        for record in iter_json_array(path):
            yield record
            streamed += 1
        return
    except NotStreamable:
        pass
    records = _load_json(path)  # raises for bad UTF-8 and malformed JSON, with the place
    if not isinstance(records, list):
        raise LaMPFormatError(
            f"{path}: top level is {_kind(records)}, expected a list of "
            f'{{"id", "input", "profile"}} records. Is this an outputs file passed as questions?')
    # Valid JSON that did not stream (a bare number split across two reads): the records
    # streamed so far were complete objects, the rest come from the full parse.
    yield from records[streamed:]


def _validated_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[str, str, list]]:
    """(id, input, profile) of each questions record, in file order; raises at the first bad one."""
    first_index: dict[str, int] = {}
    for index, record in enumerate(_records(path)):
        example = _parse_question(path, index, record, required)
        if example.id in first_index:
            raise LaMPFormatError(
                f'{path}: record #{index} (id {example.id!r}): field "id" repeats record '
                f"#{first_index[example.id]}. Ids must be unique; remove or renumber the duplicate.")
        first_index[example.id] = index
        yield example.id, example.input, example.profile


def write_predictions(path: str | os.PathLike, task: str, predictions: dict[str, str]) -> None:
    """Write predictions as an official outputs file, atomically.

    The result is ``{"task": "LaMP_<i>", "golds": [{"id", "output"}, ...]}`` in the
    dict's order, the format LaMP's evaluation scripts and leaderboard expect.
    """
    golds = []
    for example_id, output in predictions.items():
        if not isinstance(output, str):
            raise TypeError(f"prediction for id {example_id!r} must be a string, got {_kind(output)}")
        golds.append({"id": str(example_id), "output": output})
    document = {"task": official_task_name(task), "golds": golds}
    atomic_write_text(path, json.dumps(document, ensure_ascii=False, indent=1) + "\n")


def read_outputs(path: str | os.PathLike, task: str | None = None) -> dict[str, str]:
    """id -> output of an official outputs file, golds or predictions alike, validated.

    With `task`, a "task" field in the file must name that task (either spelling), so a
    file of another task is not scored by mistake.
    """
    return _read_golds(Path(path), task)


def _load_json(path: Path) -> Any:
    """Parse a UTF-8 JSON file, turning every failure into a LaMPFormatError."""
    if not path.is_file():
        raise LaMPFormatError(_missing_file_message(path))
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LaMPFormatError(
            f"{path}: not valid UTF-8 at byte offset {error.start} (byte 0x{raw[error.start]:02x}). "
            f"LaMP files are UTF-8 JSON; re-download the file or re-encode it as UTF-8.") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise LaMPFormatError(
            f"{path}: malformed JSON at line {error.lineno}, column {error.colno}: {error.msg}. "
            f"The file is probably truncated or hand-edited; re-download or regenerate it.") from error


def _missing_file_message(path: Path, data_dir: Path | None = None, tasks: Sequence[str] = (),
                          also_missing: Sequence[Path] = ()) -> str:
    """Why `path` cannot be read and what to do about it.

    For a file named directly it lists the file's folder. Given the LaMP data folder,
    the tasks lacking files and any other missing files, it adds the layouts read, what
    the data folder holds and how to download those tasks.
    """
    folder = path.parent
    expected = f"the layout {LAYOUT_HELP}"
    if not folder.is_dir():
        message = f"{path}: file not found; folder {folder} does not exist."
        advice = f"Point the data folder at {expected}."
    else:
        message = f"{path}: file not found. The folder holds: {_listing(folder)}."
        advice = f"Expected {expected}."
    if data_dir is None:
        return f"{message} {advice}"
    lines = [message]
    if also_missing:
        shown = ", ".join(str(p) for p in also_missing[:_SHOWN_FILES])
        more = f", ... ({len(also_missing)} in all)" if len(also_missing) > _SHOWN_FILES else ""
        lines.append(f"Also missing: {shown}{more}.")
    lines.append(f"Either layout is read: {LAYOUT_HELP}.")
    lines.append(_data_dir_inventory(data_dir))
    lines.append(download_advice(data_dir, tasks))
    return "\n".join(line for line in lines if line)


def _data_dir_inventory(data_dir: Path) -> str:
    """What a LaMP data folder holds: each LaMP_<i> folder with its files, and time/'s task folders."""
    if not data_dir.is_dir():
        return f"The data folder {data_dir} does not exist."
    task_dirs = sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name.startswith("LaMP_"))
    found = [f"{p.name}/ ({_listing(p)})" for p in task_dirs]
    time_dir = data_dir / TIME_FOLDER
    if time_dir.is_dir():
        time_tasks = sorted(p.name for p in time_dir.iterdir() if p.is_dir() and p.name.startswith("LaMP_"))
        found.append(f"time/ (time-based split: {', '.join(time_tasks) or 'no LaMP_<i> folders'})")
    if not found:
        return f"{data_dir} holds no LaMP_<i> task folders (it holds: {_listing(data_dir)})."
    return f"{data_dir} holds: {'; '.join(found)}."


def _listing(folder: Path) -> str:
    """The first entries of a folder by name, for error messages."""
    entries = sorted(entry.name for entry in folder.iterdir())
    shown = ", ".join(entries[:_SHOWN_FILES]) or "nothing"
    if len(entries) > _SHOWN_FILES:
        shown += f", ... ({len(entries)} entries)"
    return shown


def _parse_question(path: Path, index: int, record: Any, required: tuple[str, ...]) -> LaMPExample:
    """Validate one questions record and build its LaMPExample."""
    if not isinstance(record, dict):
        raise LaMPFormatError(
            f'{path}: record #{index} is {_kind(record)}, expected an object with "id", "input" and '
            f'"profile". Fix or remove that record.')
    example_id = _parse_id(path, f"record #{index}", record)
    where = f"record #{index} (id {example_id!r})"
    text = record.get("input")
    if not isinstance(text, str):
        raise LaMPFormatError(
            f'{path}: {where}: field "input" is {_describe(record, "input")}, expected a string '
            f"(the question text). Fix that record.")
    profile = record.get("profile")
    if not isinstance(profile, list):
        raise LaMPFormatError(
            f'{path}: {where}: field "profile" is {_describe(record, "profile")}, expected a list of '
            f"profile items (objects). Fix that record.")
    if not profile:
        raise LaMPFormatError(
            f'{path}: {where}: field "profile" is empty; every LaMP user has at least one profile '
            f"item. Drop the record or restore its profile.")
    for item_index, item in enumerate(profile):
        if not isinstance(item, dict):
            raise LaMPFormatError(
                f'{path}: {where}: field "profile" item #{item_index} is {_kind(item)}, expected an '
                f"object. Fix that item.")
        for name in required:
            if item.get(name) is None:
                raise LaMPFormatError(
                    f'{path}: {where}: field "profile" item #{item_index} lacks required field {name!r} '
                    f"(this task reads {', '.join(map(repr, required))}). Check that the file belongs to "
                    f"this task, or fix that item.")
    return LaMPExample(id=example_id, input=text, profile=profile)


def _parse_id(path: Path, where: str, record: dict) -> str:
    """The record's id as a string; ints are accepted because some LaMP exports use them."""
    value = record.get("id")
    # bool is an int subclass, but True as an id is surely a mistake.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise LaMPFormatError(
        f'{path}: {where}: field "id" is {_describe(record, "id")}, expected a non-empty string '
        f"(or integer). Give the record its id.")


def _match_golds(ids: list[str], questions_path: Path, outputs_path: Path,
                 task: str | None = None, labels: Sequence[str] | None = None) -> list[str]:
    """Read the outputs file and return the gold output of each question id, checking both id
    sets match (and, with `labels`, that every gold is a label)."""
    golds = _read_golds(outputs_path, task)
    if labels is not None:
        _check_labels(outputs_path, golds, task, labels)
    question_ids = set(ids)
    missing = [example_id for example_id in ids if example_id not in golds]
    extra = [gold_id for gold_id in golds if gold_id not in question_ids]
    if missing or extra:
        raise LaMPFormatError(
            f'{outputs_path}: field "golds" does not match {questions_path.name}: '
            f"{len(missing)} question id(s) have no gold (e.g. {_examples(missing)}) and "
            f"{len(extra)} gold id(s) have no question (e.g. {_examples(extra)}). "
            f"Check that both files come from the same task and split.")
    return [golds[example_id] for example_id in ids]


def _check_labels(path: Path, golds: dict[str, str], task: str | None, labels: Sequence[str]) -> None:
    """Refuse golds outside a classification task's labels: the metrics would score them as
    always wrong (and training would teach them), silently."""
    allowed = set(labels)
    bad = [(index, gold_id, output) for index, (gold_id, output) in enumerate(golds.items())
           if output.strip() not in allowed]
    if not bad:
        return
    index, gold_id, output = bad[0]
    whose = f"{task}'s" if task else "the task's"
    shown = ", ".join(map(repr, labels[:_SHOWN_LABELS])) + (", ..." if len(labels) > _SHOWN_LABELS else "")
    others = f" ({len(bad)} golds in all, e.g. ids {_examples([b[1] for b in bad])})" if len(bad) > 1 else ""
    raise LaMPFormatError(
        f'{path}: gold #{index} (id {gold_id!r}): field "output" is {output!r}, which is not one of '
        f"{whose} {len(labels)} labels ({shown}){others}. Check that the file belongs to {task or 'this task'} "
        f"and was not edited; fix or remove that gold (with its question).")


def _read_golds(path: Path, task: str | None = None) -> dict[str, str]:
    """id -> gold output of an outputs file, validated; see read_outputs for `task`."""
    document = _load_json(path)
    if not isinstance(document, dict) or "golds" not in document:
        found = 'an object without "golds"' if isinstance(document, dict) else _kind(document)
        raise LaMPFormatError(
            f'{path}: top level is {found}, expected {{"task": ..., "golds": [{{"id", "output"}}, ...]}}. '
            f"Is this a questions file passed as outputs?")
    # A file without "task" is accepted (other tools may omit it); one naming another task is not.
    if task is not None and "task" in document and \
            str(document["task"]).replace("-", "_") != official_task_name(task):
        raise LaMPFormatError(
            f'{path}: field "task" is {document["task"]!r}, expected {official_task_name(task)!r}: this '
            f"outputs file belongs to another task. Put {task}'s own file there (re-download it), or, if "
            f"only the field is wrong, set it to {official_task_name(task)!r}.")
    records = document["golds"]
    if not isinstance(records, list):
        raise LaMPFormatError(
            f'{path}: field "golds" is {_kind(records)}, expected a list of {{"id", "output"}} objects. '
            f"Fix the file or re-download it.")
    golds: dict[str, str] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise LaMPFormatError(
                f'{path}: gold #{index} is {_kind(record)}, expected an object with "id" and "output". '
                f"Fix or remove that entry.")
        gold_id = _parse_id(path, f"gold #{index}", record)
        output = record.get("output")
        if not isinstance(output, str):
            raise LaMPFormatError(
                f'{path}: gold #{index} (id {gold_id!r}): field "output" is {_describe(record, "output")}, '
                f"expected a string. Fix that entry.")
        if gold_id in golds:
            raise LaMPFormatError(
                f'{path}: gold #{index} (id {gold_id!r}): field "id" repeats an earlier gold. '
                f"Each question needs exactly one gold; remove the duplicate.")
        golds[gold_id] = output
    return golds


def _describe(record: dict, field: str) -> str:
    """'missing' or the JSON kind of a present-but-wrong value, for error messages."""
    return "missing" if field not in record else _kind(record[field])


def _kind(value: Any) -> str:
    """JSON-flavoured name of a value's type, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    kind = names.get(type(value), type(value).__name__)
    if isinstance(value, str) and not value:
        return "an empty string"
    if isinstance(value, list) and not value:
        return "an empty list"
    return kind


def _examples(ids: list[str]) -> str:
    return ", ".join(map(repr, ids[:_SHOWN_IDS])) if ids else "none"
