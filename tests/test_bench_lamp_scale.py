"""bench.lamp_scale: its LaMP-shaped files are valid LaMP files, its memory measure reads them, and its
settings reach the first-step run."""

import json

import pytest

from bench import lamp_scale
from dataset.lamp import load_split
from dataset.tasks import get_task


@pytest.mark.parametrize("task", list(lamp_scale.SHAPES))
def test_shaped_files_follow_each_tasks_format(tmp_path, task):
    path = lamp_scale.write_split(tmp_path, task, "dev", 30)
    spec = get_task(task)
    split = load_split(tmp_path, task, "dev", spec.profile_fields, spec.labels, cache_dir=tmp_path / "cache")
    assert len(split) == 30 and all(e.output for e in split)
    sizes = [len(e.profile) for e in split]
    assert 0.3 * lamp_scale.SHAPES[task].profile < sum(sizes) / len(sizes) < 2 * lamp_scale.SHAPES[task].profile
    assert json.loads(path.read_text())[0]["input"].startswith(lamp_scale.INPUTS[task][:20])


def test_memory_measure_reads_every_example_of_the_converted_table(tmp_path):
    path = lamp_scale.write_split(tmp_path, "LaMP-3", "train", 12)
    converted = lamp_scale.child_memory("convert", str(path), str(tmp_path / "cache"))
    read = lamp_scale.child_memory("read", str(path), str(tmp_path / "cache"))
    whole = lamp_scale.child_memory("json", str(path), str(tmp_path / "cache"))
    assert converted["touched"] == 0 and read["touched"] == whole["touched"] > 0
    records = json.loads(path.read_text())
    largest = max(sum(len(item["text"]) for item in record["profile"]) for record in records)
    assert read["largest_example_chars"] == whole["largest_example_chars"] == largest
    assert len(list((tmp_path / "cache").rglob("*.arrow"))) == 1
    # As training reads: each profile's last 3 items.
    last = lamp_scale.child_memory("read", str(path), str(tmp_path / "cache"), "3")
    assert last["touched"] == sum(len(item["text"]) for record in records for item in record["profile"][-3:])


def test_memory_table_sets_the_read_addition_beside_the_largest_example():
    def row(questions, read_mib, largest):
        measure = {"added_bytes": read_mib * 2**20, "largest_example_chars": largest}
        whole = {"added_bytes": 2 * read_mib * 2**20, "largest_example_chars": 2 * largest}
        return {"questions": questions, "file_bytes": 10 * questions * 2**20, "max_history": 512, "convert": measure,
                "read": measure, "read_whole": whole, "json": measure}
    text = lamp_scale.tables({"memory": [row(200, 2.0, 250_000), row(2000, 3.0, 400_000)]})
    assert "| 2000 | 20000.0 | 3.0 | 3.00 | 0.000 | 0.40 | 6.00 | 0.80 | 3.0 |" in text
    assert "read_flatness (largest / smallest addition of the training read): 1.50" in text
    assert "read_whole_flatness (the same, whole profiles): 1.50; largest_example_growth (largest / smallest " \
           "of the largest whole profile's text): 1.60" in text


def test_max_history_reaches_the_first_step_run_with_the_other_settings(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(lamp_scale, "memory", lambda *args: [])
    monkeypatch.setattr(lamp_scale, "first_step", lambda data, cache, settings, questions: seen.append(settings) or [])
    monkeypatch.setattr(lamp_scale, "tables", lambda report: "")
    lamp_scale.main(["--tasks=LaMP-3", "--fraction=0.0001", "--fill_texts=0", "--max_history=7", "--lr=1e-4",
                     f"--data_root={tmp_path}", f"--out={tmp_path / 'report.json'}", "--results="])
    assert seen == [["--lr=1e-4", "--max_history=7"]]
