"""Download LaMP's official files into the flattened layout (dataset/layout.py).

    python -m dataset.download --tasks LaMP-1,LaMP-2 --split user --out DATA_DIR
    python -m dataset.download --tasks all --split time --out DATA_DIR --splits train,dev

LaMP publishes each file at ``<base>/LaMP_<i>/<split>/<split>_{questions,outputs}.json``
(LaMP-2, the movie-tagging task, under ``LaMP_2/new/``) and the time-based split under
``<base>/time/...``. They land in ``DATA_DIR/LaMP_<i>/<split>_*.json`` (user split) or
``DATA_DIR/time/LaMP_<i>/...`` (time split); train with ``--data_dir=DATA_DIR`` or
``--data_dir=DATA_DIR/time``. Test outputs are hidden by LaMP, so only test questions exist.
(A tree copied from LaMP's site as it is, in the server layout, is read just as well.)

Each file streams into ``<name>.part`` next to its final name. Connection errors, 5xx
answers and bodies cut short are retried with exponential backoff, resuming the
``.part`` with an HTTP Range request (restarting when the server ignores Range). The
finished ``.part`` must parse as LaMP JSON before it is renamed, atomically, to the final
name, so a final name only ever holds a complete, valid file. Files already present and
valid are skipped, so an interrupted run is simply run again.
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from dataset.layout import (PRIVATE_TASKS, PUBLIC_TASKS, TIME_FOLDER, layout_paths, official_task_name,
                            server_relative_path)

DEFAULT_BASE_URL = "https://ciir.cs.umass.edu/downloads/LaMP"
SPLIT_KINDS = ("user", "time")
SPLITS = ("train", "dev", "test")
PART_SUFFIX = ".part"

# Retry tuning. The backoff doubles per retry: 1, 2, 4, 8, 16 s by default, capped so
# that a long outage does not turn into a silent hour-long wait.
DEFAULT_RETRIES = 5
DEFAULT_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0
DEFAULT_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
# Statuses that say "try again later" rather than "this will never work".
_RETRYABLE_STATUSES = {408, 429}
_USER_AGENT = "behavioral-twin-lamp-download/1"


class DownloadError(RuntimeError):
    """A LaMP file could not be downloaded; the message says which, why and what to do."""


class InvalidLaMPFile(ValueError):
    """A downloaded file is not LaMP JSON of the expected kind."""


@dataclass(frozen=True)
class LaMPFile:
    """One official file: where LaMP publishes it and where the project reads it."""

    task: str  # "LaMP-1"
    split_kind: str  # "user" or "time"
    split: str  # "train", "dev" or "test"
    kind: str  # "questions" or "outputs"
    url: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.task} {self.split} {self.kind} ({self.split_kind}-based split)"


# --- what to fetch -------------------------------------------------------------------------------------


def canonical_tasks(tasks: Iterable[str]) -> list[str]:
    """Validate task names and spell them "LaMP-<i>"; "all" stands for every public task.

    Raises DownloadError for LaMP-6 (not public) and for names that are not LaMP tasks.
    """
    names: list[str] = []
    for task in tasks:
        task = task.strip()
        if task.lower() == "all":
            names.extend(PUBLIC_TASKS)
            continue
        try:
            name = official_task_name(task).replace("_", "-")
        except ValueError:
            name = task
        if name in PRIVATE_TASKS:
            raise DownloadError(PRIVATE_TASKS[name])
        if name not in PUBLIC_TASKS:
            raise DownloadError(f"unknown task {task!r}; LaMP's downloadable tasks are "
                                f"{', '.join(PUBLIC_TASKS)} (or 'all').")
        names.append(name)
    return list(dict.fromkeys(names))  # drop repeats, keep order


def local_root(out_dir: str | os.PathLike, split_kind: str) -> Path:
    """The folder to pass as --data_dir: `out_dir` for the user split, `out_dir`/time for the time split."""
    _check_split_kind(split_kind)
    return Path(out_dir) / TIME_FOLDER if split_kind == "time" else Path(out_dir)


def remote_url(base_url: str, task: str, split_kind: str, split: str, kind: str) -> str:
    """LaMP's URL of one file, e.g. <base>/time/LaMP_2/new/dev/dev_outputs.json."""
    _check_split_kind(split_kind)
    parts = [base_url.rstrip("/")] + ([TIME_FOLDER] if split_kind == "time" else [])
    return "/".join(parts + [server_relative_path(task, split, kind)])


def lamp_files(tasks: Iterable[str], out_dir: str | os.PathLike, split_kind: str = "user",
               splits: Iterable[str] = SPLITS, base_url: str = DEFAULT_BASE_URL) -> list[LaMPFile]:
    """Every file to fetch for `tasks` x `splits`; test splits have questions only (LaMP hides their golds)."""
    splits = list(splits)
    unknown = [split for split in splits if split not in SPLITS]
    if unknown or not splits:
        raise DownloadError(f"splits: {','.join(splits) or 'nothing'} is not a subset of {','.join(SPLITS)}")
    root = local_root(out_dir, split_kind)
    files = []
    for task in canonical_tasks(tasks):
        for split in splits:
            # Always the flattened layout: a hand-downloaded server tree beside it is left alone.
            questions, outputs = layout_paths(root, task, split, "flattened")
            kinds = (("questions", questions),) if split == "test" else (("questions", questions),
                                                                       ("outputs", outputs))
            for kind, path in kinds:
                files.append(LaMPFile(task, split_kind, split, kind,
                                      remote_url(base_url, task, split_kind, split, kind), path))
    return files


# --- validation ------------------------------------------------------------------------------------------


def validate_lamp_json(path: str | os.PathLike, kind: str) -> None:
    """Check that `path` parses and has the shape of a LaMP questions or outputs file.

    Questions: a list of objects with "id", "input" and a "profile" list. Outputs: an
    object with "task" and a "golds" list. This is a structural check that catches
    truncated bodies and error pages; field-level checks happen when the data is read.
    """
    path = Path(path)
    try:
        with path.open("rb") as handle:
            document = json.load(handle)
    except ValueError as error:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise InvalidLaMPFile(f"not valid UTF-8 JSON ({error})") from error
    if kind == "questions":
        if not isinstance(document, list):
            raise InvalidLaMPFile(f"top level is {type(document).__name__}, expected a list of question records")
        for index, record in enumerate(document):
            if not isinstance(record, dict) or not {"id", "input", "profile"} <= record.keys():
                raise InvalidLaMPFile(f'record #{index} is not an object with "id", "input" and "profile"')
            if not isinstance(record["profile"], list):
                raise InvalidLaMPFile(f'record #{index}: "profile" is not a list')
    elif kind == "outputs":
        if not isinstance(document, dict) or "task" not in document or "golds" not in document:
            raise InvalidLaMPFile('top level is not an object with "task" and "golds"')
        if not isinstance(document["golds"], list):
            raise InvalidLaMPFile('"golds" is not a list')
    else:
        raise ValueError(f"kind must be 'questions' or 'outputs', got {kind!r}")


# --- one file --------------------------------------------------------------------------------------------


def partial_path(dest: str | os.PathLike) -> Path:
    """Where the download of `dest` accumulates until it is complete and valid."""
    dest = Path(dest)
    return dest.with_name(dest.name + PART_SUFFIX)


class _Retry(Exception):
    """An attempt failed in a way that another attempt may fix; the message says how."""


def fetch(url: str, dest: str | os.PathLike, validate: Callable[[Path], None], *, label: str = "",
          retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF_S,
          timeout: float = DEFAULT_TIMEOUT_S, chunk_size: int = CHUNK_BYTES, progress: bool = True) -> bool:
    """Download `url` to `dest` unless `dest` already passes `validate`; True if it downloaded.

    `validate(path)` raises InvalidLaMPFile for bad content. Up to `retries` retries follow
    the first attempt, waiting `backoff` * 2**k seconds (capped) before retry k. On
    failure `dest` is untouched and whatever arrived stays in the ``.part`` file, which
    the next call resumes from.
    """
    dest = Path(dest)
    label = label or dest.name
    if dest.is_file():
        try:
            validate(dest)
            return False
        except InvalidLaMPFile as error:
            _note(f"{dest}: present but invalid ({error}); downloading it again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(dest)

    failures: list[str] = []
    for attempt in range(retries + 1):
        if attempt:
            delay = min(backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
            _note(f"{label}: {failures[-1]}; retry {attempt}/{retries} in {delay:.3g}s")
            time.sleep(delay)
        try:
            _attempt(url, part, label, timeout, chunk_size, progress, validate)
            break
        except urllib.error.HTTPError as error:
            if error.code < 500 and error.code not in _RETRYABLE_STATUSES:
                raise DownloadError(_http_error_message(error, url, label)) from error
            failures.append(f"HTTP {error.code} {error.reason}")
        except _Retry as error:
            failures.append(str(error))
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException,
                ssl.SSLError) as error:
            failures.append(f"{type(error).__name__}: {getattr(error, 'reason', None) or error}")
    else:
        kept = (f"The partial file {part} ({part.stat().st_size} bytes) is kept; rerun to resume."
                if part.is_file() and part.stat().st_size else "Nothing was received.")
        raise DownloadError(
            f"{label}: giving up on {url} after {retries + 1} attempt(s); last error: {failures[-1]}. "
            f"{kept} {dest} was not written. Check the network connection and the URL (--base-url).")

    try:
        validate(part)
    except InvalidLaMPFile as error:
        raise DownloadError(
            f"{label}: the download from {url} finished but is not a valid LaMP file: {error}. "
            f"It stays in {part}; {dest} was not written. Either the server sent "
            f"something else (an error page? check --base-url) or a resumed download got spliced; "
            f"delete {part} and rerun to download from scratch.") from error
    os.replace(part, dest)  # atomic: dest is either absent or complete
    return True


def _attempt(url: str, part: Path, label: str, timeout: float, chunk_size: int, progress: bool,
             validate: Callable[[Path], None]) -> None:
    """One request that carries `part` to the end of the body, resuming from its current size."""
    offset = part.stat().st_size if part.is_file() else 0
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code != 416 or not offset:
            raise
        # 416: the .part already reaches the end of the remote file. Done if it is valid;
        # otherwise it is stale (e.g. the file changed on the server), so start over.
        try:
            validate(part)
            return
        except InvalidLaMPFile:
            part.unlink()
            raise _Retry(f"{part} is as long as the remote file but invalid; discarded it") from None

    with response:
        length = _int_header(response.headers.get("Content-Length"))
        if response.status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start != offset:
                # Splicing bytes from the wrong place would corrupt the file.
                part.unlink()
                raise _Retry(f"server resumed at byte {start} instead of {offset}; restarting from scratch")
            mode = "ab"
        else:
            if offset:
                _note(f"{label}: the server ignored the Range request; restarting from byte 0")
            mode, offset = "wb", 0
        expected = None if length is None else offset + length
        received = offset
        with part.open(mode) as handle, tqdm(total=expected, initial=offset, desc=label, unit="B",
                                             unit_scale=True, unit_divisor=1024, disable=not progress,
                                             leave=True) as bar:
            while chunk := response.read(chunk_size):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            handle.flush()
            os.fsync(handle.fileno())
    if expected is not None and received != expected:
        raise _Retry(f"body truncated: {received} of {expected} bytes arrived")


def _http_error_message(error: urllib.error.HTTPError, url: str, label: str) -> str:
    if error.code == 404:
        return (f"{label}: HTTP 404 Not Found for {url}. LaMP has no file at this address: check the "
                f"task and split names and --base-url (the official base is {DEFAULT_BASE_URL}).")
    return (f"{label}: HTTP {error.code} {error.reason} for {url}. This is not a temporary error, so it "
            f"was not retried; check the URL (--base-url) and whether the server needs access rights.")


def _int_header(value: str | None) -> int | None:
    return int(value) if value is not None and value.strip().isdigit() else None


def _content_range_start(value: str | None) -> int | None:
    """First byte of a "bytes START-END/TOTAL" Content-Range, None if absent or malformed."""
    match = re.fullmatch(r"\s*bytes\s+(\d+)-\d+/(\d+|\*)\s*", value or "")
    return int(match.group(1)) if match else None


def _check_split_kind(split_kind: str) -> None:
    if split_kind not in SPLIT_KINDS:
        raise DownloadError(f"split: {split_kind!r} must be 'user' (user-based) or 'time' (time-based)")


def _note(message: str) -> None:
    """A progress note on stderr that does not break tqdm's bars."""
    tqdm.write(message, file=sys.stderr)


# --- many files ------------------------------------------------------------------------------------------


def download_lamp(tasks: Iterable[str], out_dir: str | os.PathLike, split_kind: str = "user",
                  splits: Iterable[str] = SPLITS, *, base_url: str = DEFAULT_BASE_URL,
                  retries: int = DEFAULT_RETRIES, backoff: float = DEFAULT_BACKOFF_S,
                  timeout: float = DEFAULT_TIMEOUT_S, chunk_size: int = CHUNK_BYTES,
                  progress: bool = True) -> list[Path]:
    """Fetch every file of `tasks` x `splits`; returns the paths downloaded (not those skipped).

    Stops at the first file that fails, raising DownloadError; files finished before it
    stay, so rerunning continues where it stopped.
    """
    downloaded = []
    for file in lamp_files(tasks, out_dir, split_kind, splits, base_url):
        validate = functools.partial(validate_lamp_json, kind=file.kind)
        if fetch(file.url, file.path, validate, label=file.label, retries=retries, backoff=backoff,
                 timeout=timeout, chunk_size=chunk_size, progress=progress):
            downloaded.append(file.path)
    return downloaded


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m dataset.download``."""
    parser = argparse.ArgumentParser(prog="python -m dataset.download", description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", required=True,
                        help=f"comma-separated task names, e.g. LaMP-1,LaMP-2, or 'all' ({','.join(PUBLIC_TASKS)})")
    parser.add_argument("--split", choices=SPLIT_KINDS, default="user",
                        help="LaMP's user-based or time-based split (time goes to OUT/time)")
    parser.add_argument("--out", required=True, help="data folder; train with --data_dir=OUT (or OUT/time)")
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated subset of train,dev,test")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help="where LaMP's files are served")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="retries per file after the first try")
    parser.add_argument("--backoff", type=float, default=DEFAULT_BACKOFF_S,
                        help="seconds before the first retry; doubles with each retry")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds without data before a retry")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 on success, 1 on a download error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.retries < 0 or args.backoff < 0 or args.timeout <= 0:
        parser.error("--retries and --backoff must be >= 0 and --timeout > 0")

    try:
        files = lamp_files(args.tasks.split(","), args.out, args.split, args.splits.split(","), args.base_url)
        downloaded = download_lamp(args.tasks.split(","), args.out, args.split, args.splits.split(","),
                                   base_url=args.base_url, retries=args.retries, backoff=args.backoff,
                                   timeout=args.timeout, progress=not args.quiet)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    root = local_root(args.out, args.split)
    print(f"{len(downloaded)} file(s) downloaded, {len(files) - len(downloaded)} already present, "
          f"under {root}. Train with --data_dir={root}")
    return 0

