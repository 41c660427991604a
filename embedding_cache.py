"""On-disk cache of frozen history-encoder embeddings.

The behavioral encoder never trains, so an item's embedding depends only on the
encoder's weights, the pooling, the max length and the text. Encoding every history
item in every batch of every epoch (as the seed did) is the largest cost of a step;
this cache encodes each distinct text once and keeps it across epochs, tasks and runs.

Layout of one cache (one folder per encoder identity + pooling + max length):
    <root>/<key>/meta.json                  what the key was made of, for humans
    <root>/<key>/shard-00000.safetensors    {"embeddings": float32 [N, H]}
    <root>/<key>/shard-00000.json           ["<sha1 of text>", ...]  (row order)
Shards are only ever added, each written to a temp name and renamed, so a crash
never leaves a half-written shard under its final name. Nothing here unpickles.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def cache_key(encoder_id: str, pooling: str, max_length: int) -> str:
    """Folder name for one (encoder identity, pooling, max length) combination."""
    raw = json.dumps({"encoder": encoder_id, "pooling": pooling, "max_length": max_length}, sort_keys=True)
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class EmbeddingCache:
    """Text -> embedding rows, in memory, optionally persisted under `folder`."""

    def __init__(self, folder: str | Path | None, meta: dict | None = None):
        self.folder = Path(folder) if folder is not None else None
        self._rows: dict[str, torch.Tensor] = {}  # sha1(text) -> [H] float32, CPU
        self._unsaved: list[str] = []  # keys added since the last flush
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
            if meta is not None and not (self.folder / "meta.json").exists():
                _atomic_write_bytes(self.folder / "meta.json", json.dumps(meta, indent=2).encode())
            self.reload()

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, text: str) -> bool:
        return text_key(text) in self._rows

    def reload(self) -> None:
        """Read every shard on disk (other processes may have added some)."""
        for index_path in sorted(self.folder.glob("shard-*.json")):
            keys = json.loads(index_path.read_text())
            rows = load_file(str(index_path.with_suffix(".safetensors")))["embeddings"]
            for key, row in zip(keys, rows):
                self._rows.setdefault(key, row)

    def get(self, texts: list[str]) -> list[torch.Tensor | None]:
        return [self._rows.get(text_key(t)) for t in texts]

    def add(self, texts: list[str], embeddings: torch.Tensor) -> None:
        """embeddings: [N, H] for N texts."""
        for text, row in zip(texts, embeddings.detach().float().cpu()):
            key = text_key(text)
            if key not in self._rows:
                self._rows[key] = row.clone()
                self._unsaved.append(key)

    def flush(self) -> None:
        """Write the rows added since the last flush as one new shard."""
        if self.folder is None or not self._unsaved:
            return
        shard_id = len(list(self.folder.glob("shard-*.json")))
        while (self.folder / f"shard-{shard_id:05d}.json").exists():
            shard_id += 1
        stem = self.folder / f"shard-{shard_id:05d}"
        tensor = torch.stack([self._rows[k] for k in self._unsaved]).contiguous()
        tmp = stem.with_name(f".{stem.name}.tmp-{os.getpid()}.safetensors")
        save_file({"embeddings": tensor}, str(tmp))
        os.replace(tmp, stem.with_suffix(".safetensors"))
        # The index goes last: a shard is visible to readers only once both files exist.
        _atomic_write_bytes(stem.with_suffix(".json"), json.dumps(self._unsaved).encode())
        self._unsaved = []
