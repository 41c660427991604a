"""LaMP questions files through Arrow tables: the streaming parse, the cache, its invalidation,
one converter among processes, and bad files still named."""

import json
import os
from pathlib import Path

import pytest

from dataset import lamp_arrow
from dataset.lamp import LaMPFormatError, load_split, read_lamp_split
from tiny_models import run_forked


def records(n, start=0):
    return [{"id": str(100 + i), "input": f"question {i} \u00e9\u4e2d", "profile": [{"text": f"item {i}.{j}", "score": j}
                                                                          for j in range(1 + i % 3)]}
            for i in range(start, start + n)]


def write(path, value, **dump):
    path.write_text(json.dumps(value, **dump), encoding="utf-8")
    return path


@pytest.mark.parametrize("dump", [{}, {"indent": 2}, {"ensure_ascii": False}])
@pytest.mark.parametrize("read_bytes", [1, 7, 1 << 20])
def test_the_streaming_parse_gives_what_json_loads_gives(tmp_path, dump, read_bytes):
    path = write(tmp_path / "q.json", records(9), **dump)
    assert list(lamp_arrow.iter_json_array(path, read_bytes)) == json.loads(path.read_text())
    assert list(lamp_arrow.iter_json_array(write(tmp_path / "e.json", []), read_bytes)) == []


@pytest.mark.parametrize("text", ['{"a": 1}', '[{"a": 1},]', '[{"a": 1}', '[{"a": 1}] x', ""])
def test_the_streaming_parse_stops_at_what_is_not_an_array(tmp_path, text):
    (tmp_path / "q.json").write_text(text)
    with pytest.raises(lamp_arrow.NotStreamable):
        list(lamp_arrow.iter_json_array(tmp_path / "q.json", 3))


def test_a_split_is_converted_once_and_read_lazily_from_its_table(tmp_path, monkeypatch):
    path = write(tmp_path / "q.json", records(20))
    cache = tmp_path / "cache"
    first = read_lamp_split(path, cache_dir=cache)
    tables = list((cache / "lamp_arrow").rglob("*.arrow"))
    assert len(tables) == 1 and len(first) == 20
    monkeypatch.setattr(lamp_arrow, "iter_json_array", lambda *a: pytest.fail("parsed the JSON again"))
    again = read_lamp_split(path, cache_dir=cache)
    assert [(e.id, e.input, e.profile, e.output) for e in again] == \
        [(r["id"], r["input"], r["profile"], None) for r in records(20)]
    part = again[5:8]  # a slice is a view of the same table
    assert [e.id for e in part] == ["105", "106", "107"] and part[-1].profile == records(20)[7]["profile"]
    with pytest.raises(IndexError):
        again[20]


def test_keeping_the_last_items_decodes_only_the_chunks_that_hold_them(tmp_path, monkeypatch):
    chunk = lamp_arrow.ITEMS_PER_CHUNK
    profile = [{"text": f"item {j}", "score": j} for j in range(2 * chunk + 5)]  # chunks of chunk, chunk, 5 items
    path = write(tmp_path / "q.json", [{"id": "1", "input": "q", "profile": profile},
                                       {"id": "2", "input": "r", "profile": profile[:1]}])
    split = read_lamp_split(path, cache_dir=tmp_path / "cache")
    decoded = []
    real = lamp_arrow.zlib.decompress
    monkeypatch.setattr(lamp_arrow.zlib, "decompress", lambda data: decoded.append(1) or real(data))
    for keep, chunks_read in [(0, 3), (1, 1), (5, 1), (6, 2), (chunk + 5, 2), (chunk + 6, 3), (10 * chunk, 3)]:
        decoded.clear()
        example = split.keeping_last(keep)[0]
        assert example.profile == (profile[-keep:] if keep else profile) and len(decoded) == chunks_read, keep
    assert split.keeping_last(3)[1].profile == profile[:1] and split.keeping_last(3)[0:1].keep_last == 3


def test_inputs_given_to_a_split_replace_the_files_through_slices_and_profile_cuts(tmp_path):
    profile = [{"text": f"t{i}"} for i in range(4)]
    path = write(tmp_path / "q.json", [{"id": str(i), "input": f"q{i}", "profile": profile} for i in range(3)])
    split = read_lamp_split(path, cache_dir=tmp_path / "cache")[1:]  # rows 1 and 2
    rewritten = split.with_inputs(["new 1", "new 2"])
    assert [e.input for e in split] == ["q1", "q2"]  # the split itself is unchanged
    assert [(e.id, e.input) for e in rewritten] == [("1", "new 1"), ("2", "new 2")]
    assert [(e.id, e.input) for e in rewritten[1:]] == [("2", "new 2")]
    cut = rewritten.keeping_last(1)[0]
    assert (cut.input, cut.profile) == ("new 1", profile[-1:])
    with pytest.raises(ValueError, match="inputs: 3 for a split of 2"):
        split.with_inputs(["a", "b", "c"])


def test_rows_of_every_record_batch_are_read_with_preads_and_no_mapping_is_kept(tmp_path):
    rows = 2 * lamp_arrow.ROWS_PER_BATCH + 7  # three record batches, the last one short
    values = records(rows)
    values[3]["input"] = ""  # an empty string has no characters to read
    values[rows - 1]["profile"] = [{"text": "x" * 5000, "score": 1}] * (lamp_arrow.ITEMS_PER_CHUNK + 1)
    path = write(tmp_path / "q.json", values)
    cached = read_lamp_split(path, cache_dir=tmp_path / "cache")
    expected = [(r["id"], r["input"], r["profile"]) for r in values]
    assert [(e.id, e.input, e.profile) for e in cached] == expected
    assert [(e.id, e.input, e.profile) for e in read_lamp_split(path)] == expected  # the in-memory table too
    assert cached.questions.ids() == [r["id"] for r in values]
    picked = (rows - 1, 0, lamp_arrow.ROWS_PER_BATCH, 3)  # out of order, across batches
    assert [(cached[i].id, cached[i].input) for i in picked] == [(values[i]["id"], values[i]["input"]) for i in picked]
    table = next((tmp_path / "cache").rglob("*.arrow"))
    # The table is read with preads: a mapping of it would make this process resident in its
    # page-cache folios, not only in the bytes each row needs.
    assert str(table) not in Path("/proc/self/maps").read_text()
    with pytest.raises(IndexError):
        cached.questions.row(rows)


def test_a_changed_file_gets_a_new_table_and_the_stale_one_goes(tmp_path):
    path = write(tmp_path / "q.json", records(4))
    cache = tmp_path / "cache"
    assert [e.id for e in read_lamp_split(path, cache_dir=cache)] == ["100", "101", "102", "103"]
    old = list((cache / "lamp_arrow").rglob("*.arrow"))
    write(path, records(3, start=10))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # a later version of the file
    assert [e.id for e in read_lamp_split(path, cache_dir=cache)] == ["110", "111", "112"]
    new = list((cache / "lamp_arrow").rglob("*.arrow"))
    assert len(new) == 1 and new != old
    # Other checks of the profile fields make another table of the same file.
    read_lamp_split(path, required_profile_fields=("text",), cache_dir=cache)
    assert list((cache / "lamp_arrow").rglob("*.arrow")) != new


def test_a_malformed_file_is_named_with_its_record_and_nothing_is_cached(tmp_path):
    cache = tmp_path / "cache"
    bad = records(6)
    bad[4]["profile"][0] = "not an object"
    path = write(tmp_path / "q.json", bad)
    with pytest.raises(LaMPFormatError, match=r'q\.json: record #4 \(id \'104\'\): field "profile" item #0 is a string'):
        read_lamp_split(path, cache_dir=cache)
    assert not list(cache.rglob("*.arrow")), "a half-checked file left a table"
    path.write_text(json.dumps(records(6))[:-40])  # truncated
    with pytest.raises(LaMPFormatError, match=r"q\.json: malformed JSON at line 1, column \d+"):
        read_lamp_split(path, cache_dir=cache)
    path.write_bytes(b'[{"id": "1", "input": "caf\xe9", "profile": [{}]}]')
    with pytest.raises(LaMPFormatError, match=r"q\.json: not valid UTF-8 at byte offset 26 \(byte 0xe9\)"):
        read_lamp_split(path, cache_dir=cache)
    write(path, {"golds": []})
    with pytest.raises(LaMPFormatError, match="top level is an object, expected a list"):
        read_lamp_split(path, cache_dir=cache)
    assert not list(cache.rglob("*.arrow"))


def test_golds_are_matched_to_the_table_and_read_without_profiles(tmp_path, lamp_dir):
    cached = load_split(lamp_dir, "LaMP-1", "dev", cache_dir=tmp_path / "cache")
    in_memory = load_split(lamp_dir, "LaMP-1", "dev")
    assert [(e.id, e.input, e.profile, e.output) for e in cached] == [(e.id, e.input, e.profile, e.output)
                                                                     for e in in_memory]
    assert cached.golds() == {e.id: e.output for e in in_memory} and len(cached.golds()) == 8
    assert cached[:3].golds() == {e.id: e.output for e in in_memory[:3]}


def _convert(path, cache, log):
    real = lamp_arrow._write_rows

    def counted(rows, sink):
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return real(rows, sink)
    lamp_arrow._write_rows = counted
    split = read_lamp_split(path, cache_dir=cache)
    assert [e.id for e in split] == [r["id"] for r in records(300)]


def test_two_processes_at_once_convert_a_file_once(tmp_path):
    path = write(tmp_path / "q.json", records(300))
    run_forked(_convert, [(path, tmp_path / "cache", tmp_path / "log")] * 2)
    assert len((tmp_path / "log").read_text().split()) == 1, "one process converted, the other waited and mapped"
