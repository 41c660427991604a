"""Does the Q-Former carry the history signal? A probe without the LLM.

    python -m bench.qformer_probe [--steps 200] [--lr 1e-4] [--inits aligned,random] [--key=value ...]

Trains the input encoder's top layers, the Q-Former and a linear head (mean of the query
outputs -> [1]/[2]) on LaMP-1 with stored history embeddings, and prints dev accuracy
every `--eval_every` steps for each Q-Former init and seed. It separates "the Q-Former
cannot extract the answer" from "the answer does not get through the frozen LLM". Any
train.py setting can be passed (`--encoder=`, `--data_dir=`, ...); by default it is the
embedded default's. Writes saved/bench/qformer_probe.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from bench.common import add_results_option, default_config, write_report, write_results_section
from trainers.config import TrainConfig
from dataset.collate import collate
from dataset.tasks import get_task
from trainers.builder import load_datasets
from trainers.methods import build_model

TASK = "LaMP-1"
LABELS = get_task(TASK).labels


def label_logits(twin, batch) -> torch.Tensor:
    """The model's LaMP-1 label head on the mean of the query outputs each example uses -> [B, 2]."""
    return twin.label_heads[TASK](twin.pooled_summary(*twin.summarize(batch)))


def labels(batch) -> torch.Tensor:
    return torch.tensor([LABELS.index(target) for target in batch.targets])


def probe_config(cfg: TrainConfig, init: str, seed: int) -> TrainConfig:
    """The run's settings on LaMP-1 with this init and seed; the label head must exist."""
    return dataclasses.replace(cfg, tasks=[TASK], qformer_init=init, seed=seed, label_loss=1.0)


def dev_accuracy(twin, dev) -> float:
    twin.eval()
    with torch.no_grad():
        batches = [collate([dev[j] for j in range(i, min(i + 50, len(dev)))]) for i in range(0, len(dev), 50)]
        correct = sum((label_logits(twin, b).argmax(-1) == labels(b)).sum().item() for b in batches)
    return correct / len(dev)


def probe(cfg: TrainConfig, steps: int, lr: float, eval_every: int = 50, batch_size: int = 8) -> dict:
    """-> {"log": dev accuracy every `eval_every` steps, "losses": every step's loss}."""
    # The run's encoders, history store, Q-Former and label head; its LLM is built but not used.
    twin = build_model(cfg)
    params = [p for module in (twin.input_encoder, twin.qformer, twin.label_heads)
              for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    train, _ = load_datasets(cfg, "train")[TASK]
    dev, _ = load_datasets(cfg, "dev")[TASK]
    twin.behavioral_encoder.encode_texts(sorted(set(train.encoder_texts()) | set(dev.encoder_texts())),
                                         progress=True)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed)).tolist()

    log, losses, started = [], [], time.time()
    for step in range(steps):
        twin.train()
        start = (step * batch_size) % len(train)
        batch = collate([train[i] for i in order[start:start + batch_size]])
        loss = twin.label_prediction_loss(*twin.summarize(batch), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if (step + 1) % eval_every == 0:
            log.append({"init": cfg.qformer_init, "seed": cfg.seed, "step": step + 1,
                        "dev_accuracy": dev_accuracy(twin, dev), "seconds": round(time.time() - started, 1)})
            print(log[-1], flush=True)
    return {"log": log, "losses": losses}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--inits", default="aligned,random")
    parser.add_argument("--seeds", default="0,1,2", help="the transition out of chance is abrupt and seed-dependent")
    parser.add_argument("--out", default="saved/bench/qformer_probe.json")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    cfg = default_config(settings)
    runs = {init: {seed: probe(probe_config(cfg, init, int(seed)), args.steps, args.lr, args.eval_every)
                   for seed in args.seeds.split(",")} for init in args.inits.split(",")}
    final = {init: {seed: run["log"][-1]["dev_accuracy"] if run["log"] else None for seed, run in by_seed.items()}
             for init, by_seed in runs.items()}
    print(f"dev accuracy after {args.steps} steps, by init and seed: {final}")
    report = {"what": "LaMP-1 dev accuracy of a linear head on the Q-Former's mean output (no LLM)",
              "encoder": cfg.encoder, "data_dir": cfg.data_dir, "args": vars(args), "final_dev_accuracy": final,
              "runs": runs}
    write_report(report, args.out)
    rows = [f"| {init} | {seed} | {'n/a' if accuracy is None else f'{accuracy:.3f}'} |"
            for init, by_seed in final.items() for seed, accuracy in by_seed.items()]
    write_results_section("qformer_probe", "Q-Former probe: does the Q-Former carry the history signal (no LLM)?",
                          f"LaMP-1 dev accuracy of a linear head on the Q-Former's mean output after "
                          f"{args.steps} steps (encoder {cfg.encoder}, lr {args.lr}).\n\n| Q-Former init | seed | dev accuracy |\n"
                          "|---|---|---|\n" + "\n".join(rows), path=args.results)
    return report


if __name__ == "__main__":
    main()
