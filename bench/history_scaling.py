"""What a longer history costs Behavioral Twin per example, with and without long-term memory.

    python -m bench.history_scaling [--lengths 10,100,1000,10000] [--top_n 16] [--repeats 5] [--threads 1]
                                    [--key=value ...]

One run, one model (train.py's: by default the embedded default, MiniLM encoders and
SmolLM2-135M; any train.py setting can be passed), one user whose
history grows from 10 to 10,000 items. For each length, with memory off (every item goes
to the Q-Former) and on (`memory_top_n` items, picked from the user's FAISS index), it
measures one example (batch of 1, eval mode, no grad):

* prompts:  history -> soft prompts (history lookup, memory search, input encoder,
            Q-Former, projection); the LLM is not run.
* with_llm: the same plus the frozen LLM's loss forward on the answer, i.e. a full
            evaluation forward of the model.

Time is the median over `repeats` examples, each with a question not seen before (so the
memory path also pays for embedding its query). Memory is the peak of torch tensor
memory allocated during one example, from torch.profiler's allocation events: the
working memory of the forward. The frozen weights, the stored history embeddings and a
user's index (its size is reported as `index_bytes`) exist before the example starts and
are not in it. The user's index is built once, by a warm-up example before timing
(`index_build_seconds`: that whole first example, index build included).

History items are random unit vectors of the encoder's width (MiniLM: 384), put straight into
the embedding cache: encoding 10,000 real texts with MiniLM would take minutes on a CPU
and changes nothing in what is timed. Questions are real embedded LaMP-1 questions.
Writes saved/bench/history_scaling.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import time

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import (add_results_option, add_threads_option, apply_threads, default_config, write_report,
                          write_results_section)
from dataset.collate import Batch, LaMPItem, collate
from dataset.history_store import HistoryStore
from dataset.memory import HistoryMemory
from trainers.builder import load_datasets
from trainers.methods import build_model


def peak_tensor_bytes(fn) -> int:
    """Peak of live torch CPU tensor memory while `fn()` runs, from the profiler's events:
    each op's own allocations minus frees, plus the frees recorded outside ops, in time order."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        live += event.cpu_memory_usage if event.name == "[memory]" else event.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def fresh(texts: list[str]) -> list[str]:
    """Equal strings as new objects, as a data loader renders them for every batch (a string
    caches its hash, so reusing the objects would make the per-user index lookup look free)."""
    return [(t + " ")[:-1] for t in texts]


def measure(twin, history: list[str], questions, repeats: int) -> dict:
    """One history length, memory as set on `twin`: median seconds and peak bytes per example."""
    def example(question) -> Batch:
        return collate([LaMPItem(question.id, "LaMP-1", fresh(history), question.input, question.output)])
    stream = iter(questions)
    started = time.perf_counter()
    twin.soft_prompts(example(next(stream)))  # warm-up; with memory it builds this user's index
    build_seconds = time.perf_counter() - started  # the whole first example, index build included
    timings = {"prompts": [], "with_llm": []}
    for _ in range(repeats):
        for name, run in (("prompts", twin.soft_prompts), ("with_llm", twin.forward)):
            batch = example(next(stream))
            started = time.perf_counter()
            run(batch)
            timings[name].append(time.perf_counter() - started)
    out = {f"seconds_{name}": statistics.median(values) for name, values in timings.items()}
    out["peak_bytes_prompts"] = peak_tensor_bytes(lambda: twin.soft_prompts(example(next(stream))))
    out["peak_bytes_with_llm"] = peak_tensor_bytes(lambda: twin.forward(example(next(stream))))
    if twin.memory is not None:
        index = twin.memory.user_index(fresh(history), twin.behavioral_encoder.encode_texts)  # built: no rebuild
        out.update(index_bytes=index.nbytes, index_build_seconds=build_seconds, index_builds=twin.memory.builds)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="10,100,1000,10000")
    parser.add_argument("--top_n", type=int, default=16, help="memory_top_n: items the Q-Former reads with memory")
    parser.add_argument("--repeats", type=int, default=5, help="examples timed per setting (median reported)")
    add_threads_option(parser)
    parser.add_argument("--out", default="saved/bench/history_scaling.json")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    apply_threads(args)
    lengths = [int(n) for n in args.lengths.split(",")]

    cfg = dataclasses.replace(default_config(settings), tasks=["LaMP-1"])
    twin = build_model(cfg).eval()
    hidden = twin.behavioral_encoder.hidden_size
    # An in-memory store: the benchmark's random vectors never reach the on-disk store.
    twin.behavioral_encoder.store = HistoryStore()
    generator = torch.Generator().manual_seed(0)
    vectors = torch.nn.functional.normalize(torch.randn(max(lengths), hidden, generator=generator), dim=-1)
    texts = [f"benchmark history item {i}: a past event of this user" for i in range(max(lengths))]
    row_of = {text: i for i, text in enumerate(texts)}
    twin.behavioral_encoder.store.fill(texts, lambda chunk: vectors[[row_of[t] for t in chunk]].numpy())
    train, _ = load_datasets(cfg, "train")["LaMP-1"]
    per_setting = 2 * args.repeats + 3  # warm-up, timed, profiled
    questions = iter(train.examples)

    results: dict[str, dict] = {}
    with torch.no_grad():
        for length in lengths:
            for memory in (False, True):
                twin.memory = HistoryMemory(args.top_n) if memory else None
                batch_questions = [next(questions) for _ in range(per_setting)]
                key = f"{length}_{'with' if memory else 'without'}_memory"
                results[key] = measure(twin, texts[:length], batch_questions, args.repeats)
                print(key, {k: round(v, 4) if isinstance(v, float) else v for k, v in results[key].items()}, flush=True)

    first, last = lengths[0], lengths[-1]
    summary = {
        "setup": {"encoder": cfg.encoder, "llm": cfg.llm, "llm_dtype": cfg.llm_dtype, "memory_top_n": args.top_n,
                  "repeats": args.repeats,
                  "history_embeddings": f"random unit vectors of the encoder width ({hidden}), not real MiniLM "
                                        "embeddings; questions, input encoder and LLM are real",
                  "time": "median seconds per example (batch 1, eval, no grad), each a new question",
                  "peak_memory": "peak torch tensor memory allocated during one example (torch.profiler); "
                                 "weights, stored embeddings and the user's index (index_bytes) excluded",
                  "prompts": "history -> soft prompts, no LLM", "with_llm": "soft prompts + the LLM's loss forward",
                  "threads": torch.get_num_threads()},
        "results": results,
        "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    for memory in ("with", "without"):
        a, b = results[f"{first}_{memory}_memory"], results[f"{last}_{memory}_memory"]
        suffix = f"{last}_vs_{first}_{memory}_memory"
        summary[f"time_ratio_{suffix}"] = b["seconds_prompts"] / a["seconds_prompts"]
        summary[f"time_ratio_{suffix}_with_llm"] = b["seconds_with_llm"] / a["seconds_with_llm"]
        summary[f"peak_memory_ratio_{suffix}"] = b["peak_bytes_prompts"] / a["peak_bytes_prompts"]
        summary[f"peak_memory_ratio_{suffix}_with_llm"] = b["peak_bytes_with_llm"] / a["peak_bytes_with_llm"]
    print(json.dumps({k: v for k, v in summary.items() if k.endswith("memory") or "ratio" in k}, indent=2))
    write_report(summary, args.out)
    lines = ["| history items | memory | seconds, prompts | seconds, with LLM | peak MB, prompts | peak MB, with LLM |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {key.split('_')[0]} | {key.split('_')[1]} | {row['seconds_prompts']:.4f} | "
              f"{row['seconds_with_llm']:.4f} | {row['peak_bytes_prompts'] / 1e6:.1f} | "
              f"{row['peak_bytes_with_llm'] / 1e6:.1f} |" for key, row in results.items()]
    write_results_section("history_scaling", "History length: time and memory per example, with and without memory",
                          f"{cfg.encoder} + {cfg.llm} ({cfg.llm_dtype}), memory_top_n {args.top_n}, median of "
                          f"{args.repeats} examples, batch 1; history rows are random unit vectors.\n\n"
                          + "\n".join(lines), path=args.results)
    return summary


if __name__ == "__main__":
    main()
