"""The history embedding store: round trip, identity, crash safety, one writer among processes."""

import hashlib
import json
import multiprocessing
import time

import numpy as np
import pytest

from dataset import history_store
from dataset.history_store import HistoryStore, micro_batches, store_folder, store_identity
from tiny_models import run_forked

TEXTS = ["graph neural networks", "galaxy surveys", "query optimization", "robots and climate", "music"]
IDENTITY = store_identity("minilm", "abc123", "mean", 128)


def fake_encode(texts, calls=None):
    """texts (n) -> float32 [n, 16], a fixed function of each text."""
    if calls is not None:
        calls.append(list(texts))
    return np.stack([np.frombuffer(hashlib.md5(t.encode()).digest(), dtype=np.uint8).astype(np.float32)
                     for t in texts])


def test_fill_encodes_each_distinct_text_once_and_rows_come_back_in_request_order(tmp_path):
    store = HistoryStore.open(tmp_path, IDENTITY)
    calls = []
    assert store.fill(TEXTS + TEXTS[:2], lambda chunk: fake_encode(chunk, calls), batch_size=2) == 5
    assert sorted(t for chunk in calls for t in chunk) == sorted(TEXTS)
    assert all(len(chunk) <= 2 for chunk in calls)
    assert [len(t) for chunk in calls for t in chunk] == sorted(len(t) for t in TEXTS), "sorted by length"
    asked = [TEXTS[3], TEXTS[0], TEXTS[3]]
    np.testing.assert_array_equal(store.rows(asked), fake_encode(asked))

    assert store.fill(TEXTS, lambda chunk: fake_encode(chunk, calls)) == 0 and len(calls) == 3
    assert store.fill(TEXTS + ["new text"], lambda chunk: fake_encode(chunk, calls)) == 1
    assert calls[-1] == ["new text"] and len(store) == 6 and "new text" in store
    with pytest.raises(KeyError, match="1 of 2 texts are not in the history store.*'unseen'"):
        store.rows([TEXTS[0], "unseen"])


def test_store_persists_as_plain_arrays_read_through_memory_maps(tmp_path):
    store = HistoryStore.open(tmp_path, IDENTITY)
    store.fill(TEXTS[:3], fake_encode)
    store.fill(TEXTS, fake_encode)
    folder = store_folder(tmp_path, IDENTITY)
    assert sorted(p.name for p in folder.iterdir()) == [
        ".fill-0-of-1.lock", ".lock", "meta.json", "part-00000.keys.npy", "part-00000.npy", "part-00001.keys.npy",
        "part-00001.npy"]
    assert json.loads((folder / "meta.json").read_text()) == IDENTITY
    rows = np.load(folder / "part-00001.npy", mmap_mode="r", allow_pickle=False)  # nothing to unpickle
    assert rows.dtype == np.float32 and rows.shape == (2, 16)
    assert np.load(folder / "part-00001.keys.npy", allow_pickle=False).dtype == np.dtype("S16")

    reopened = HistoryStore.open(tmp_path, IDENTITY)  # another process, later
    assert len(reopened) == 5 and reopened.missing(TEXTS) == []
    np.testing.assert_array_equal(reopened.rows(TEXTS), fake_encode(TEXTS))


def test_any_change_of_identity_opens_another_store(tmp_path):
    HistoryStore.open(tmp_path, IDENTITY).fill(TEXTS, fake_encode)
    changes = [store_identity("minilm", "abc124", "mean", 128), store_identity("other", "abc123", "mean", 128),
               store_identity("minilm", "abc123", "cls", 128), store_identity("minilm", "abc123", "mean", 64)]
    for identity in changes:
        assert store_folder(tmp_path, identity) != store_folder(tmp_path, IDENTITY)
        assert HistoryStore.open(tmp_path, identity).missing(TEXTS) == TEXTS
    assert HistoryStore.open(tmp_path, IDENTITY).missing(TEXTS) == []
    with pytest.raises(ValueError, match="delete"):  # a folder whose meta.json says otherwise
        HistoryStore(store_folder(tmp_path, IDENTITY), changes[0])


def test_an_interrupted_write_is_invisible_and_a_damaged_part_is_named(tmp_path):
    store = HistoryStore.open(tmp_path, IDENTITY)
    folder = store.folder
    # A crash between the two renames leaves rows without keys; a crash before them, a temp file.
    np.save(folder / "part-00000.npy", np.zeros((9, 16), dtype=np.float32))
    (folder / ".part-00000.keys.npy.tmp-1").write_bytes(b"half")
    assert len(HistoryStore.open(tmp_path, IDENTITY)) == 0
    store.fill(TEXTS, fake_encode)  # takes the orphan's name and replaces it
    np.testing.assert_array_equal(HistoryStore.open(tmp_path, IDENTITY).rows(TEXTS), fake_encode(TEXTS))

    (folder / "part-00000.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="part-00000.npy.*delete"):
        HistoryStore.open(tmp_path, IDENTITY)


def test_store_without_folder_keeps_rows_in_memory():
    store = HistoryStore()
    assert store.fill(TEXTS, fake_encode) == 5 and store.fill(TEXTS, fake_encode) == 0
    np.testing.assert_array_equal(store.rows(TEXTS[::-1]), fake_encode(TEXTS[::-1]))
    assert store.rows([]).shape == (0, 16)


def _fill_slowly(root, texts, out_path):
    def slow_encode(chunk):
        time.sleep(0.3)  # long enough for the other process to arrive while this one writes
        return fake_encode(chunk)
    store = HistoryStore.open(root, IDENTITY)
    encoded = store.fill(texts, slow_encode, batch_size=2)
    np.save(out_path, np.concatenate([[encoded], store.rows(texts).ravel()]))


def test_two_processes_starting_at_once_encode_each_text_once_and_read_the_same_rows(tmp_path):
    run_forked(_fill_slowly, [(tmp_path, TEXTS, tmp_path / f"out{i}.npy") for i in range(2)], timeout=60)
    results = [np.load(tmp_path / f"out{i}.npy") for i in range(2)]
    assert sorted(int(r[0]) for r in results) == [0, len(TEXTS)], "one process encodes, the other waits and reads"
    for r in results:
        np.testing.assert_array_equal(r[1:].reshape(len(TEXTS), 16), fake_encode(TEXTS))


def _fill_share(root, texts, rank, world, barrier, out_path):
    """One rank of a sharded fill: its share, the barrier the run's ranks meet at, then everything."""
    encoded_texts = []

    def encode(chunk):
        if not encoded_texts:
            # Both ranks must be encoding at once to get past here: a fill that made one rank
            # wait for the other to finish encoding would time out.
            barrier.wait(timeout=30)
        encoded_texts.extend(chunk)
        return fake_encode(chunk)
    store = HistoryStore.open(root, IDENTITY)
    encoded = store.fill(texts, encode, batch_size=2, rank=rank, world=world)
    barrier.wait(timeout=30)  # accelerator.wait_for_everyone() in a run
    assert store.fill(texts, encode) == 0, "every text was in one share or another"
    out_path.write_text(json.dumps({"encoded": encoded, "texts": encoded_texts}))
    np.save(out_path.with_suffix(".npy"), store.rows(texts))


def test_two_ranks_encode_disjoint_shares_at_once_and_each_reads_all_rows(tmp_path):
    texts = [f"history item number {i} " + "x" * (i % 7) for i in range(40)]
    barrier = multiprocessing.get_context("fork").Barrier(2)
    run_forked(_fill_share, [(tmp_path, texts, r, 2, barrier, tmp_path / f"rank{r}.json") for r in range(2)])
    done = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(d["encoded"] == len(d["texts"]) > 0 for d in done)
    assert not set(done[0]["texts"]) & set(done[1]["texts"]), "no text encoded twice"
    assert sorted(done[0]["texts"] + done[1]["texts"]) == sorted(texts)
    for r in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{r}.npy"), fake_encode(texts))
    shares = history_store.share_of(history_store.text_hashes(done[1]["texts"]), 2)
    assert (shares == 1).all(), "rank 1 encoded share 1"


def test_a_fill_writes_a_part_every_part_rows_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(history_store, "PART_ROWS", 2)
    store = HistoryStore.open(tmp_path, IDENTITY)
    assert store.fill(TEXTS, fake_encode, batch_size=2) == 5
    assert len(list(store.folder.glob("part-*.keys.npy"))) == 3  # 2 + 2 + 1 rows
    np.testing.assert_array_equal(HistoryStore.open(tmp_path, IDENTITY).rows(TEXTS), fake_encode(TEXTS))


def test_micro_batches_keep_to_a_token_budget():
    texts = ["a" * n for n in (1, 2, 3, 4, 10, 30)]
    assert micro_batches(texts, 64, max_tokens=8) == [["a", "aa"], ["aaa", "aaaa"], ["a" * 10], ["a" * 30]]
    assert micro_batches(texts, 3) == [texts[:3], texts[3:]]
    counted = micro_batches(texts, 64, max_tokens=8, lengths=lambda chunk: [1] * len(chunk))
    assert [len(c) for c in counted] == [6], "one token each: all fit"
