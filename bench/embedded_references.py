"""Reference scores of the embedded tasks: rules that train nothing, blind to the history or reading it.

    python -m bench.embedded_references [--seed 0] [--encoder=minilm]

The embedded tasks are calibrated so that these rules score about what they score on real
LaMP (dataset/embedded/lamp1.py, lamp7.py); this script measures them on the dev split with
the official metrics and writes the table into RESULTS.md.

LaMP-1, history-blind: always "[1]"; the candidate closest to the user's new paper title.
LaMP-1, reading the history: the candidate closest to the mean of the profile's unit
embeddings; the candidate closest to its most similar profile paper.
LaMP-7, history-blind: copy the question's tweet. Reading the history: the tweet with the
markers the user mostly uses; the most similar past tweet.
Embeddings are the history encoder's (MiniLM by default), cosine similarities throughout.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from bench.common import add_results_option, default_config, write_results_section
from dataset.embedded.lamp1 import generate_embedded_lamp1
from dataset.embedded.lamp7 import blind_prediction, generate_embedded_lamp7, neutral_tweet, styled_prediction
from dataset.history_store import HistoryStore
from dataset.lamp import load_split
from dataset.tasks import get_task, lamp1_paper_title
from model import BehavioralEncoder
from trainers import model_registry
from trainers.metrics import task_metrics

LAMP1_ROWS = {"always [1]": "blind", "closest to the input paper's title": "blind",
              "closest to the mean profile embedding": "history",
              "closest to the most similar profile paper": "history"}
LAMP7_ROWS = {"copy the tweet": "blind", "the tweet with the user's usual markers": "history",
              "the most similar past tweet": "history"}


def unit_encoder(encoder_name: str, cache_dir) -> callable:
    """texts -> [N, H] unit embeddings by the history encoder (kept in memory, each text once)."""
    backbone, tokenizer = model_registry.load_encoder(encoder_name, cache_dir)
    encoder = BehavioralEncoder(backbone, tokenizer, "mean", max_length=128, store=HistoryStore())
    return lambda texts: torch.nn.functional.normalize(encoder.encode_texts(texts), dim=-1)


def lamp1_references(root, embed) -> dict:
    """Rule name -> metrics on the dev split of the LaMP-1 under `root`."""
    task = get_task("LaMP-1")
    examples = load_split(root, "LaMP-1", "dev", task.profile_fields)
    golds = [e.output for e in examples]
    texts = [task.profile_text(p) for e in examples for p in e.profile]
    embed(texts)  # one pass over every distinct text, batched
    predictions: dict[str, list[str]] = {name: [] for name in LAMP1_ROWS}
    for e in examples:
        candidates = embed(list(task.candidates(e.input)))  # [2, H]
        history = embed([task.profile_text(p) for p in e.profile])  # [P, H]
        title = embed([lamp1_paper_title(e.input)])[0]  # [H]
        similarity = candidates @ history.T  # [2, P]
        picks = {"always [1]": 0, "closest to the input paper's title": int((candidates @ title).argmax()),
                 "closest to the mean profile embedding": int((candidates @ history.mean(0)).argmax()),
                 "closest to the most similar profile paper": int(similarity.max(1).values.argmax())}
        for name, pick in picks.items():
            predictions[name].append(task.labels[pick])
    return {name: task_metrics(task, predictions[name], golds) for name in LAMP1_ROWS}


def lamp7_references(root, embed) -> dict:
    """Rule name -> metrics on the dev split of the LaMP-7 under `root`."""
    task = get_task("LaMP-7")
    examples = load_split(root, "LaMP-7", "dev", task.profile_fields)
    golds = [e.output for e in examples]
    embed([task.profile_text(p) for e in examples for p in e.profile])
    nearest = []
    for e in examples:
        past = [task.profile_text(p) for p in e.profile]
        nearest.append(past[int((embed(past) @ embed([neutral_tweet(e.input)])[0]).argmax())])
    predictions = {"copy the tweet": [blind_prediction(e.input) for e in examples],
                   "the tweet with the user's usual markers": [
                       styled_prediction(e.input, [task.profile_text(p) for p in e.profile]) for e in examples],
                   "the most similar past tweet": nearest}
    return {name: task_metrics(task, predictions[name], golds) for name in LAMP7_ROWS}


def table(results: dict) -> str:
    """Markdown table of every rule's metrics, the history-blind rows of a task first."""
    lines = ["| task | rule | reads | metrics |", "|---|---|---|---|"]
    for task, rows in results.items():
        kinds = LAMP1_ROWS if task == "LaMP-1" else LAMP7_ROWS
        for name, metrics in rows.items():
            reads = "the question only" if kinds[name] == "blind" else "the history"
            lines.append(f"| {task} | {name} | {reads} | " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
                         + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the embedded data's generator seed")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    cfg = default_config(settings)  # the history encoder and the cache folder
    embed = unit_encoder(cfg.encoder, cfg.resolved_cache_dir())
    with tempfile.TemporaryDirectory() as root:
        generate_embedded_lamp1(root, seed=args.seed)
        generate_embedded_lamp7(root, seed=args.seed)
        results = {"LaMP-1": lamp1_references(root, embed), "LaMP-7": lamp7_references(root, embed)}
    for task, rows in results.items():
        for name, metrics in rows.items():
            print(f"{task:7s} {name:45s} " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    print(json.dumps(results))
    write_results_section(
        "embedded_references", "Rules that train nothing on the embedded tasks (dev split)",
        f"Embedded data seed {args.seed}, history encoder `{cfg.encoder}`, official metrics; the tasks are "
        "calibrated to real LaMP's figures for the same rules (dataset/embedded/lamp1.py, lamp7.py).\n\n"
        + table(results), path=args.results)
    return results


if __name__ == "__main__":
    main()
