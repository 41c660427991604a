"""The shared install of generated task folders (dataset.embedded.install), through both embedded tasks."""

import re

import pytest

from dataset.embedded import lamp1, lamp7
from dataset.embedded.lamp1 import ensure_embedded_data, generate_embedded_lamp1
from dataset.embedded.lamp7 import ensure_embedded_lamp7, generate_embedded_lamp7
from dataset.embedded.install import EXPECTED_FILES, MARKER
from dataset.lamp import load_split
from dataset.tasks import get_task

# (ensure, generate, task, folder, default dev size while testing, the other embedded task's folder)
TASKS = [(ensure_embedded_data, generate_embedded_lamp1, "LaMP-1", "LaMP_1", 7, "LaMP_7"),
         (ensure_embedded_lamp7, generate_embedded_lamp7, "LaMP-7", "LaMP_7", 7, "LaMP_1")]
IDS = [task[2] for task in TASKS]


def entries(folder):
    """The names in `folder`, sorted, less the writer locks (dataset.atomic.writer_lock) that stay."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture(autouse=True)
def small_defaults(monkeypatch):
    """The default sizes, shrunk: `ensure` reads them when called, and the full-size data
    would only slow these tests down. A generate() call given the same sizes makes the
    same files as ensure()."""
    for module in (lamp1, lamp7):
        monkeypatch.setattr(module, "N_TRAIN", 9)
        monkeypatch.setattr(module, "N_DEV", 7)
        monkeypatch.setattr(module, "N_TEST", 3)
    monkeypatch.setattr(lamp1, "PAPERS_PER_SUBTOPIC", 10)


def sizes(generate) -> dict:
    module = lamp1 if generate is generate_embedded_lamp1 else lamp7
    extra = {"papers_per_subtopic": 10} if module is lamp1 else {}
    return {"n_train": module.N_TRAIN, "n_dev": module.N_DEV, "n_test": module.N_TEST, **extra}


@pytest.mark.parametrize("ensure, generate, task, folder, n_dev, other", TASKS, ids=IDS)
def test_ensure_generates_once(tmp_path, ensure, generate, task, folder, n_dev, other):
    out = tmp_path / "cache"
    assert ensure(out, seed=0) == out
    stamps = {name: (out / folder / name).stat().st_mtime_ns for name in EXPECTED_FILES}
    ensure(out, seed=0)
    assert {name: (out / folder / name).stat().st_mtime_ns for name in EXPECTED_FILES} == stamps
    assert entries(out) == [folder]  # no staging folder left behind
    assert len(load_split(out, task, "dev", get_task(task).profile_fields)) == n_dev


@pytest.mark.parametrize("ensure, generate, task, folder, n_dev, other", TASKS, ids=IDS)
def test_ensure_repairs_incomplete_or_other_seed_or_version(tmp_path, ensure, generate, task, folder, n_dev, other):
    reference = generate(tmp_path / "reference", seed=0, **sizes(generate)) / folder
    out = tmp_path / "cache"
    ensure(out, seed=1)
    (out / folder / "dev_outputs.json").unlink()  # e.g. removed by hand
    ensure(out, seed=1)
    assert (out / folder / "dev_outputs.json").is_file()
    ensure(out, seed=0)  # another seed replaces the copy
    for name in EXPECTED_FILES:
        assert (out / folder / name).read_bytes() == (reference / name).read_bytes()
    marker = out / folder / MARKER
    marker.write_text(re.sub(r'"version": \d+', '"version": 0', marker.read_text()))  # an older generator
    (out / folder / "dev_questions.json").write_text("[]")
    ensure(out, seed=0)
    assert (out / folder / "dev_questions.json").read_bytes() == (reference / "dev_questions.json").read_bytes()
    assert entries(out) == [folder]


@pytest.mark.parametrize("ensure, generate, task, folder, n_dev, other", TASKS, ids=IDS)
def test_ensure_never_overwrites_foreign_data(tmp_path, ensure, generate, task, folder, n_dev, other):
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "dev_questions.json").write_text("[]")
    with pytest.raises(FileExistsError, match=folder):
        ensure(tmp_path)
    assert [p.name for p in (tmp_path / folder).iterdir()] == ["dev_questions.json"]


@pytest.mark.parametrize("ensure, generate, task, folder, n_dev, other", TASKS, ids=IDS)
def test_ensure_leaves_other_tasks_alone(tmp_path, ensure, generate, task, folder, n_dev, other):
    (tmp_path / other).mkdir()
    (tmp_path / other / "dev_questions.json").write_text("[]")
    ensure(tmp_path, seed=0)
    assert entries(tmp_path) == sorted([folder, other])
    assert [p.name for p in (tmp_path / other).iterdir()] == ["dev_questions.json"]
