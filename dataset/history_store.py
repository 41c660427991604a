"""On-disk store of frozen history-encoder embeddings, read through memory maps.

The behavioral encoder never trains, so an item's embedding depends only on the
encoder (name and weights), the pooling, the max length and the text. Encoding every
history item in every batch of every epoch is the largest cost of a
step; the store encodes each distinct text once, in one pass before training, and every
epoch, task, run and process afterwards reads rows from it.

Layout (one folder per identity; any change to a part of the identity opens another):
    <cache>/history_store/<key>/meta.json             the identity the key hashes
    <cache>/history_store/<key>/part-00000.npy        float32 [N, H]; row i embeds the text of keys[i]
    <cache>/history_store/<key>/part-00000.keys.npy   |S16 [N]: blake2b-128 of each text (UTF-8)
    <cache>/history_store/<key>/.lock                 writers hold an exclusive flock on it
    <cache>/history_store/<key>/.fill-<r>-of-<n>.lock  held by the process encoding share r of n
Parts are only ever added. Each file is written under a temporary name and renamed, the
keys file last, so a part is visible only once complete. Rows are read through numpy
memory maps (nothing is unpickled, nothing is loaded whole); a sorted index of all keys
finds a text's (part, row) with a binary search.

The fill is shared among the ranks of a run: a text belongs to share hash % n of n, and
rank r encodes share r of what the store lacks, all ranks at once; after a barrier every
rank reads all of it (`fill(..., rank, world)`, then `fill(texts)` for anything a rank's
view missed). Whoever encodes share r of n holds that share's lock while it encodes, then
looks again at what others wrote while it waited, so two runs of the same size that start
at once still encode each text once between them (runs of different sizes may both encode
a text; the older part wins, which changes nothing). Encoded rows go to disk every
`PART_ROWS` rows, one writer at a time under `.lock`, so a crash loses at most one part's
work and never leaves a part half visible.
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
PART_ROWS = 1 << 16  # rows per part written by a fill: bounds its memory and what a crash loses


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


def share_of(hashes: np.ndarray, world: int) -> np.ndarray:
    """|S16 [N] -> int [N]: the share (0..world-1) each text belongs to; the same on every rank."""
    return np.frombuffer(hashes.tobytes(), dtype="<u8").reshape(len(hashes), 2)[:, 0] % world


def micro_batches(texts: list[str], size: int, max_tokens: int = 0,
                  lengths: Callable[[list[str]], list[int]] | None = None) -> list[list[str]]:
    """The distinct texts, sorted by length and cut into chunks of at most `size` texts: a
    chunk padded to its longest text then carries little padding. With `max_tokens`, a chunk
    also holds at most that many padded tokens (its texts x its longest text's length, as
    `lengths` counts them; characters by default), so short texts go in large chunks and long
    ones in small chunks; a text longer than the budget goes alone."""
    distinct = list(dict.fromkeys(texts))
    counted = (lengths or (lambda chunk: [len(t) for t in chunk]))(distinct) if distinct else []
    ordered = sorted(zip(counted, distinct), key=lambda pair: pair[0])
    chunks: list[list[str]] = []
    for length, text in ordered:  # ascending: each new text is the longest of its chunk
        if chunks and len(chunks[-1]) < size and (not max_tokens or (len(chunks[-1]) + 1) * length <= max_tokens):
            chunks[-1].append(text)
        else:
            chunks.append([text])
    return chunks


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
             progress: bool = False, max_tokens: int = 0, lengths: Callable[[list[str]], list[int]] | None = None,
             rank: int = 0, world: int = 1) -> int:
        """Encode and store the texts not stored yet, or with world > 1 those of share `rank`
        of `world` (the caller's rank among `world` ranks); return how many were encoded.

        encode: a micro-batch of texts (n) -> float32 [n, H]. Texts go to it sorted by
        length in micro_batches(texts, batch_size, max_tokens, lengths), so each pads little.
        """
        self.refresh()  # parts other ranks or runs finished since the last look
        if not self._share(self.missing(texts), rank, world):
            return 0
        with self._lock(f".fill-{rank}-of-{world}.lock", "encoding this share of" if progress else ""):
            self.refresh()  # another process may have stored them while this one waited
            chunks = micro_batches(self._share(self.missing(texts), rank, world), batch_size, max_tokens, lengths)
            if progress:
                from tqdm.auto import tqdm
                chunks = tqdm(chunks, desc=f"encoding history (share {rank + 1} of {world})" if world > 1
                              else "encoding history", unit="batch")
            encoded, pending = 0, []
            for i, chunk in enumerate(chunks):
                pending.append((chunk, np.asarray(encode(chunk), dtype=np.float32)))
                if sum(len(c) for c, _ in pending) >= PART_ROWS or i + 1 == len(chunks):
                    keys = text_hashes([t for c, _ in pending for t in c])
                    with self._lock(".lock", "writing" if progress else ""):
                        self._add_part(keys, np.concatenate([rows for _, rows in pending]))
                    encoded, pending = encoded + len(keys), []
            return encoded

    @staticmethod
    def _share(texts: list[str], rank: int, world: int) -> list[str]:
        if world == 1 or not texts:
            return texts
        return [t for t, share in zip(texts, share_of(text_hashes(texts), world)) if share == rank]

    @contextlib.contextmanager
    def _lock(self, name: str, doing: str):
        """An exclusive flock on <folder>/<name>; `doing` (if given) is printed when another holds it."""
        if self.folder is None:
            yield
            return
        waiting = f"another process is {doing} the history store {self.folder}; waiting for it" if doing else ""
        with writer_lock(self.folder / name, waiting):
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
