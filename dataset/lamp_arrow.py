"""LaMP questions files as Arrow tables: converted once, read row by row.

A LaMP questions file is one JSON array of gigabytes (LaMP-3's train split: 20,000
questions of about 185 reviews each). Parsing it whole in every process costs several
times its size in memory per rank. Instead each file is converted once into an Arrow
table under the cache folder, with `datasets`' ArrowWriter, while the records stream out
of the JSON one at a time (`iter_json_array`, so the conversion holds one record at a
time, not the file); every process then reads an example's row from that table only
when it is asked for, with positioned reads of the bytes the row needs (`ArrowQuestions`).

    <cache>/lamp_arrow/<path key>/<identity key>.arrow
        columns: id (string), input (string),
                 profile (list of binary: zlib of the JSON of each run of ITEMS_PER_CHUNK items, in order)

The identity is the file's resolved path, size and modification time, the conversion's
format and the profile fields the reader requires (`key_parts`): a changed file gets a new
table and the stale one of that path is removed. One process converts at a time
(dataset.atomic.writer_lock on the path's folder); the others wait, then open what it
wrote, which is renamed into place only when complete. All ranks of a node read the same
file, so its pages sit in memory once, in the page cache; each process holds only the
row it is reading.

The profile column is compressed (zlib) in chunks so that a reader who keeps only a profile's last N
items (training keeps the last `max_history`) decodes those chunks alone: what one
example costs in memory is then bounded by N, however long the user's profile is.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
import weakref
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
from datasets import Features, List, Value
from datasets.arrow_writer import ArrowWriter

from dataset.atomic import atomic_write, writer_lock

FORMAT_VERSION = 2  # part of every identity: a change of the columns below makes new tables
FEATURES = Features({"id": Value("string"), "input": Value("string"), "profile": List(Value("binary"))})
ITEMS_PER_CHUNK = 32  # profile items per compressed chunk
READ_BYTES = 1 << 20  # JSON read per step of the streaming parse
ROWS_PER_BATCH = 64  # rows per Arrow record batch: what the conversion holds before writing


class NotStreamable(Exception):
    """The file is not a well-formed UTF-8 JSON array; a full parse says exactly why."""


def iter_json_array(path: Path, read_bytes: int = READ_BYTES) -> Iterator[Any]:
    """Yield the elements of the top-level JSON array in `path` one at a time, holding at most
    one element (and one read) in memory. Raises NotStreamable at the first sign that the file
    is not a UTF-8 JSON array (the caller then parses it whole to name the problem)."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as handle:
        buffer, position, at_end = "", 0, False

        def more() -> bool:
            nonlocal buffer, position, at_end
            if at_end:
                return False
            chunk = handle.read(read_bytes)
            at_end = not chunk
            try:
                text = utf8.decode(chunk, final=at_end)
            except UnicodeDecodeError as error:
                raise NotStreamable from error
            buffer, position = buffer[position:] + text, 0
            return bool(text) or not at_end

        def skip_space() -> str:
            """The next non-space character ('' at the end of the file), not consumed."""
            nonlocal position
            while True:
                while position < len(buffer) and buffer[position] in " \t\r\n":
                    position += 1
                if position < len(buffer):
                    return buffer[position]
                if not more():
                    return ""

        if skip_space() != "[":
            raise NotStreamable
        position += 1
        if skip_space() == "]":
            position += 1
        else:
            while True:
                skip_space()
                while True:  # a record may span reads: parse again from its start with more text
                    try:
                        record, end = decoder.raw_decode(buffer, position)
                        break
                    except json.JSONDecodeError as error:
                        if not more():
                            raise NotStreamable from error
                position = end
                yield record
                following = skip_space()
                position += 1
                if following == "]":
                    break
                if following != ",":
                    raise NotStreamable
        if skip_space() != "":
            raise NotStreamable  # text after the array


def key_parts(path: Path, required: Iterable[str]) -> dict:
    """What a converted table depends on: the file's identity and the reader's checks."""
    stat = path.stat()
    return {"format": FORMAT_VERSION, "path": str(path.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns, "required": sorted(required)}


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def table_path(cache_dir: Path, path: Path, required: Iterable[str]) -> Path:
    parts = key_parts(path, required)
    return Path(cache_dir) / "lamp_arrow" / _digest(parts["path"]) / f"{_digest(parts)}.arrow"


def _write_rows(rows: Iterable[tuple[str, str, list]], sink) -> int:
    """(id, input, profile) rows -> an Arrow stream on `sink` (a binary file or pyarrow stream)."""
    stream = sink if isinstance(sink, pa.NativeFile) else pa.PythonFile(sink, mode="w")
    writer = ArrowWriter(features=FEATURES, stream=stream, writer_batch_size=ROWS_PER_BATCH)
    for example_id, text, profile in rows:
        chunks = [zlib.compress(json.dumps(profile[start:start + ITEMS_PER_CHUNK], ensure_ascii=False).encode("utf-8"), 1)
                  for start in range(0, len(profile), ITEMS_PER_CHUNK)]
        writer.write({"id": example_id, "input": text, "profile": chunks})
    count, _ = writer.finalize(close_stream=False)
    return count


# The buffers of a record batch that rows are read from; `_layout` finds where each begins.
ID_OFFSETS, ID_CHARS, INPUT_OFFSETS, INPUT_CHARS, CHUNK_SPANS, CHUNK_OFFSETS, CHUNK_BYTES = range(7)


def _layout(stream: pa.Buffer, after_batch: Callable[[], None] = lambda: None) -> tuple[np.ndarray, np.ndarray]:
    """The Arrow stream held in `stream` -> the first row of each record batch [N + 1] (the last
    entry is the row count) and the byte position in the stream of each batch's buffers [N, 7]
    (ID_OFFSETS ... CHUNK_BYTES). Only the batches' headers are read, not their rows; `after_batch`
    runs after each one."""
    first_rows, positions = [0], []
    for batch in pa.ipc.open_stream(pa.BufferReader(stream)):  # zero-copy: buffers are views into `stream`
        ids, inputs, profile = (batch.column(name) for name in ("id", "input", "profile"))
        # string: [validity, offsets, characters]; list of binary: [validity, chunk spans, validity, offsets, bytes]
        buffers = [*ids.buffers()[1:], *inputs.buffers()[1:], profile.buffers()[1], *profile.buffers()[3:]]
        positions.append([b.address - stream.address if b is not None and b.size else 0 for b in buffers])
        first_rows.append(first_rows[-1] + batch.num_rows)
        after_batch()
    return np.array(first_rows, dtype=np.int64), np.array(positions, dtype=np.int64).reshape(-1, 7)


class ArrowQuestions:
    """The (id, input, profile) rows of one questions file, read from its Arrow table.

    A row is read with positioned reads of the few bytes it needs (its offsets, its id, input
    and profile chunks), at the positions `_layout` found when the table was opened, never
    through a memory map: a mapped page makes the reading process resident in the whole
    page-cache folio around it (megabytes where the kernel caches the file in large folios),
    so the process's peak RSS would follow the kernel's folio sizes and the number of rows
    read instead of the rows themselves. The page cache holds the file once per node for
    every rank either way.
    """

    def __init__(self, read_at: Callable[[int, int], bytes], first_rows: np.ndarray, positions: np.ndarray):
        self._read_at = read_at  # (position, size) -> those bytes of the table's stream
        self._first_rows = first_rows  # [batches + 1]
        self._positions = positions  # [batches, 7]

    def __len__(self) -> int:
        return int(self._first_rows[-1])

    def _int32s(self, position: int, first: int, count: int) -> list[int]:
        return np.frombuffer(self._read_at(position + 4 * first, 4 * count), dtype="<i4").tolist()  # IPC is little-endian

    def _string(self, offsets: int, chars: int, index: int) -> str:
        start, end = self._int32s(offsets, index, 2)
        return self._read_at(chars + start, end - start).decode("utf-8")

    def row(self, index: int, keep_last: int = 0) -> tuple[str, str, list]:
        """Row `index`: (id, input, profile), the profile's last `keep_last` items only when
        keep_last > 0; only the chunks that hold those are read and decoded."""
        if not 0 <= index < len(self):
            raise IndexError(f"row {index} of a table of {len(self)}")
        batch = int(np.searchsorted(self._first_rows, index, side="right")) - 1
        at, index = self._positions[batch].tolist(), index - int(self._first_rows[batch])
        first, end = self._int32s(at[CHUNK_SPANS], index, 2)  # the row's chunks
        bounds = self._int32s(at[CHUNK_OFFSETS], first, end - first + 1)  # their byte offsets
        decoded: list[list] = []  # chunks from the last one backwards
        items = 0
        for j in reversed(range(end - first)):
            packed = self._read_at(at[CHUNK_BYTES] + bounds[j], bounds[j + 1] - bounds[j])
            decoded.append(json.loads(zlib.decompress(packed)))
            items += len(decoded[-1])
            if keep_last and items >= keep_last:
                break
        profile = [item for chunk in reversed(decoded) for item in chunk]
        example_id = self._string(at[ID_OFFSETS], at[ID_CHARS], index)
        text = self._string(at[INPUT_OFFSETS], at[INPUT_CHARS], index)
        return example_id, text, profile[-keep_last:] if keep_last else profile

    def ids(self) -> list[str]:
        """Every row's id, in order; read from the table on each call (only matching the golds
        needs them all), two reads per record batch."""
        ids: list[str] = []
        for at, rows in zip(self._positions.tolist(), np.diff(self._first_rows).tolist()):
            offsets = self._int32s(at[ID_OFFSETS], 0, rows + 1)
            chars = self._read_at(at[ID_CHARS] + offsets[0], offsets[-1] - offsets[0])
            ids += [chars[start - offsets[0]:end - offsets[0]].decode("utf-8") for start, end in zip(offsets, offsets[1:])]
        return ids


def _open(path: Path) -> ArrowQuestions:
    """The table at `path`, read with preads. Its layout is found through a memory map, dropped
    once found, whose pages are handed back after each batch's header (madvise DONTNEED on the
    read-only shared mapping: the page cache keeps them)."""
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    first_rows, positions = _layout(pa.py_buffer(mapping), lambda: mapping.madvise(mmap.MADV_DONTNEED))
    fd = os.open(path, os.O_RDONLY)
    reader = ArrowQuestions(lambda position, size: os.pread(fd, size, position), first_rows, positions)
    weakref.finalize(reader, os.close, fd)
    return reader


def open_questions(path: Path, records: Callable[[], Iterable[tuple[str, str, list]]], cache_dir: Path | None,
                   required: Iterable[str] = ()) -> ArrowQuestions:
    """The rows of questions file `path` from its Arrow table, converting it first when the cache
    has no table for this identity. `records()` yields the validated (id, input, profile) rows
    and raises on the first bad record; nothing is cached then. Without `cache_dir` the table
    is built in memory (same checks, same rows, no file)."""
    if cache_dir is None:
        sink = pa.BufferOutputStream()
        _write_rows(records(), sink)
        stream = sink.getvalue()
        return ArrowQuestions(lambda position, size: stream[position:position + size].to_pybytes(), *_layout(stream))
    target = table_path(cache_dir, path, required)
    if not target.is_file():
        with writer_lock(target.parent / ".lock", f"another process is converting {path} to Arrow; waiting for it"):
            if not target.is_file():  # not converted by the process this one waited for
                atomic_write(target, lambda handle: _write_rows(records(), handle))
                for stale in target.parent.glob("*.arrow"):  # tables of the file's earlier versions
                    if stale != target:
                        stale.unlink(missing_ok=True)
    return _open(target)
