"""Where LaMP's files live: task names, and the two folder layouts the reader accepts.

A data folder (``--data_dir``) holds each task in one of two layouts, found per task and
split by `split_paths`:

- flattened, as ``python -m dataset.download`` writes it:
  ``DATA_DIR/LaMP_<i>/{split}_questions.json`` and ``{split}_outputs.json``;
- LaMP's server layout, as a folder downloaded by hand from LaMP's site holds it:
  ``DATA_DIR/LaMP_<i>/{split}/{split}_questions.json``, LaMP-2 (movie tagging) under
  ``DATA_DIR/LaMP_2/new/{split}/...``.

LaMP's time-based split is the same tree under ``<base>/time/``, so that folder is the
``--data_dir`` of a time-based run in both layouts. Both dataset/lamp.py (the reader) and
dataset/download/official.py (which writes the flattened layout from the server's) build on
this, and a "not found" error says how to download what is missing (`download_advice`).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Sequence

PUBLIC_TASKS = ("LaMP-1", "LaMP-2", "LaMP-3", "LaMP-4", "LaMP-5", "LaMP-7")
# LaMP-6 (email subject generation) is built on the Avocado email corpus, which is
# licensed, so LaMP does not host it.
PRIVATE_TASKS = {"LaMP-6": "LaMP-6 data is not public: it is built on the licensed Avocado email corpus, "
                           "which LaMP cannot redistribute. Drop LaMP-6 from the task list, or obtain the "
                           "corpus from its owners and build the files yourself."}
# LaMP-2 was re-released as movie tagging under "new/"; the folder above it holds the
# retired news-categorization task, which this project does not use (and never reads).
SERVER_SUBFOLDER = {"LaMP_2": "new"}
# The folder LaMP's server (and the downloader) put the time-based split in.
TIME_FOLDER = "time"
LAYOUTS = ("flattened", "server")
LAYOUT_HELP = ("DATA_DIR/LaMP_<i>/{split}_questions.json and {split}_outputs.json (the downloader's layout), "
               "or LaMP's own DATA_DIR/LaMP_<i>/{split}/{split}_questions.json (LaMP-2 under LaMP_2/new/)")


def official_task_name(task: str) -> str:
    """"LaMP-1" or "LaMP_1" -> "LaMP_1", the spelling of folders and the "task" field."""
    match = re.fullmatch(r"LaMP[-_](\w+)", task)
    if match is None:
        raise ValueError(f"task name must look like 'LaMP-1', got {task!r}")
    return f"LaMP_{match.group(1)}"


def layout_paths(data_dir: str | os.PathLike, task: str, split: str, layout: str) -> tuple[Path, Path]:
    """-> (questions path, outputs path) of `split` of `task` under `data_dir` in `layout`."""
    folder = Path(data_dir) / official_task_name(task)
    if layout == "server":
        folder = folder / SERVER_SUBFOLDER.get(folder.name, "") / split
    elif layout != "flattened":
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return folder / f"{split}_questions.json", folder / f"{split}_outputs.json"


def split_paths(data_dir: str | os.PathLike, task: str, split: str) -> tuple[Path, Path]:
    """-> (questions path, outputs path) of `split` of `task`, in whichever layout holds its questions.

    The flattened layout wins when both do. When neither does, the flattened paths are
    returned, so "file not found" names the file the downloader would write.
    """
    for layout in LAYOUTS:
        questions, outputs = layout_paths(data_dir, task, split, layout)
        if questions.is_file():
            return questions, outputs
    return layout_paths(data_dir, task, split, "flattened")


def server_relative_path(task: str, split: str, kind: str) -> str:
    """The path of one file under LaMP's base URL (or its time/ folder), e.g. LaMP_2/new/dev/dev_outputs.json."""
    questions, outputs = layout_paths(".", task, split, "server")
    return (questions if kind == "questions" else outputs).as_posix()


def download_command(out_dir: str | os.PathLike, tasks: Sequence[str], split_kind: str) -> str:
    """The shell command that downloads `tasks` (split_kind "user" or "time") into `out_dir`."""
    return (f"python -m dataset.download --tasks {','.join(tasks)} --split {split_kind} "
            f"--out {shlex.quote(str(out_dir))}")


def download_advice(data_dir: str | os.PathLike, tasks: Sequence[str]) -> str:
    """How to get `tasks` into `data_dir` (a folder passed as --data_dir), for "not found" errors.

    A folder named "time" is taken to be the time-based split, downloaded with
    ``--split time --out <its parent>``.
    """
    data_dir = Path(data_dir)
    lines = []
    downloadable = []
    for task in dict.fromkeys(tasks):
        try:
            name = official_task_name(task).replace("_", "-")
        except ValueError:
            name = task
        if name in PRIVATE_TASKS:
            lines.append(PRIVATE_TASKS[name])
        elif name in PUBLIC_TASKS:
            downloadable.append(name)
        else:
            lines.append(f"{task} is not one of LaMP's tasks, so there is nothing to download for it.")
    if downloadable:
        if data_dir.name == TIME_FOLDER:
            lines.append(f"Download with: {download_command(data_dir.parent, downloadable, 'time')}")
        else:
            lines.append(f"Download with: {download_command(data_dir, downloadable, 'user')} "
                         f"(for LaMP's time-based split use --split time and then "
                         f"--data_dir={data_dir / 'time'}).")
    return "\n".join(lines)
