"""LaMP file I/O, task specs, history selection and batching."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dataset.collate import Batch, LaMPDataset, collate, select_history
from dataset.lamp import LaMPExample, LaMPFormatError, load_split, read_lamp_split, write_predictions
from dataset.layout import split_paths
from dataset.tasks import TASKS, get_task, join_sentences

FIELDS = ("title", "abstract")


def paper(i: int, **extra) -> dict:
    return {"id": f"p{i}", "title": f"Title {i}", "abstract": f"Abstract {i}.", **extra}


def question(qid, n_items: int = 2) -> dict:
    return {"id": qid, "input": f"question {qid}", "profile": [paper(i) for i in range(n_items)]}


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_split(folder: Path, split: str, records: list, golds: list | None) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    questions = write_json(folder / f"{split}_questions.json", records)
    outputs = folder / f"{split}_outputs.json"
    if golds is not None:
        write_json(outputs, {"task": "LaMP_1", "golds": golds})
    return questions, outputs


# --- reading and writing ---------------------------------------------------------------------------------


def test_round_trip_through_official_layout(tmp_path):
    records = [question("1"), question(2, n_items=5)]  # an int id is accepted and becomes "2"
    write_split(tmp_path / "LaMP_1", "dev", records, [{"id": "1", "output": "[1]"}, {"id": "2", "output": "[2]"}])
    examples = load_split(tmp_path, "LaMP-1", "dev", FIELDS)
    assert [e.id for e in examples] == ["1", "2"]
    assert [e.output for e in examples] == ["[1]", "[2]"]
    assert examples[0].input == "question 1"
    assert examples[1].profile == [paper(i) for i in range(5)]

    predictions = {e.id: e.output for e in examples}
    _, outputs = split_paths(tmp_path, "LaMP-1", "dev")
    write_predictions(outputs, "LaMP-1", predictions)
    again = read_lamp_split(split_paths(tmp_path, "LaMP-1", "dev")[0], outputs, FIELDS)
    assert [(e.id, e.output) for e in again] == [("1", "[1]"), ("2", "[2]")]


def test_split_paths_use_underscore_folder(tmp_path):
    questions, outputs = split_paths(tmp_path, "LaMP-1", "train")
    assert questions == tmp_path / "LaMP_1" / "train_questions.json"
    assert outputs == tmp_path / "LaMP_1" / "train_outputs.json"


def test_test_split_without_outputs_has_no_golds(tmp_path):
    write_split(tmp_path / "LaMP_1", "test", [question("7")], None)
    [example] = load_split(tmp_path, "LaMP-1", "test", FIELDS)
    assert example.output is None


def test_dev_split_requires_outputs(tmp_path):
    write_split(tmp_path / "LaMP_1", "dev", [question("7")], None)
    with pytest.raises(LaMPFormatError, match="dev_outputs.json") as error:
        load_split(tmp_path, "LaMP-1", "dev", FIELDS)
    assert "dev_questions.json" in str(error.value)  # the folder listing shows what is there


def test_large_profile_is_fine(tmp_path):
    questions, _ = write_split(tmp_path, "dev", [question("1", n_items=5000)], None)
    [example] = read_lamp_split(questions, None, FIELDS)
    assert len(example.profile) == 5000


def test_write_predictions_is_atomic_and_official(tmp_path):
    target = tmp_path / "out" / "dev_outputs.json"
    write_predictions(target, "LaMP-1", {"3": "[2]", "1": "[1]"})
    assert json.loads(target.read_text(encoding="utf-8")) == {
        "task": "LaMP_1", "golds": [{"id": "3", "output": "[2]"}, {"id": "1", "output": "[1]"}]}
    write_predictions(target, "LaMP_1", {"3": "[1]"})  # overwrite in place
    assert json.loads(target.read_text(encoding="utf-8"))["golds"] == [{"id": "3", "output": "[1]"}]
    assert [p.name for p in target.parent.iterdir()] == ["dev_outputs.json"]  # no temp files left


def test_write_predictions_failure_keeps_old_file(tmp_path):
    target = tmp_path / "dev_outputs.json"
    write_predictions(target, "LaMP-1", {"1": "[1]"})
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_predictions(target, "LaMP-1", {"1": 5})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["dev_outputs.json"]


# --- every format error names the file, the record and the field ---------------------------------------------

BAD_QUESTIONS = [
    # (records, record marker expected in the message, field expected in the message)
    ([question("1"), "oops"], "#1", "id"),
    ([question("1"), {"input": "q", "profile": [paper(0)]}], "#1", "id"),
    ([{"id": 1.5, "input": "q", "profile": [paper(0)]}], "#0", "id"),
    ([{"id": "9", "profile": [paper(0)]}], "'9'", "input"),
    ([{"id": "9", "input": ["q"], "profile": [paper(0)]}], "'9'", "input"),
    ([{"id": "9", "input": "q"}], "'9'", "profile"),
    ([{"id": "9", "input": "q", "profile": {"0": paper(0)}}], "'9'", "profile"),
    ([{"id": "9", "input": "q", "profile": []}], "'9'", "profile"),
    ([{"id": "9", "input": "q", "profile": [paper(0), "text"]}], "'9'", "#1"),
    ([{"id": "9", "input": "q", "profile": [paper(0), paper(1), {"id": "x", "title": "t"}]}], "'9'", "abstract"),
    ([question("5"), question("6"), question("5")], "'5'", "id"),
]


@pytest.mark.parametrize("records,record,field", BAD_QUESTIONS)
def test_bad_questions_record(tmp_path, records, record, field):
    path = write_json(tmp_path / "dev_questions.json", records)
    with pytest.raises(LaMPFormatError) as error:
        read_lamp_split(path, None, FIELDS)
    message = str(error.value)
    assert "dev_questions.json" in message and record in message and field in message


def test_missing_profile_field_names_item_index(tmp_path):
    records = [{"id": "9", "input": "q", "profile": [paper(0), paper(1), {"id": "x", "title": "t"}]}]
    path = write_json(tmp_path / "dev_questions.json", records)
    with pytest.raises(LaMPFormatError, match=r"item #2 lacks required field 'abstract'"):
        read_lamp_split(path, None, FIELDS)
    assert read_lamp_split(path, None, ("title",))[0].id == "9"  # only required fields are checked


def test_duplicate_id_names_both_records(tmp_path):
    path = write_json(tmp_path / "dev_questions.json", [question("5"), question("6"), question("5")])
    with pytest.raises(LaMPFormatError, match=r"record #2 \(id '5'\).*repeats record #0"):
        read_lamp_split(path)


@pytest.mark.parametrize("document", [{"task": "LaMP_1", "golds": []}, "text", None])
def test_questions_top_level_must_be_list(tmp_path, document):
    path = write_json(tmp_path / "dev_questions.json", document)
    with pytest.raises(LaMPFormatError, match="dev_questions.json.*top level"):
        read_lamp_split(path)


@pytest.mark.parametrize("document", [[{"id": "1", "output": "[1]"}], {"task": "LaMP_1"}, {"golds": {"1": "[1]"}}])
def test_outputs_top_level_must_be_object_with_golds(tmp_path, document):
    questions = write_json(tmp_path / "dev_questions.json", [question("1")])
    outputs = write_json(tmp_path / "dev_outputs.json", document)
    with pytest.raises(LaMPFormatError, match="dev_outputs.json.*golds"):
        read_lamp_split(questions, outputs)


@pytest.mark.parametrize("golds,record,field", [
    ([{"id": "1"}], "'1'", "output"),
    ([{"id": "1", "output": 1}], "'1'", "output"),
    ([{"output": "[1]"}], "#0", "id"),
    ([{"id": "1", "output": "[1]"}, {"id": "1", "output": "[2]"}], "'1'", "id"),
    (["[1]"], "#0", "id"),
])
def test_bad_gold_record(tmp_path, golds, record, field):
    questions = write_json(tmp_path / "dev_questions.json", [question("1")])
    outputs = write_json(tmp_path / "dev_outputs.json", {"task": "LaMP_1", "golds": golds})
    with pytest.raises(LaMPFormatError) as error:
        read_lamp_split(questions, outputs)
    message = str(error.value)
    assert "dev_outputs.json" in message and record in message and field in message


def test_golds_not_matching_questions_report_both_sides(tmp_path):
    questions = write_json(tmp_path / "dev_questions.json", [question(str(i)) for i in range(10)])
    golds = [{"id": str(i), "output": "[1]"} for i in range(5, 20)]
    outputs = write_json(tmp_path / "dev_outputs.json", {"task": "LaMP_1", "golds": golds})
    with pytest.raises(LaMPFormatError) as error:
        read_lamp_split(questions, outputs)
    message = str(error.value)
    assert "dev_outputs.json" in message and "dev_questions.json" in message and "golds" in message
    assert "5 question id(s) have no gold (e.g. '0', '1', '2')" in message
    assert "10 gold id(s) have no question (e.g. '10', '11', '12')" in message


def test_gold_outside_the_labels_is_refused_with_file_record_and_advice(tmp_path):
    golds = [{"id": "1", "output": "[1]"}, {"id": "2", "output": " [2] "}, {"id": "3", "output": "[3]"},
             {"id": "4", "output": "2"}]
    write_split(tmp_path / "LaMP_1", "dev", [question(str(i)) for i in range(1, 5)], golds)
    with pytest.raises(LaMPFormatError) as error:
        load_split(tmp_path, "LaMP-1", "dev", FIELDS, labels=get_task("LaMP-1").labels)
    message = str(error.value)
    assert "dev_outputs.json: gold #2 (id '3')" in message  # " [2] " is a label once stripped, as scored
    assert "'[3]', which is not one of LaMP-1's 2 labels ('[1]', '[2]') (2 golds in all, e.g. ids '3', '4')" \
        in message
    assert "fix or remove that gold" in message
    # Without labels (a free-text task) any string is a gold.
    assert [e.output for e in load_split(tmp_path, "LaMP-1", "dev", FIELDS)][2] == "[3]"


def test_outputs_file_of_another_task_is_refused(tmp_path):
    _, outputs = write_split(tmp_path / "LaMP_1", "dev", [question("1")], [{"id": "1", "output": "[1]"}])
    write_json(outputs, {"task": "LaMP_2", "golds": [{"id": "1", "output": "[1]"}]})
    with pytest.raises(LaMPFormatError) as error:
        load_split(tmp_path, "LaMP-1", "dev", FIELDS)
    message = str(error.value)
    assert "LaMP_1/dev_outputs.json: field \"task\" is 'LaMP_2', expected 'LaMP_1'" in message
    assert "belongs to another task" in message and "re-download" in message
    write_json(outputs, {"golds": [{"id": "1", "output": "[1]"}]})  # no "task" field: other tools omit it
    assert load_split(tmp_path, "LaMP-1", "dev", FIELDS)[0].output == "[1]"


def test_missing_file_lists_folder(tmp_path):
    (tmp_path / "LaMP_1").mkdir()
    (tmp_path / "LaMP_1" / "train_questions.json").write_text("[]")
    with pytest.raises(LaMPFormatError) as error:
        load_split(tmp_path, "LaMP-1", "dev")
    message = str(error.value)
    assert "dev_questions.json" in message and "not found" in message and "train_questions.json" in message


def test_missing_folder_is_reported(tmp_path):
    with pytest.raises(LaMPFormatError, match="LaMP_1.*does not exist"):
        load_split(tmp_path, "LaMP-1", "dev")


def test_malformed_json_gives_line_and_column(tmp_path):
    path = tmp_path / "dev_questions.json"
    path.write_text('[\n  {"id": "1",\n   "input": "q" "profile": []}\n]', encoding="utf-8")
    with pytest.raises(LaMPFormatError, match=r"dev_questions.json.*line 3, column 17"):
        read_lamp_split(path)


def test_truncated_json(tmp_path):
    path = tmp_path / "dev_questions.json"
    path.write_text(json.dumps([question("1")])[:-10], encoding="utf-8")
    with pytest.raises(LaMPFormatError, match=r"dev_questions.json.*malformed JSON at line 1"):
        read_lamp_split(path)


def test_non_utf8_gives_byte_offset(tmp_path):
    path = tmp_path / "dev_questions.json"
    raw = b'[{"id": "1", "input": "caf\xe9", "profile": []}]'
    path.write_bytes(raw)
    with pytest.raises(LaMPFormatError, match=rf"dev_questions.json.*UTF-8 at byte offset {raw.index(0xE9)}\b"):
        read_lamp_split(path)


def test_bad_task_name():
    with pytest.raises(ValueError, match="LaMP-1"):
        split_paths(".", "citation", "dev")


# --- tasks -----------------------------------------------------------------------------------------------


def test_lamp1_spec():
    spec = get_task("LaMP-1")
    assert get_task("LaMP_1") is spec
    assert spec.labels == ("[1]", "[2]")
    assert spec.profile_fields == ("title", "abstract")
    assert spec.metrics == ("accuracy", "f1")
    assert spec.max_new_tokens == 4
    assert spec.profile_text({"title": " Deep nets ", "abstract": "We study nets. "}) == "Deep nets. We study nets."
    assert spec.profile_text({"title": "Deep nets.", "abstract": "We study nets."}) == "Deep nets. We study nets."
    assert spec.profile_text({"title": "Why nets?", "abstract": "Because."}) == "Why nets? Because."
    assert spec.profile_text({"title": "Deep nets", "abstract": ""}) == "Deep nets"


def test_join_sentences_skips_empty_parts():
    assert join_sentences("", "b", "  ") == "b"
    assert join_sentences() == ""


def test_unknown_task_lists_known():
    with pytest.raises(ValueError) as error:
        get_task("LaMP-99")
    assert all(name in str(error.value) for name in TASKS)


# --- history selection and batching ---------------------------------------------------------------------------


def test_select_history_keeps_most_recent_in_order():
    texts = ["a", "b", "c", "d"]
    assert select_history(texts, 2) == ["c", "d"]
    assert select_history(texts, 4) == texts
    assert select_history(texts, 10) == texts
    assert select_history(texts, 0) == texts
    assert select_history(texts, -1) == texts
    assert select_history(texts, 2) is not texts


def make_examples(with_outputs: bool = True) -> list[LaMPExample]:
    shared = paper(0)
    return [
        LaMPExample("1", "q1", [shared, paper(1), paper(2)], "[1]" if with_outputs else None),
        LaMPExample("2", "q2", [paper(3), shared], "[2]"),
    ]


def test_dataset_items_and_collate():
    dataset = LaMPDataset(make_examples(), get_task("LaMP-1"), max_history=2)
    assert len(dataset) == 2 and dataset.task.name == "LaMP-1"
    batch = collate([dataset[0], dataset[1]])
    assert isinstance(batch, Batch) and len(batch) == 2
    assert batch.ids == ["1", "2"]
    assert batch.task == ["LaMP-1", "LaMP-1"]
    assert batch.inputs == ["q1", "q2"]
    assert batch.targets == ["[1]", "[2]"]
    assert batch.history == [["Title 1. Abstract 1.", "Title 2. Abstract 2."],
                             ["Title 3. Abstract 3.", "Title 0. Abstract 0."]]


def test_collate_targets_none_when_any_missing():
    dataset = LaMPDataset(make_examples(with_outputs=False), get_task("LaMP-1"), max_history=0)
    batch = collate([dataset[0], dataset[1]])
    assert batch.targets is None
    assert len(batch.history[0]) == 3


def test_encoder_texts_are_distinct_after_selection_with_each_query_and_its_options():
    # A question without LaMP-1's shape is its own query and spells out no options.
    dataset = LaMPDataset(make_examples(), get_task("LaMP-1"), max_history=0)
    assert dataset.encoder_texts() == ["Title 0. Abstract 0.", "Title 1. Abstract 1.", "Title 2. Abstract 2.", "q1",
                                       "Title 3. Abstract 3.", "q2"]
    recent = LaMPDataset(make_examples(), get_task("LaMP-1"), max_history=1)
    assert recent.encoder_texts() == ["Title 2. Abstract 2.", "q1", "Title 0. Abstract 0.", "q2"]
    assert recent.encoder_texts([1]) == ["Title 0. Abstract 0.", "q2"]  # only the examples asked for
    question = 'For an author who has written the paper with the title "T", which reference is related? [1]: "A" [2]: "B"'
    shaped = LaMPDataset([LaMPExample("3", question, [paper(1)], "[1]")], get_task("LaMP-1"), max_history=0)
    assert shaped.encoder_texts() == ["Title 1. Abstract 1.", "A B", "A", "B"]
    assert collate([shaped[0]]).candidates == [("A", "B")]


def test_works_with_dataloader():
    from torch.utils.data import DataLoader

    dataset = LaMPDataset(make_examples(), get_task("LaMP-1"), max_history=1)
    [batch] = list(DataLoader(dataset, batch_size=4, collate_fn=collate))
    assert batch.ids == ["1", "2"] and batch.history == [["Title 2. Abstract 2."], ["Title 0. Abstract 0."]]
