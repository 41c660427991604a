"""Install a generated task folder once, atomically, and recognise an up-to-date copy.

Shared by the embedded tasks (dataset.embedded.lamp1, dataset.embedded.lamp7). Each generator
writes a marker file next to its data recording how it was made; a folder is current
when its files are all there and its marker matches what the generator would write now.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from dataset.atomic import atomic_write_text, writer_lock

MARKER = "embedded.json"  # written next to the data; records how it was generated
SPLITS = ("train", "dev", "test")
# LaMP keeps test golds hidden, and so do the generators.
EXPECTED_FILES = tuple(f"{split}_questions.json" for split in SPLITS) + ("train_outputs.json", "dev_outputs.json")


def number_questions(sizes: dict[str, int], first_id: int, specs: Callable[[int], Iterable],
                     make: Callable[[str, object], tuple[dict, dict]]) -> dict[str, tuple[list, list]]:
    """split -> (questions, golds): per split in SPLITS order, `make(question_id, spec)` for
    each spec `specs(size)` yields, the ids counting up from `first_id` across the splits
    (one question per user, so no user is in two splits). Specs are taken one at a time,
    so generators that draw from one RNG keep their draws in the same order."""
    splits, next_id = {}, first_id
    for split in SPLITS:
        questions, golds = [], []
        for spec in specs(sizes[split]):
            question, gold = make(str(next_id), spec)
            questions.append(question)
            golds.append(gold)
            next_id += 1
        splits[split] = (questions, golds)
    return splits


def write_generated_task(folder: Path, task: str, splits: dict[str, tuple[list, list]], marker: dict) -> None:
    """Write split -> (questions, golds) in LaMP's official files under `folder`, then the marker.

    The test split's golds are not written, as in LaMP. The marker goes last: a folder
    with a marker is complete.
    """
    for split, (questions, golds) in splits.items():
        atomic_write_text(folder / f"{split}_questions.json", json.dumps(questions))
        if split != "test":
            atomic_write_text(folder / f"{split}_outputs.json", json.dumps({"task": task, "golds": golds}))
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=1))


def is_current(folder: Path, marker: dict) -> bool:
    """Whether `folder` holds every expected file and a marker equal to `marker`."""
    if not all((folder / name).is_file() for name in EXPECTED_FILES):
        return False
    try:
        return json.loads((folder / MARKER).read_text(encoding="utf-8")) == marker
    except (OSError, ValueError):
        return False


def ensure_generated(out_dir: str | os.PathLike, task_folder: str, marker: dict,
                     generate: Callable[[Path], object]) -> Path:
    """Make `out_dir/task_folder` current, calling `generate(staging_dir)` only if it is not.

    Data is generated in a temporary folder inside `out_dir` and renamed into place, so a
    crash never leaves half a dataset. A copy with another marker (seed, sizes, version)
    is replaced; a folder the generators did not make (no marker) is never touched.
    """
    out_dir = Path(out_dir)
    folder = out_dir / task_folder
    if is_current(folder, marker):
        return out_dir
    # One writer: the other ranks of a first multi-process run (and other runs on the same
    # cache) wait here, then find the folder current.
    with writer_lock(out_dir / f".{task_folder}.lock"):
        if is_current(folder, marker):
            return out_dir
        if folder.exists() and not (folder / MARKER).is_file():
            raise FileExistsError(f"{folder} exists but was not made by the embedded generator; refusing to "
                                  f"overwrite it. Move it away or choose another folder for the embedded task.")
        staging = Path(tempfile.mkdtemp(prefix=".embedded-", dir=out_dir))
        try:
            generate(staging)
            if folder.exists():
                os.replace(folder, staging / "stale")  # removed with the staging folder
            os.replace(staging / task_folder, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir
