"""Accuracy against the number of queries used, with and without nested query training.

    python -m bench.adaptive_queries [--queries 8] [--steps 300] [--lr 1e-3] [--batch_size 32] [--threads 1]
                                     [--key=value ...]

Measured in the probe setting of bench/qformer_probe.py, where the embedded LaMP-1 is
learnable on a CPU: the run's history encoder and Q-Former with a linear head (mean of
the query outputs used -> [1]/[2]) in place of the frozen LLM. The input encoder is
frozen here (tune_layers=0), so its outputs are computed once per question and the
run takes minutes, not hours.

Two Q-Formers train on the same data in the same order: one as usual (all queries), one
with nested query dropout (`nested_queries`: causal queries, each example a random
prefix 1..Q). Each is then evaluated on the dev split with the first K queries, for
K = 1, 2, 4, ... Q, and (nested only) with the per-example rule `inference_queries=history`.
Any train.py setting can be passed (`--encoder=`, `--data_dir=`, ...); by default it is the
embedded default's. Prints a markdown table and writes saved/bench/adaptive_queries.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from bench.common import add_results_option, add_threads_option, apply_threads, default_config, write_report, \
    write_results_section
from bench.qformer_probe import TASK, label_logits, labels
from trainers.config import TrainConfig
from dataset.collate import collate
from model import InputEncoder
from trainers.builder import build_input_encoder, load_datasets
from trainers.methods import build_model


def train_and_evaluate(cfg: TrainConfig, nested: bool, args, train, dev, input_encoder: InputEncoder) -> dict:
    """input_encoder: frozen, shared by both models, so that each question is encoded once (it keeps their states)."""
    cfg = dataclasses.replace(cfg, seed=args.seed, num_queries=args.queries, nested_queries=nested, tune_layers=0,
                              label_loss=1.0)
    twin = build_model(cfg)
    twin.input_encoder = input_encoder
    optimizer = torch.optim.AdamW([*twin.qformer.parameters(), *twin.label_heads.parameters()], lr=args.lr)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
    started = time.time()
    for step in range(args.steps):
        twin.train()
        start = (step * args.batch_size) % len(train)
        batch = collate([train[i] for i in order[start:start + args.batch_size]])
        twin.label_prediction_loss(*twin.summarize(batch), batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    print(f"{'nested' if nested else 'plain'}: {args.steps} steps in {time.time() - started:.0f} s", flush=True)

    twin.eval()
    dev_batches = [collate([dev[j] for j in range(i, min(i + 50, len(dev)))]) for i in range(0, len(dev), 50)]
    rules = [str(2 ** i) for i in range(args.queries.bit_length()) if 2 ** i < args.queries] + [str(args.queries)]
    rules += ["history"] if nested else []
    accuracy, mean_queries = {}, {}
    with torch.no_grad():
        for rule in rules:
            twin.inference_queries = rule
            correct, used = 0, []
            for batch in dev_batches:
                correct += (label_logits(twin, batch).argmax(-1) == labels(batch)).sum().item()
                used += twin.summarize(batch)[1]
            accuracy[rule], mean_queries[rule] = correct / len(dev), sum(used) / len(used)
    return {"accuracy": accuracy, "mean_queries": mean_queries}


def table(results: dict, queries: int) -> str:
    lines = ["| queries used | plain training | nested query dropout |", "|---|---|---|"]
    for rule, nested_accuracy in results["nested"]["accuracy"].items():
        if rule == "history":
            label = f"per example, `history` rule (mean {results['nested']['mean_queries'][rule]:.2f})"
        else:
            label = f"first {rule} of {queries}"
        plain = results["plain"]["accuracy"].get(rule)
        lines.append(f"| {label} | {'n/a' if plain is None else f'{plain:.3f}'} | {nested_accuracy:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    add_threads_option(parser)
    parser.add_argument("--out", default="saved/bench/adaptive_queries.json")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    apply_threads(args)
    cfg = dataclasses.replace(default_config(settings), tasks=[TASK])
    train, _ = load_datasets(cfg, "train")[TASK]
    dev, _ = load_datasets(cfg, "dev")[TASK]
    input_encoder = build_input_encoder(cfg, cfg.input_output, tune_layers=0)
    results = {name: train_and_evaluate(cfg, name == "nested", args, train, dev, input_encoder)
               for name in ("plain", "nested")}
    text = table(results, args.queries)
    heading = f"{TASK} dev accuracy ({len(dev)} examples), probe setting, {args.steps} steps"
    print(f"\n{heading}:\n{text}")
    report = {"args": vars(args), "encoder": cfg.encoder, "data_dir": cfg.data_dir, "results": results, "table": text}
    write_report(report, args.out)
    write_results_section("adaptive_queries", "Adaptive queries: accuracy against the number of queries used",
                          f"{heading}, encoder {cfg.encoder}.\n\n{text}", path=args.results)
    return report


if __name__ == "__main__":
    main()
