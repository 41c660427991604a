"""dataset.atomic: a file or folder is either as it was or complete, and leftovers are recognised."""

import pytest

from dataset.atomic import atomic_folder, atomic_write, atomic_write_text, discard, remove_leftovers


def test_a_failed_write_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "report.json"
    atomic_write_text(target, "old")

    def half_then_fail(handle):
        handle.write(b"ne")
        raise OSError("disk full")
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    atomic_write_text(target, "new ü")
    assert target.read_text(encoding="utf-8") == "new ü"


def test_a_folder_appears_complete_or_not_at_all(tmp_path):
    final = tmp_path / "step-1"
    with pytest.raises(RuntimeError):
        with atomic_folder(final) as tmp:
            (tmp / "a.txt").write_text("a")
            raise RuntimeError("killed mid-write")
    assert list(tmp_path.iterdir()) == []

    with atomic_folder(final) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(OSError):  # without replace an existing folder is never overwritten
        with atomic_folder(final) as tmp:
            (tmp / "a.txt").write_text("second")
    assert (final / "a.txt").read_text() == "first"

    with atomic_folder(final, replace=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-1"]  # no temporary or trash folder left


def test_leftovers_of_a_killed_writer_are_removed_and_nothing_else(tmp_path):
    (tmp_path / ".step-2.tmp-abc").mkdir()
    (tmp_path / ".latest.tmp-xyz").write_text("step-2")
    (tmp_path / ".step-1.trash-12").mkdir()
    (tmp_path / ".model.lock").write_text("")
    (tmp_path / "step-1").mkdir()
    remove_leftovers(tmp_path, "latest")
    assert not (tmp_path / ".latest.tmp-xyz").exists() and (tmp_path / ".step-2.tmp-abc").exists()
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock", "step-1"]
    discard(tmp_path / "step-1")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.lock"]
