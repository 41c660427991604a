"""Reference scores of the embedded tasks: what ignoring vs reading the history is worth.

    python -m bench.embedded_references [--seed 0] [--encoder=minilm]

LaMP-1: a history-blind rule (always "[1]") and a history-aware one (the candidate whose
embedding by the history encoder, MiniLM by default, is closest to the mean of the
profile's). LaMP-7: copying the question's
tweet and applying the style read off the profile. Dev split, official metrics.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile

import torch

from trainers import model_registry
from bench.common import add_results_option, default_config, write_results_section
from dataset.embedded.lamp1 import generate_embedded_lamp1
from dataset.embedded.lamp7 import blind_prediction, generate_embedded_lamp7, oracle_prediction
from dataset.lamp import load_split
from dataset.tasks import get_task
from dataset.history_store import HistoryStore
from model import BehavioralEncoder
from trainers.metrics import task_metrics


def lamp1_references(root, encoder_name: str, cache_dir) -> dict:
    task = get_task("LaMP-1")
    examples = load_split(root, "LaMP-1", "dev", task.profile_fields)
    backbone, tokenizer = model_registry.load_encoder(encoder_name, cache_dir)
    encoder = BehavioralEncoder(backbone, tokenizer, "mean", max_length=128, store=HistoryStore())  # in memory
    golds, closest = [e.output for e in examples], []
    for e in examples:
        history = torch.nn.functional.normalize(encoder.encode_texts([task.profile_text(p) for p in e.profile]), dim=-1)
        candidates = torch.nn.functional.normalize(encoder.encode_texts(re.findall(r'\[[12]\]: "(.*?)"', e.input)), dim=-1)
        similarity = candidates @ history.mean(0)  # [2]
        closest.append("[1]" if similarity[0] > similarity[1] else "[2]")
    return {"always [1] (history-blind)": task_metrics(task, ["[1]"] * len(golds), golds),
            "closest to the mean profile embedding (reads the history)": task_metrics(task, closest, golds)}


def lamp7_references(root) -> dict:
    task = get_task("LaMP-7")
    examples = load_split(root, "LaMP-7", "dev", task.profile_fields)
    golds = [e.output for e in examples]
    return {"copy the tweet (history-blind)": task_metrics(task, [blind_prediction(e.input) for e in examples], golds),
            "apply the style read off the profile": task_metrics(
                task, [oracle_prediction(e.input, [p["text"] for p in e.profile]) for e in examples], golds)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="the embedded data's generator seed")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    cfg = default_config(settings)  # the history encoder and the cache folder
    with tempfile.TemporaryDirectory() as root:
        generate_embedded_lamp1(root, seed=args.seed)
        generate_embedded_lamp7(root, seed=args.seed)
        results = {"LaMP-1": lamp1_references(root, cfg.encoder, cfg.resolved_cache_dir()),
                   "LaMP-7": lamp7_references(root)}
    lines = ["| task | rule | scores |", "|---|---|---|"]
    for task, rows in results.items():
        for name, metrics in rows.items():
            print(f"{task:7s} {name:60s} " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
            lines.append(f"| {task} | {name} | " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()) + " |")
    print(json.dumps(results))
    write_results_section("embedded_references", "Embedded tasks: reference scores of fixed rules",
                          f"Dev split of the embedded tasks (generator seed {args.seed}), history encoder "
                          f"{cfg.encoder}.\n\n" + "\n".join(lines), path=args.results)


if __name__ == "__main__":
    main()
