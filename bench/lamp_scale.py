"""LaMP at scale: reading memory, the sharded history-store fill, the first training step.

    python -m bench.lamp_scale [--fraction 0.1] [--rss_sizes 200,2000] [--fill_texts 600] [--key=value ...]

1. Writes LaMP-shaped files (train and dev splits of LaMP-1 to 7; SHAPES) at `--fraction`
   of their full question counts, with each task's profile sizes and item lengths, under
   --data_root. Texts are random words; only sizes and shapes are LaMP's.
2. Reading memory (fresh process per measure, peak RSS from the kernel's high-water mark,
   reset first): for LaMP-3-shaped train splits of each of `--rss_sizes` questions, what
   converting the JSON to its Arrow table adds to the peak, what reading the table and
   touching every example (its profile texts, one example alive at a time) adds, as
   training reads them (each profile's last `--max_history` items) and whole (as rag's
   retrieval reads them), and, for reference, what parsing the whole file with json.load
   as the reader did before adds.
3. History-store fill throughput (texts/s) of `--fill_texts` LaMP-3 items with the
   settings' encoder, fresh store each time, the variants taking turns `--rounds` times:
   one rank with 1 torch thread, one rank with all cores' threads, and two ranks with 1
   thread each filling their shares at once (each rank as in a run: its share, a barrier,
   then the others' parts). `sharded_vs_one_rank` = the two-rank fill's time / the
   1-thread rank's: without sharding two ranks take as long as one (one encodes, the other
   waits), so this is the fill time sharding leaves. `sharded_vs_all_threads` compares with
   one rank using every core instead.
4. Time to the first training step and peak RSS per rank: `torchrun --nproc_per_node 2`
   (CPU, gloo) of train.py on the generated LaMP-3 files with the given settings, stopped
   right after the first optimizer step; once on empty caches (models converted, data
   converted to Arrow, history store filled), once more on the caches that run left.
Prints the tables, writes saved/bench/lamp_scale.json and its section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import RESULTS, write_report, write_results_section
from trainers.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Shape:
    """One task's size as published (LaMP paper, user-based split) and its items' shape."""

    train: int  # questions
    dev: int
    profile: int  # mean profile items per question (spread: a gamma of shape 2, about LaMP-3's published +-)
    item: dict  # profile field -> words (our estimate of LaMP's typical length), or a value list
    input_words: int  # our estimate


SHAPES = {
    "LaMP-1": Shape(9682, 2500, 91, {"title": 10, "abstract": 140}, 50),
    "LaMP-2": Shape(3820, 696, 52, {"description": 60, "tag": ["sci-fi", "comedy", "romance", "action"]}, 60),
    "LaMP-3": Shape(20000, 2500, 185, {"text": 75, "score": ["1", "2", "3", "4", "5"]}, 190),
    "LaMP-4": Shape(12527, 1925, 287, {"text": 30, "title": 10}, 30),
    "LaMP-5": Shape(14682, 1500, 90, {"abstract": 150, "title": 10}, 150),
    "LaMP-6": Shape(4821, 1250, 56, {"text": 100, "title": 6}, 100),
    "LaMP-7": Shape(13437, 1498, 18, {"text": 20}, 30),
}
INPUTS = {"LaMP-1": 'For an author who has written the paper with the title "{}", which reference is related? '
                    'Just answer with [1] or [2] without explanation. [1]: "{}" [2]: "{}"',
          "LaMP-2": "Which tag does this movie relate to among the following tags? description: {}",
          "LaMP-3": "What is the score of the following review on a scale of 1 to 5? review: {}",
          "LaMP-4": "Generate a headline for the following article: {}",
          "LaMP-5": "Generate a title for the following abstract of a paper: {}",
          "LaMP-6": "Generate a subject for the following email: {}",
          "LaMP-7": "Paraphrase the following tweet without any explanation before or after it: {}"}
VOCABULARY = [f"w{i:04d}" for i in range(5000)]


def words(rng: random.Random, mean: int) -> str:
    return " ".join(rng.choices(VOCABULARY, k=max(1, int(rng.gauss(mean, mean / 4)))))


def write_split(folder: Path, task: str, split: str, questions: int, seed: int = 0) -> Path:
    """LaMP_<i>/{split}_questions.json and _outputs.json of `questions` questions shaped like `task`'s."""
    shape, rng = SHAPES[task], random.Random(f"{task}/{split}/{seed}")
    number = task.split("-")[1]
    out = folder / f"LaMP_{number}"
    out.mkdir(parents=True, exist_ok=True)
    golds = []
    with open(out / f"{split}_questions.json", "w") as f:  # one record at a time: a full-size file is gigabytes
        f.write("[")
        for q in range(questions):
            qid = f"{number}{split[0]}{q}"
            profile = [{"id": f"{qid}-{j}", **{name: rng.choice(spec) if isinstance(spec, list) else words(rng, spec)
                                               for name, spec in shape.item.items()}}
                       for j in range(max(1, round(rng.gammavariate(2, shape.profile / 2))))]
            fields = (words(rng, shape.input_words) for _ in range(3))
            text = INPUTS[task].format(*fields)
            f.write(("," if q else "") + json.dumps({"id": qid, "input": text, "profile": profile}))
            golds.append({"id": qid, "output": "[1]" if task == "LaMP-1" else
                          profile[0].get("tag") or profile[0].get("score") or words(rng, 10)})
        f.write("]")
    (out / f"{split}_outputs.json").write_text(json.dumps({"task": f"LaMP_{number}", "golds": golds}))
    return out / f"{split}_questions.json"


# ------------------------------------------------------------------ measures in fresh processes

def _peak_rss_reset() -> int:
    """Reset this process's peak RSS to its current RSS (Linux) and return that, in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmHWM")


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child_memory(what: str, questions: str, cache: str, keep_last: str = "0") -> dict:
    """In a fresh process: the peak RSS that `what` (convert | read | json) adds; read keeps
    each profile's last `keep_last` items (0: whole profiles)."""
    import dataset.lamp as lamp
    from dataset.tasks import get_task
    fields = get_task("LaMP-3").profile_fields
    path = Path(questions)
    if what == "read":
        lamp.read_lamp_split(path, required_profile_fields=fields, cache_dir=cache)  # converted before: maps only
    start = _peak_rss_reset()
    began = time.perf_counter()
    if what == "json":  # the former reader: the whole file parsed, every record kept
        records = json.loads(path.read_text())
        count, profile_of = len(records), lambda index: records[index]["profile"]
    else:
        split = lamp.read_lamp_split(path, required_profile_fields=fields, cache_dir=cache).keeping_last(int(keep_last))
        count, profile_of = len(split) if what == "read" else 0, lambda index: split[index].profile
    touched = largest = 0  # profile characters of every example and of the largest, counted as they go
    for index in range(count):  # one example alive at a time (a loop variable would keep the last one too)
        chars = sum(len(item["text"]) for item in profile_of(index))
        touched, largest = touched + chars, max(largest, chars)
    return {"added_bytes": _status("VmHWM") - start, "seconds": time.perf_counter() - began,
            "touched": touched, "largest_example_chars": largest}


def child_fill(texts_file: str, store: str, rank: int, world: int, threads: int, settings: list[str],
               port: int) -> dict:
    """In a fresh process: one rank's part of a fill (its share, a barrier, the others' parts)."""
    import torch
    torch.set_num_threads(threads)
    import torch.distributed as dist

    from bench.common import default_config
    from dataset.history_store import HistoryStore
    from trainers.builder import build_history_encoder
    cfg = default_config(settings)
    encoder = build_history_encoder(cfg)
    encoder.store = HistoryStore(store)
    texts = json.loads(Path(texts_file).read_text())
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
        dist.barrier()
    began = time.perf_counter()
    encoder.precompute(texts, rank=rank, world=world)
    if world > 1:
        dist.barrier()  # accelerator.wait_for_everyone() in a run
    encoder.precompute(texts)  # opens the other ranks' parts; encodes nothing
    seconds = time.perf_counter() - began
    assert not encoder.store.missing(texts)
    if world > 1:
        dist.destroy_process_group()
    return {"seconds": seconds}


def child_first_step(settings: list[str]) -> dict:
    """In a torchrun rank: train.py with `settings`, stopped after its first optimizer step."""
    import torch

    import train
    started = time.perf_counter()
    real_step = torch.optim.AdamW.step

    class FirstStep(Exception):
        pass

    def step(self, *args, **kwargs):
        real_step(self, *args, **kwargs)
        raise FirstStep
    torch.optim.AdamW.step = step
    try:
        train.main(settings)
    except FirstStep:
        pass
    else:
        raise RuntimeError("train.py ended without an optimizer step")
    return {"seconds_to_first_step": time.perf_counter() - started, "peak_rss_bytes": _status("VmHWM"),
            "rank": int(os.environ.get("RANK", 0))}


def run_child(*args: str, env: dict | None = None, launcher: list[str] | None = None) -> list[dict]:
    """Run this module's `child` command in fresh processes; -> each process's JSON line."""
    command = [*(launcher or [sys.executable]), "-m" if not launcher else "", "bench.lamp_scale", "child", *args]
    command = [c for c in command if c]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return [json.loads(line[len("RESULT "):]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the parts

def memory(data: Path, sizes: list[int], cache: Path, max_history: int) -> list[dict]:
    """Per size: convert, read as training reads (each profile's last `max_history` items),
    read whole profiles (as rag's retrieval does), and the former json.load."""
    rows = []
    for n in sizes:
        questions = write_split(data / f"rss-{n}", "LaMP-3", "train", n)
        row = {"questions": n, "file_bytes": questions.stat().st_size, "max_history": max_history}
        for name, what, keep in (("convert", "convert", 0), ("read", "read", max_history),
                                 ("read_whole", "read", 0), ("json", "json", 0)):
            row[name] = run_child("memory", what, str(questions), str(cache / f"rss-{n}"), str(keep))[0]
        rows.append(row)
    return rows


def fill(data: Path, texts: int, rounds: int, settings: list[str]) -> dict:
    from dataset.lamp import read_lamp_split
    from dataset.tasks import get_task
    task = get_task("LaMP-3")
    questions = write_split(data / "fill", "LaMP-3", "train", max(4, texts // 100))
    items = [task.profile_text(item) for example in read_lamp_split(questions) for item in example.profile]
    items = list(dict.fromkeys(items))[:texts]
    texts_file = data / "fill" / "texts.json"
    texts_file.write_text(json.dumps(items))
    cores = os.cpu_count() or 1
    variants = {"one_rank_1_thread": (1, 1), f"one_rank_{cores}_threads": (1, cores), "two_ranks_1_thread": (2, 1)}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, (world, threads) in variants.items():
            with tempfile.TemporaryDirectory() as store:
                port = str(free_port())
                if world == 1:
                    result = run_child("fill", str(texts_file), store, "0", "1", str(threads), port, "--", *settings)
                else:  # the ranks start together, as torchrun starts them
                    procs = [subprocess.Popen([sys.executable, "-m", "bench.lamp_scale", "child", "fill", str(texts_file),
                                               store, str(rank), "2", str(threads), port, "--", *settings],
                                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                             for rank in range(world)]
                    outs = [p.communicate() for p in procs]
                    if any(p.returncode for p in procs):
                        raise RuntimeError("\n".join(err[-3000:] for _, err in outs))
                    result = [json.loads(line[len("RESULT "):]) for out, _ in outs for line in out.splitlines()
                              if line.startswith("RESULT ")]
                seconds[name].append(max(r["seconds"] for r in result))  # the fill ends when its last rank does
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    return {"texts": len(items), "rounds": rounds, "seconds": seconds, "median_seconds": medians,
            "texts_per_s": {name: len(items) / s for name, s in medians.items()},
            "sharded_vs_one_rank": medians["two_ranks_1_thread"] / medians["one_rank_1_thread"],
            "sharded_vs_all_threads": medians["two_ranks_1_thread"] / medians[f"one_rank_{cores}_threads"]}


def first_step(data: Path, cache: Path, settings: list[str], train_questions: int) -> list[dict]:
    folder = data / "first-step"
    for split, n in (("train", train_questions), ("dev", max(2, train_questions // 8))):
        write_split(folder, "LaMP-3", split, n)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    args = [f"--data_dir={folder}", "--tasks=LaMP-3", f"--cache_dir={cache}", f"--out_dir={data / 'runs'}",
            "--save_every=0", *settings]
    rows = []
    for caches in ("cold", "warm"):  # cold: models converted, data converted, store filled; warm: all found
        ranks = run_child("first-step", "--", *args, f"--run_name=first-step-{caches}", launcher=[*torchrun,
                          "--master_port", str(free_port()), "-m"], env={"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"})
        rows += [{**r, "caches": caches} for r in sorted(ranks, key=lambda r: r["rank"])]
    return rows


# ------------------------------------------------------------------ report

def mib(n: float, digits: int = 1) -> str:
    return f"{n / 2**20:.{digits}f}"


def tables(report: dict) -> str:
    memory_rows = report["memory"]
    keep = memory_rows[0]["max_history"]
    lines = ["Reading memory, LaMP-3-shaped train split (peak RSS added, MiB; fresh process each). Training "
             f"reads each profile's last max_history={keep} items, rag's retrieval whole profiles:", "",
             "| questions | file (MiB) | convert JSON -> Arrow (once) | read + touch every example, as training "
             "| read / file size | its largest example (M chars) | whole profiles | their largest (M chars) "
             "| former whole-file json.load |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in memory_rows:
        read, whole = r["read"], r["read_whole"]
        lines.append(f"| {r['questions']} | {mib(r['file_bytes'])} | {mib(r['convert']['added_bytes'])} | "
                     f"{mib(read['added_bytes'], 2)} | {read['added_bytes'] / r['file_bytes']:.3f} | "
                     f"{read['largest_example_chars'] / 1e6:.2f} | {mib(whole['added_bytes'], 2)} | "
                     f"{whole['largest_example_chars'] / 1e6:.2f} | {mib(r['json']['added_bytes'])} |")

    def spread(name: str, field: str) -> float:  # largest / smallest over the sizes
        values = [r[name][field] for r in memory_rows]
        return max(values) / min(values)
    lines += ["", f"read_flatness (largest / smallest addition of the training read): {spread('read', 'added_bytes'):.2f}",
              f"read_whole_flatness (the same, whole profiles): {spread('read_whole', 'added_bytes'):.2f}; "
              f"largest_example_growth (largest / smallest of the largest whole profile's text): "
              f"{spread('read_whole', 'largest_example_chars'):.2f}"]
    f = report.get("fill")
    lines += [] if not f else ["", f"History-store fill, {f['texts']} LaMP-3 items, medians of {f['rounds']} rounds taking turns:", "",
              "| fill | seconds | texts/s |", "|---|---|---|"]
    lines += [] if not f else [f"| {name.replace('_', ' ')} | {f['median_seconds'][name]:.1f} | "
                               f"{f['texts_per_s'][name]:.1f} |" for name in f["median_seconds"]]
    lines += [] if not f else ["", f"sharded_vs_one_rank {f['sharded_vs_one_rank']:.2f} (two ranks of 1 thread / one rank of 1 thread), "
              f"sharded_vs_all_threads {f['sharded_vs_all_threads']:.2f} (/ one rank with every core's threads)"]
    if report.get("first_step"):
        lines += ["", f"2 CPU ranks, train.py on {report['first_step_questions']} LaMP-3-shaped train questions, "
                  "from process start (cold: models, data and history store made first; warm: all found):", "",
                  "| caches | rank | time to first training step (s) | peak RSS (MiB) |", "|---|---|---|---|"]
        lines += [f"| {r['caches']} | {r['rank']} | {r['seconds_to_first_step']:.1f} | {mib(r['peak_rss_bytes'])} |"
                  for r in report["first_step"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "child":
        return child(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.01, help="of each task's published question counts")
    parser.add_argument("--tasks", default=",".join(SHAPES), help="tasks whose shaped files to write")
    parser.add_argument("--rss_sizes", default="200,2000", help="LaMP-3 train questions of the memory measures")
    parser.add_argument("--max_history", type=int, default=TrainConfig.max_history,
                        help="profile items per example the training read keeps (train.py's max_history, "
                             "passed to the first-step run too)")
    parser.add_argument("--fill_texts", type=int, default=600, help="0 = skip the fill measure")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--first_step_questions", type=int, default=16, help="0 = skip the first-step run")
    parser.add_argument("--data_root", default="saved/bench/lamp_scale")
    parser.add_argument("--out", default="saved/bench/lamp_scale.json")
    parser.add_argument("--results", default=str(RESULTS), help="the RESULTS.md to write its section of ('' = none)")
    args, settings = parser.parse_known_args(argv)
    root = Path(args.data_root)
    data, cache = root / "data", root / "cache"
    written = {}
    for task in args.tasks.split(","):
        shape = SHAPES[task]
        for split, full in (("train", shape.train), ("dev", shape.dev)):
            n = max(1, round(full * args.fraction))
            written[f"{task}/{split}"] = {"questions": n, "bytes": write_split(data / "shaped", task, split, n).stat().st_size}
    print(f"wrote LaMP-shaped files at {args.fraction} of full size under {data / 'shaped'}: " +
          ", ".join(f"{k} {v['questions']} q ({mib(v['bytes'])} MiB)" for k, v in written.items()), flush=True)
    report = {"fraction": args.fraction, "written": written, "settings": settings,
              "memory": memory(data, [int(n) for n in args.rss_sizes.split(",")], cache, args.max_history)}
    print(json.dumps(report["memory"]), flush=True)
    if args.fill_texts:
        report["fill"] = fill(data, args.fill_texts, args.rounds, settings)
    if args.first_step_questions:
        report["first_step_questions"] = args.first_step_questions
        report["first_step"] = first_step(data, cache / "first-step", [*settings, f"--max_history={args.max_history}"],
                                          args.first_step_questions)  # --max_history is train.py's too
    text = tables(report)
    print("\n" + text)
    write_report(report, args.out)
    if args.results:
        write_results_section("lamp_scale", "LaMP at scale: reading memory, sharded store fill, first step", text,
                              path=args.results)
    return report


def child(argv: list[str]) -> dict:
    command, rest = argv[0], argv[1:]
    if command == "memory":
        result = child_memory(*rest)
    elif command == "fill":
        texts_file, store, rank, world, threads, port, _, *settings = rest
        result = child_fill(texts_file, store, int(rank), int(world), int(threads), settings, int(port))
    elif command == "first-step":
        result = child_first_step(rest[1:])
    else:
        raise SystemExit(f"unknown child command {command!r}")
    # One write below the pipe's atomic size: torchrun's ranks share one stdout, and a line
    # printed in parts could interleave with the other rank's.
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), f"\nRESULT {json.dumps(result)}\n".encode())
    return result


if __name__ == "__main__":
    main()
