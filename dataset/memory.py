"""Long-term memory: per-user FAISS indexes over cached history embeddings.

Only the `top_n` items of a user's history most similar to the query reach the
Q-Former, so a history of 10,000 items costs about what `top_n` items cost:

    first time a history is seen:  embeddings [P, H] (from the history store) ->
                                   L2-normalised into a flat inner-product index  (once, O(P H))
    every example:                 query [H] -> search (one [P] x [H] product, no Python
                                   loop over items) -> the top-N rows [N, H]        (O(N H) after it)

The index keeps the normalised rows and each row's norm, and gives back the original
embeddings (row * norm), so the Q-Former sees exactly what it sees without memory, and
a user's memory costs P * (H + 1) floats, not two copies. Exact (flat) search is right
at these sizes: 10,000 x 384 is 4 M multiply-adds per query; an approximate index
(IVF, HNSW) pays off only far beyond a single user's history.

Indexes are kept per history, most recently used first, up to `max_users`; the key is
the history's texts themselves (a tuple), so another user's history (the evaluator's
`other_history` control) can never hit the wrong index.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import numpy as np
import torch

# Histories whose index stays in memory. A LaMP user averages ~100 items: 2048 users of
# BGE-base embeddings (768 floats) take ~0.6 GB. Past it the least recently used index
# is dropped and rebuilt when its user comes back (it costs one pass over P rows).
MAX_USERS = 2048


class UserIndex:
    """One user's history: normalised rows in a flat inner-product index, plus their norms."""

    def __init__(self, embeddings: torch.Tensor):
        """embeddings [P, H] float32."""
        rows = embeddings.detach().float().cpu().numpy()
        self.norms = np.linalg.norm(rows, axis=1).astype(np.float32)  # [P]
        unit = rows / np.maximum(self.norms, 1e-12)[:, None]
        import faiss  # here, not at the top: only runs with memory_top_n > 0 need it
        self.index = faiss.IndexFlatIP(rows.shape[1])
        self.index.add(np.ascontiguousarray(unit, dtype=np.float32))

    def __len__(self) -> int:
        return self.index.ntotal

    @property
    def nbytes(self) -> int:
        return self.index.ntotal * self.index.d * 4 + self.norms.nbytes

    def top(self, query: np.ndarray, n: int) -> np.ndarray:
        """query [H] (unit) -> the ids of the n most similar items, in history order [min(n, P)]."""
        _, ids = self.index.search(query[None], min(n, len(self)))
        return np.sort(ids[0])  # history order: the Q-Former (and a recency reader) sees them as stored

    def rows(self, ids: np.ndarray) -> torch.Tensor:
        """ids [N] -> the original embeddings [N, H]."""
        unit = self.index.reconstruct_batch(ids.astype(np.int64))
        return torch.from_numpy(unit * self.norms[ids][:, None])


class HistoryMemory:
    """Picks each example's `top_n` history items most similar to its query."""

    def __init__(self, top_n: int, max_users: int = MAX_USERS):
        if top_n < 1:
            raise ValueError(f"memory top_n must be >= 1, got {top_n}")
        self.top_n = top_n
        self.max_users = max_users
        self._indexes: OrderedDict[tuple[str, ...], UserIndex] = OrderedDict()
        self.builds = 0  # indexes built so far: each history should be built once

    def user_index(self, texts: list[str], encode: Callable[[list[str]], torch.Tensor]) -> UserIndex:
        """The index of this history, built from `encode(texts)` [P, H] the first time only."""
        key = tuple(texts)
        index = self._indexes.get(key)
        if index is None:
            index = self._indexes[key] = UserIndex(encode(texts))
            self.builds += 1
            if len(self._indexes) > self.max_users:
                self._indexes.popitem(last=False)
        else:
            self._indexes.move_to_end(key)
        return index

    def select(self, histories: list[list[str]], queries: torch.Tensor,
               encode: Callable[[list[str]], torch.Tensor]) -> tuple[list[np.ndarray], list[torch.Tensor]]:
        """B histories and their queries [B, H] -> per example the chosen item ids [N_i] and
        their embeddings [N_i, H] (N_i = min(top_n, P_i); an empty history gives none)."""
        unit = torch.nn.functional.normalize(queries.detach().float().cpu(), dim=-1).numpy()
        ids, rows = [], []
        for texts, query in zip(histories, unit):
            if not texts:
                ids.append(np.zeros(0, dtype=np.int64))
                rows.append(torch.zeros(0, queries.shape[-1]))
                continue
            index = self.user_index(texts, encode)
            chosen = index.top(query, self.top_n)
            ids.append(chosen)
            rows.append(index.rows(chosen))
        return ids, rows
