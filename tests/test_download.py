"""The LaMP downloader against a local HTTP server, and the "data not found" messages."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dataset.download.official import (DownloadError, download_lamp, lamp_files, main, partial_path, remote_url,
                              validate_lamp_json)
from dataset.lamp import LaMPFormatError, check_split_files, load_split
from dataset.layout import split_paths

FAST = {"retries": 2, "backoff": 0.001, "timeout": 5.0, "progress": False}
SPLITS = ("train", "dev", "test")


# --- tiny official-format data ---------------------------------------------------------------------------


def lamp1_split(split: str, n: int = 3) -> tuple[list, dict]:
    questions = [{"id": f"1{split}{i}",
                  "input": f'For an author who has written the paper with the title "Paper {i}", which '
                           f'reference is related? [1]: "A {i}" [2]: "B {i}"',
                  "profile": [{"id": f"p{i}{j}", "title": f"Title {j}", "abstract": f"Abstract {j}."}
                              for j in range(2 + i)]}
                 for i in range(n)]
    outputs = {"task": "LaMP_1", "golds": [{"id": q["id"], "output": "[1]" if i % 2 else "[2]"}
                                           for i, q in enumerate(questions)]}
    return questions, outputs


def lamp2_split(split: str, n: int = 3) -> tuple[list, dict]:
    questions = [{"id": f"2{split}{i}", "input": f"Which tag does this movie relate to? description: film {i}",
                  "profile": [{"id": f"m{i}{j}", "description": f"A film about {j}.", "tag": "comedy"}
                              for j in range(1 + i)]}
                 for i in range(n)]
    outputs = {"task": "LaMP_2", "golds": [{"id": q["id"], "output": "comedy"} for q in questions]}
    return questions, outputs


def encode(document) -> bytes:
    return json.dumps(document, indent=1).encode("utf-8")


def official_files(prefix: str = "") -> dict[str, bytes]:
    """URL path (under the base) -> body, at LaMP's official addresses (LaMP-2 under new/)."""
    files = {}
    for folder, make in (("LaMP_1", lamp1_split), ("LaMP_2/new", lamp2_split)):
        for split in SPLITS:
            questions, outputs = make(split)
            files[f"{prefix}{folder}/{split}/{split}_questions.json"] = encode(questions)
            if split != "test":
                files[f"{prefix}{folder}/{split}/{split}_outputs.json"] = encode(outputs)
    return files


# --- the server ------------------------------------------------------------------------------------------


class LaMPServer:
    """Serves `files` under /downloads/LaMP/ with Range support; `behaviour[path]` changes one path:
    "404", "truncate" (200 with a Content-Length longer than the body), "truncate-once" (that,
    then normal), "flaky" (500 once, then normal) or "ignore-range" (always 200 with the whole body)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.behaviour: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path under the base, Range header)
        self._failed_once: set[str] = set()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.handle(self)

            def log_message(self, *args):  # keep test output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/downloads/LaMP"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.removeprefix("/downloads/LaMP/")
        range_header = request.headers.get("Range")
        self.requests.append((path, range_header))
        behaviour = self.behaviour.get(path, "")
        body = self.files.get(path)
        if body is None or behaviour == "404":
            return self._send(request, 404, b"<html>Not Found</html>")
        if behaviour == "flaky" and path not in self._failed_once:
            self._failed_once.add(path)
            return self._send(request, 500, b"<html>Internal Server Error</html>")
        if behaviour == "truncate" or (behaviour == "truncate-once" and path not in self._failed_once):
            self._failed_once.add(path)
            request.send_response(200)
            request.send_header("Content-Length", str(len(body)))
            request.end_headers()
            request.wfile.write(body[: len(body) // 2])
            request.close_connection = True
            return None
        if range_header and behaviour != "ignore-range":
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                return self._send(request, 416, b"", {"Content-Range": f"bytes */{len(body)}"})
            return self._send(request, 206, body[start:],
                              {"Content-Range": f"bytes {start}-{len(body) - 1}/{len(body)}"})
        return self._send(request, 200, body)

    @staticmethod
    def _send(request, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        request.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(body)

    def paths_requested(self) -> list[str]:
        return [path for path, _ in self.requests]


@pytest.fixture
def server():
    lamp = LaMPServer({**official_files(), **official_files("time/")})
    lamp.thread.start()
    yield lamp
    lamp.httpd.shutdown()
    lamp.httpd.server_close()


def no_partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.part"))


# --- downloading -----------------------------------------------------------------------------------------


def test_urls_follow_lamps_layout():
    base = "https://example.org/LaMP"
    assert remote_url(base, "LaMP-1", "user", "train", "questions") == f"{base}/LaMP_1/train/train_questions.json"
    assert remote_url(base + "/", "LaMP_2", "time", "dev", "outputs") == f"{base}/time/LaMP_2/new/dev/dev_outputs.json"
    files = lamp_files(["LaMP-3"], "/data", "time", base_url=base)
    assert [f.path.as_posix() for f in files] == [
        "/data/time/LaMP_3/train_questions.json", "/data/time/LaMP_3/train_outputs.json",
        "/data/time/LaMP_3/dev_questions.json", "/data/time/LaMP_3/dev_outputs.json",
        "/data/time/LaMP_3/test_questions.json"]  # no test outputs: LaMP hides them


def test_full_download_produces_the_layout_and_reads_back(server, tmp_path):
    downloaded = download_lamp(["LaMP-1", "LaMP-2"], tmp_path, "user", base_url=server.base_url, **FAST)
    assert len(downloaded) == 10
    for task, make in (("LaMP-1", lamp1_split), ("LaMP-2", lamp2_split)):
        for split in SPLITS:
            examples = load_split(tmp_path, task, split)
            questions, outputs = make(split)
            assert [e.id for e in examples] == [q["id"] for q in questions]
            if split == "test":
                assert all(e.output is None for e in examples)
            else:
                assert [e.output for e in examples] == [g["output"] for g in outputs["golds"]]
    assert load_split(tmp_path, "LaMP-1", "train", ("title", "abstract"))[2].profile[3]["title"] == "Title 3"
    assert (tmp_path / "LaMP_2" / "dev_outputs.json").read_bytes() == server.files["LaMP_2/new/dev/dev_outputs.json"]
    assert no_partials(tmp_path) == []


def test_time_split_goes_under_time(server, tmp_path):
    download_lamp(["LaMP-2"], tmp_path, "time", ["dev"], base_url=server.base_url, **FAST)
    assert server.paths_requested() == ["time/LaMP_2/new/dev/dev_questions.json", "time/LaMP_2/new/dev/dev_outputs.json"]
    assert len(load_split(tmp_path / "time", "LaMP-2", "dev")) == 3
    assert not (tmp_path / "LaMP_2").exists()


def test_rerun_skips_present_files_and_replaces_invalid_ones(server, tmp_path):
    download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    server.requests.clear()
    assert download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST) == []
    assert server.requests == []

    broken = tmp_path / "LaMP_1" / "dev_outputs.json"
    broken.write_text('{"task": "LaMP_1", "golds": [', encoding="utf-8")
    assert download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST) == [broken]
    assert broken.read_bytes() == server.files["LaMP_1/dev/dev_outputs.json"]


def test_resume_from_a_partial_file_uses_range(server, tmp_path):
    remote = "LaMP_1/train/train_questions.json"
    body = server.files[remote]
    dest = tmp_path / "LaMP_1" / "train_questions.json"
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(body[:100])

    download_lamp(["LaMP-1"], tmp_path, splits=["train"], base_url=server.base_url, chunk_size=64, **FAST)
    assert (remote, "bytes=100-") in server.requests
    assert dest.read_bytes() == body
    assert not partial_path(dest).exists()


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    remote = "LaMP_1/dev/dev_questions.json"
    server.behaviour[remote] = "ignore-range"
    dest = tmp_path / "LaMP_1" / "dev_questions.json"
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(b"garbage that must not survive")

    download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    assert (remote, "bytes=29-") in server.requests
    assert dest.read_bytes() == server.files[remote]


def test_complete_partial_file_is_finished_without_a_body(server, tmp_path):
    remote = "LaMP_1/dev/dev_outputs.json"
    dest = tmp_path / "LaMP_1" / "dev_outputs.json"
    dest.parent.mkdir(parents=True)
    partial_path(dest).write_bytes(server.files[remote])  # crashed between download and rename

    download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    assert server.requests == [("LaMP_1/dev/dev_questions.json", None),
                               (remote, f"bytes={len(server.files[remote])}-")]  # answered 416
    assert dest.read_bytes() == server.files[remote]
    assert not partial_path(dest).exists()


def test_dropped_connection_resumes_in_the_same_run(server, tmp_path):
    remote = "LaMP_1/train/train_questions.json"
    server.behaviour[remote] = "truncate-once"
    download_lamp(["LaMP-1"], tmp_path, splits=["train"], base_url=server.base_url, chunk_size=64, **FAST)
    half = len(server.files[remote]) // 2
    assert [r for r in server.requests if r[0] == remote] == [(remote, None), (remote, f"bytes={half}-")]
    assert (tmp_path / "LaMP_1" / "train_questions.json").read_bytes() == server.files[remote]


def test_server_error_is_retried(server, tmp_path):
    remote = "LaMP_2/new/dev/dev_questions.json"
    server.behaviour[remote] = "flaky"
    download_lamp(["LaMP-2"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    assert server.paths_requested().count(remote) == 2
    assert len(load_split(tmp_path, "LaMP-2", "dev")) == 3


def test_404_names_url_task_and_split_and_writes_nothing(server, tmp_path):
    remote = "LaMP_1/dev/dev_outputs.json"
    server.behaviour[remote] = "404"
    with pytest.raises(DownloadError) as error:
        download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    message = str(error.value)
    assert f"{server.base_url}/{remote}" in message and "404" in message
    assert "LaMP-1 dev outputs" in message and "--base-url" in message
    assert server.paths_requested().count(remote) == 1  # a 404 is final, not retried
    assert not (tmp_path / "LaMP_1" / "dev_outputs.json").exists()
    assert (tmp_path / "LaMP_1" / "dev_questions.json").exists()  # the file before it is kept


def test_truncated_body_keeps_only_the_part_file(server, tmp_path):
    remote = "LaMP_1/dev/dev_questions.json"
    server.behaviour[remote] = "truncate"
    dest = tmp_path / "LaMP_1" / "dev_questions.json"
    with pytest.raises(DownloadError) as error:
        download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    message = str(error.value)
    half, full = len(server.files[remote]) // 2, len(server.files[remote])
    assert f"truncated: {half} of {full} bytes" in message and str(partial_path(dest)) in message
    assert server.paths_requested().count(remote) == 1 + FAST["retries"]
    assert not dest.exists()
    assert partial_path(dest).read_bytes() == server.files[remote][:half]


def test_invalid_json_keeps_only_the_part_file(server, tmp_path):
    remote = "LaMP_1/dev/dev_questions.json"
    server.files[remote] = b'<html>Service moved</html>'
    dest = tmp_path / "LaMP_1" / "dev_questions.json"
    with pytest.raises(DownloadError, match="not a valid LaMP file.*not valid UTF-8 JSON") as error:
        download_lamp(["LaMP-1"], tmp_path, splits=["dev"], base_url=server.base_url, **FAST)
    assert str(partial_path(dest)) in str(error.value)
    assert not dest.exists() and partial_path(dest).exists()


def test_wrong_shape_is_rejected():
    with pytest.raises(DownloadError, match="LaMP-6 data is not public"):
        lamp_files(["LaMP-6"], "/data")
    with pytest.raises(DownloadError, match="unknown task 'LaMP-9'"):
        lamp_files(["LaMP-9"], "/data")


def test_validation_checks_the_kind_of_file(tmp_path):
    questions, outputs = lamp1_split("dev")
    q_path, o_path = tmp_path / "q.json", tmp_path / "o.json"
    q_path.write_bytes(encode(questions))
    o_path.write_bytes(encode(outputs))
    validate_lamp_json(q_path, "questions")
    validate_lamp_json(o_path, "outputs")
    with pytest.raises(ValueError, match="expected a list"):
        validate_lamp_json(o_path, "questions")
    with pytest.raises(ValueError, match='"task" and "golds"'):
        validate_lamp_json(q_path, "outputs")
    q_path.write_bytes(encode([{"id": "1", "input": "x"}]))
    with pytest.raises(ValueError, match="record #0"):
        validate_lamp_json(q_path, "questions")


def test_cli(server, tmp_path, capsys):
    out = tmp_path / "data"
    argv = ["--tasks", "LaMP-1,LaMP-2", "--split", "time", "--out", str(out), "--splits", "train,test",
            "--base-url", server.base_url, "--backoff", "0.001"]
    assert main(argv) == 0
    assert f"6 file(s) downloaded, 0 already present, under {out / 'time'}" in capsys.readouterr().out
    assert len(load_split(out / "time", "LaMP-1", "test")) == 3

    assert main(argv + ["--quiet"]) == 0
    assert "0 file(s) downloaded, 6 already present" in capsys.readouterr().out

    assert main(["--tasks", "LaMP-6", "--out", str(out), "--base-url", server.base_url]) == 1
    assert "LaMP-6 data is not public" in capsys.readouterr().err


# --- "not found" messages --------------------------------------------------------------------------------


def test_missing_task_lists_what_is_there_and_how_to_download(tmp_path):
    (tmp_path / "LaMP_1").mkdir()
    (tmp_path / "LaMP_1" / "dev_questions.json").write_text("[]")
    with pytest.raises(LaMPFormatError) as error:
        load_split(tmp_path, "LaMP-3", "dev")
    message = str(error.value)
    assert "LaMP_3/dev_questions.json: file not found" in message
    assert "LaMP_1/ (dev_questions.json)" in message
    assert f"python -m dataset.download --tasks LaMP-3 --split user --out {tmp_path}" in message
    assert f"--data_dir={tmp_path / 'time'}" in message


def test_missing_time_split_task_gives_the_time_command(tmp_path):
    time_dir = tmp_path / "time"
    (time_dir / "LaMP_2").mkdir(parents=True)
    with pytest.raises(LaMPFormatError) as error:
        check_split_files(time_dir, ["LaMP-2", "LaMP-5", "LaMP-6"], "train")
    message = str(error.value)
    assert f"python -m dataset.download --tasks LaMP-2,LaMP-5 --split time --out {tmp_path}\n" in message + "\n"
    assert "LaMP_5/train_outputs.json" in message  # every missing file is named, not just the first
    assert "LaMP-6 data is not public" in message
    assert "LaMP_2/ (nothing)" in message


# --- LaMP's own server layout, copied by hand ----------------------------------------------------------


def server_tree(root: Path, prefix: str = "") -> Path:
    """The files of official_files() on disk exactly as LaMP's server holds them."""
    for relative, body in official_files(prefix).items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(body)
    return root


@pytest.mark.parametrize("split_kind", ["user", "time"])
def test_the_servers_layout_reads_like_the_downloaders(server, tmp_path, split_kind):
    prefix = "time/" if split_kind == "time" else ""
    hand = server_tree(tmp_path / "by-hand", prefix) / prefix
    download_lamp(["LaMP-1", "LaMP-2"], tmp_path / "downloaded", split_kind, base_url=server.base_url, **FAST)
    downloaded = tmp_path / "downloaded" / prefix
    check_split_files(hand, ["LaMP-1", "LaMP-2"], "train")
    for task in ("LaMP-1", "LaMP-2"):
        for split in SPLITS:
            assert list(load_split(hand, task, split)) == list(load_split(downloaded, task, split))
    assert split_paths(hand, "LaMP-2", "dev")[1] == hand / "LaMP_2" / "new" / "dev" / "dev_outputs.json"
    assert split_paths(hand, "LaMP-1", "test")[0] == hand / "LaMP_1" / "test" / "test_questions.json"


def test_the_retired_lamp2_beside_new_is_never_read(tmp_path):
    retired = tmp_path / "LaMP_2" / "dev"  # news categorization, the folder above new/
    retired.mkdir(parents=True)
    questions, outputs = lamp2_split("dev")
    (retired / "dev_questions.json").write_bytes(encode(questions))
    (retired / "dev_outputs.json").write_bytes(encode(outputs))
    with pytest.raises(LaMPFormatError) as error:
        load_split(tmp_path, "LaMP-2", "dev")
    message = str(error.value)
    assert "LaMP_2/dev_questions.json: file not found" in message
    assert "LaMP_<i>/{split}/{split}_questions.json (LaMP-2 under LaMP_2/new/)" in message
    assert f"python -m dataset.download --tasks LaMP-2 --split user --out {tmp_path}" in message


def test_a_server_layout_missing_its_outputs_names_that_file(tmp_path):
    server_tree(tmp_path)
    (tmp_path / "LaMP_1" / "dev" / "dev_outputs.json").unlink()
    with pytest.raises(LaMPFormatError, match=r"LaMP_1/dev/dev_outputs.json: file not found"):
        check_split_files(tmp_path, ["LaMP-1", "LaMP-2"], "dev")


def test_the_downloader_writes_its_own_layout_beside_a_server_tree(server, tmp_path):
    server_tree(tmp_path)
    download_lamp(["LaMP-1"], tmp_path, "user", ["dev"], base_url=server.base_url, **FAST)
    assert (tmp_path / "LaMP_1" / "dev_outputs.json").is_file()
    # Both layouts there: the flattened one is read.
    assert split_paths(tmp_path, "LaMP-1", "dev")[0] == tmp_path / "LaMP_1" / "dev_questions.json"


def test_test_split_needs_questions_only(tmp_path):
    (tmp_path / "LaMP_1").mkdir()
    (tmp_path / "LaMP_1" / "test_questions.json").write_text("[]")
    check_split_files(tmp_path, ["LaMP-1"], "test")
    with pytest.raises(LaMPFormatError, match="dev_questions.json"):
        check_split_files(tmp_path, ["LaMP-1"], "dev")
