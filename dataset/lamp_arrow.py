"""LaMP questions files as Arrow tables: converted once, memory-mapped, read row by row.

A LaMP questions file is one JSON array of gigabytes (LaMP-3's train split: 20,000
questions of about 185 reviews each). Parsing it whole in every process costs several
times its size in memory per rank. Instead each file is converted once into an Arrow
table under the cache folder, with `datasets`' ArrowWriter, while the records stream out
of the JSON one at a time (`iter_json_array`, so the conversion holds one record at a
time, not the file); every process then memory-maps that table and reads an example's
row only when it is asked for.

    <cache>/lamp_arrow/<path key>/<identity key>.arrow
        columns: id (string), input (string),
                 profile (list of binary: zlib of the JSON of each run of ITEMS_PER_CHUNK items, in order)

The identity is the file's resolved path, size and modification time, the conversion's
format and the profile fields the reader requires (`key_parts`): a changed file gets a new
table and the stale one of that path is removed. One process converts at a time
(dataset.atomic.writer_lock on the path's folder); the others wait, then map what it
wrote, which is renamed into place only when complete. All ranks of a node map the same
file, so its pages sit in memory once, in the page cache.

The profile column is compressed (zlib), and pages a
process has read are handed back to the page cache every `RELEASE_BYTES` (madvise
DONTNEED on the read-only shared mapping, which leaves the data valid): a pass over every
example keeps only a bounded window of the table in the process's resident memory.
The profile is compressed in chunks so that a reader who keeps only a profile's last N
items (training keeps the last `max_history`) decodes those chunks alone: what one
example costs in memory is then bounded by N, however long the user's profile is.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import mmap
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import pyarrow as pa
from datasets import Dataset, Features, List, Value
from datasets.arrow_writer import ArrowWriter
from datasets.table import InMemoryTable, MemoryMappedTable

from dataset.atomic import atomic_write, writer_lock

FORMAT_VERSION = 2  # part of every identity: a change of the columns below makes new tables
FEATURES = Features({"id": Value("string"), "input": Value("string"), "profile": List(Value("binary"))})
ITEMS_PER_CHUNK = 32  # profile items per compressed chunk
READ_BYTES = 1 << 20  # JSON read per step of the streaming parse
RELEASE_BYTES = 1 << 19  # bytes of rows read between two hand-backs of the mapped pages
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


class ArrowQuestions:
    """The (id, input, profile) rows of one questions file, read from its Arrow table."""

    def __init__(self, dataset: Dataset, ids: list[str], mapping: mmap.mmap | None = None):
        self.dataset = dataset
        self.ids = ids  # every row's id: small, and needed whole to match the golds
        self._mapping = mapping
        self._read = 0  # bytes of rows read since the mapped pages were last handed back

    def __len__(self) -> int:
        return len(self.dataset)

    def row(self, index: int, keep_last: int = 0) -> tuple[str, str, list]:
        """Row `index`: (id, input, profile), the profile's last `keep_last` items only when
        keep_last > 0; only the chunks that hold those are read and decoded."""
        table = self.dataset.data.table
        chunks = table.column("profile")[index].values  # the row's compressed chunks: views into the map
        decoded: list[list] = []  # chunks from the last one backwards
        items = 0
        for j in reversed(range(len(chunks))):
            packed = chunks[j].as_buffer()
            self._read += packed.size
            decoded.append(json.loads(zlib.decompress(packed)))
            items += len(decoded[-1])
            if keep_last and items >= keep_last:
                break
        profile = [item for chunk in reversed(decoded) for item in chunk]
        example_id, text = table.column("id")[index].as_py(), table.column("input")[index].as_py()
        self._read += len(text)
        if self._read > RELEASE_BYTES:
            self._release()
        return example_id, text, profile[-keep_last:] if keep_last else profile

    def _release(self) -> None:
        """Hand the mapped pages this process touched back to the page cache, which keeps them
        for the next reader (the mapping is read-only and shared, so the data stays valid)."""
        if self._mapping is not None:
            self._mapping.madvise(mmap.MADV_DONTNEED)
        self._read = 0


def _map(path: Path) -> ArrowQuestions:
    with open(path, "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    reader = pa.ipc.open_stream(pa.BufferReader(pa.py_buffer(mapping)))  # zero-copy views into the map
    batches, ids = [], []
    for batch in reader:
        batches.append(batch)
        ids += batch.column("id").to_pylist()
        if len(batches) % 8 == 0:  # each batch's header and ids map a few pages: hand them back as we go
            mapping.madvise(mmap.MADV_DONTNEED)
    mapping.madvise(mmap.MADV_DONTNEED)
    table = pa.Table.from_batches(batches, schema=reader.schema)
    return ArrowQuestions(Dataset(MemoryMappedTable(table, str(path))), ids, mapping)


def open_questions(path: Path, records: Callable[[], Iterable[tuple[str, str, list]]], cache_dir: Path | None,
                   required: Iterable[str] = ()) -> ArrowQuestions:
    """The rows of questions file `path` from its Arrow table, converting it first when the cache
    has no table for this identity. `records()` yields the validated (id, input, profile) rows
    and raises on the first bad record; nothing is cached then. Without `cache_dir` the table
    is built in memory (same checks, same rows, no file)."""
    if cache_dir is None:
        sink = pa.BufferOutputStream()
        _write_rows(records(), sink)
        table = pa.ipc.open_stream(pa.BufferReader(sink.getvalue())).read_all()
        return ArrowQuestions(Dataset(InMemoryTable(table)), table.column("id").to_pylist())
    target = table_path(cache_dir, path, required)
    if not target.is_file():
        with writer_lock(target.parent / ".lock", f"another process is converting {path} to Arrow; waiting for it"):
            if not target.is_file():  # not converted by the process this one waited for
                atomic_write(target, lambda handle: _write_rows(records(), handle))
                for stale in target.parent.glob("*.arrow"):  # tables of the file's earlier versions
                    if stale != target:
                        stale.unlink(missing_ok=True)
    return _map(target)
