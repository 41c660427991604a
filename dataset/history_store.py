"""On-disk store of frozen history-encoder embeddings, read through memory maps.

The behavioral encoder never trains, so an item's embedding depends only on the
encoder (name and weights), the pooling, the max length and the text. Encoding every
history item in every batch of every epoch (as the seed did) is the largest cost of a
step; the store encodes each distinct text once, in one pass before training, and every
epoch, task, run and process afterwards reads rows from it.

Layout (one folder per identity; any change to a part of the identity opens another):
    <cache>/history_store/<key>/meta.json             the identity the key hashes
    <cache>/history_store/<key>/part-00000.npy        float32 [N, H]; row i embeds the text of keys[i]
    <cache>/history_store/<key>/part-00000.keys.npy   |S16 [N]: blake2b-128 of each text (UTF-8)
    <cache>/history_store/<key>/.lock                 writers hold an exclusive flock on it
Parts are only ever added. Each file is written under a temporary name and renamed, the
keys file last, so a part is visible only once complete. Rows are read through numpy
memory maps (nothing is unpickled, nothing is loaded whole); a sorted index of all keys
finds a text's (part, row) with a binary search.

One process writes at a time: `fill` takes the lock, looks again at what other processes
wrote while it waited, and encodes only what is still missing. Two runs that start at
once therefore encode each text once between them, and a rank that waits reads the rows
the other wrote.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from dataset.atomic import atomic_write, atomic_write_text, writer_lock

# Part of every identity: a change of the layout above opens new folders.
FORMAT_VERSION = 1
KEY_DTYPE = "S16"


def store_identity(encoder: str, weights_fingerprint: str, pooling: str, max_length: int) -> dict:
    """Everything an embedding depends on besides the text."""
    return {"format": FORMAT_VERSION, "encoder": encoder, "weights": weights_fingerprint,
            "pooling": pooling, "max_length": max_length}


def store_folder(root: str | os.PathLike, identity: dict) -> Path:
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return Path(root) / digest[:16]


def text_hashes(texts: list[str]) -> np.ndarray:
    """texts (N) -> |S16 [N]."""
    return np.array([hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts],
                    dtype=KEY_DTYPE).reshape(len(texts))


def micro_batches(texts: list[str], size: int) -> list[list[str]]:
    """The distinct texts, sorted by length and cut into chunks of `size`: a chunk padded to
    its longest text then carries little padding."""
    distinct = sorted(dict.fromkeys(texts), key=len)
    return [distinct[i:i + size] for i in range(0, len(distinct), size)]


class HistoryStore:
    """Text -> embedding row.

    With a folder, rows persist as memory-mapped parts shared by every process; without
    one (`HistoryStore()`), parts are arrays in memory that live as long as the object.
    """

    def __init__(self, folder: str | os.PathLike | None = None, identity: dict | None = None):
        self.folder = Path(folder) if folder is not None else None
        self._parts: list[np.ndarray] = []  # [N_p, H] float32 each; memory maps when on disk
        self._part_keys: list[np.ndarray] = []  # |S16 [N_p] each
        self._opened: set[str] = set()  # part files already in _parts
        self._keys = np.empty(0, dtype=KEY_DTYPE)  # every stored hash, sorted, unique
        self._where = np.empty((0, 2), dtype=np.int64)  # [part, row] of each entry of _keys
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._check_identity(identity)
            self.refresh()

    @classmethod
    def open(cls, root: str | os.PathLike, identity: dict) -> "HistoryStore":
        """The store of `identity` under `root` (created empty if new)."""
        return cls(store_folder(root, identity), identity)

    def _check_identity(self, identity: dict | None) -> None:
        meta = self.folder / "meta.json"
        if meta.exists():
            found = json.loads(meta.read_text())
            if identity is not None and found != identity:
                raise ValueError(f"{meta} describes {found}, not {identity}; delete {self.folder} to rebuild it")
        elif identity is not None:
            atomic_write_text(meta, json.dumps(identity, indent=2, sort_keys=True))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, text: str) -> bool:
        return not self.missing([text])

    # ------------------------------------------------------------------ reading

    def refresh(self) -> None:
        """Open the parts that other processes completed since the last look."""
        if self.folder is None:
            return
        new = [p for p in sorted(self.folder.glob("part-*.keys.npy")) if p.name not in self._opened]
        for keys_path in new:
            rows_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".npy"))
            try:
                keys = np.load(keys_path, allow_pickle=False)
                rows = np.load(rows_path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise ValueError(f"{rows_path}: unreadable history-store part ({e}); "
                                 f"delete {self.folder} to rebuild the store") from e
            self._check_part(rows_path, keys, rows)
            self._parts.append(rows)
            self._part_keys.append(keys)
            self._opened.add(keys_path.name)
        if new:
            self._reindex()

    def _check_part(self, path: Path, keys: np.ndarray, rows: np.ndarray) -> None:
        width = self._parts[0].shape[1] if self._parts else rows.shape[-1]
        if rows.ndim != 2 or rows.shape != (len(keys), width) or rows.dtype != np.float32:
            raise ValueError(f"{path}: expected float32 [{len(keys)}, {width}], found {rows.dtype} "
                             f"{list(rows.shape)}; delete {self.folder} to rebuild the store")

    def _reindex(self) -> None:
        keys = np.concatenate(self._part_keys)
        where = np.concatenate([np.stack([np.full(len(k), p), np.arange(len(k))], axis=1)
                                for p, k in enumerate(self._part_keys)])
        order = np.argsort(keys, kind="stable")
        keys, where = keys[order], where[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]  # a text stored twice: the older part wins
        self._keys, self._where = keys[first], where[first]

    def _find(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> (found [N] bool, position in _keys [N])."""
        hashes = text_hashes(texts)
        if not len(self._keys):
            return np.zeros(len(texts), dtype=bool), np.zeros(len(texts), dtype=np.int64)
        position = np.minimum(np.searchsorted(self._keys, hashes), len(self._keys) - 1)
        return self._keys[position] == hashes, position

    def missing(self, texts: list[str]) -> list[str]:
        """The distinct texts that are not stored, in first-seen order."""
        found, _ = self._find(texts)
        return list(dict.fromkeys(t for t, ok in zip(texts, found) if not ok))

    def rows(self, texts: list[str]) -> np.ndarray:
        """texts (N) -> float32 [N, H], a copy (the parts stay read-only)."""
        if not texts:
            return np.zeros((0, self._parts[0].shape[1] if self._parts else 0), dtype=np.float32)
        found, position = self._find(texts)
        if not found.all():
            absent = texts[int(np.argmin(found))]
            raise KeyError(f"{int((~found).sum())} of {len(texts)} texts are not in the history store "
                           f"(e.g. {absent[:60]!r}); fill it first")
        part, row = self._where[position].T
        out = np.empty((len(texts), self._parts[0].shape[1]), dtype=np.float32)
        for p in np.unique(part):
            selected = part == p
            out[selected] = self._parts[p][row[selected]]
        return out

    # ------------------------------------------------------------------ writing

    def fill(self, texts: list[str], encode: Callable[[list[str]], np.ndarray], batch_size: int = 64,
             progress: bool = False) -> int:
        """Encode and store the texts not stored yet; return how many were encoded.

        encode: a micro-batch of texts (n) -> float32 [n, H]. Texts go to it sorted by
        length, so each micro-batch pads little.
        """
        if not self.missing(texts):
            return 0
        with self._writer_lock(progress):
            self.refresh()  # another process may have stored them while this one waited
            chunks = micro_batches(self.missing(texts), batch_size)
            if not chunks:
                return 0
            if progress:
                from tqdm.auto import tqdm
                chunks = tqdm(chunks, desc="encoding history", unit="batch")
            done = [(chunk, np.asarray(encode(chunk), dtype=np.float32)) for chunk in chunks]
            keys = text_hashes([t for chunk, _ in done for t in chunk])
            self._add_part(keys, np.concatenate([rows for _, rows in done]))
            return len(keys)

    @contextlib.contextmanager
    def _writer_lock(self, announce: bool):
        if self.folder is None:
            yield
            return
        waiting = f"another process is writing the history store {self.folder}; waiting for it"
        with writer_lock(self.folder / ".lock", waiting if announce else ""):
            yield

    def _add_part(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """keys |S16 [N], rows float32 [N, H]; on disk only under the writer lock."""
        if self.folder is None:
            self._check_part(Path("<memory>"), keys, rows)
            self._parts.append(rows)
            self._part_keys.append(keys)
            self._reindex()
            return
        taken = [int(p.name.split("-")[1].split(".")[0]) for p in self.folder.glob("part-*.keys.npy")]
        stem = f"part-{max(taken, default=-1) + 1:05d}"
        atomic_write(self.folder / f"{stem}.npy", lambda f: np.save(f, rows, allow_pickle=False))
        # last: the part is now visible
        atomic_write(self.folder / f"{stem}.keys.npy", lambda f: np.save(f, keys, allow_pickle=False))
        self.refresh()
