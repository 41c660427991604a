"""Does the Q-Former carry the history signal? A probe without the LLM.

    python -m bench.qformer_probe [--steps 200] [--lr 1e-4] [--inits aligned,random]

Trains the input encoder's top layers, the Q-Former and a linear head (mean of the query
outputs -> [1]/[2]) on the embedded LaMP-1 with cached MiniLM history embeddings, and
prints dev accuracy every 50 steps for each Q-Former init. It separates "the Q-Former
cannot extract the answer" from "the answer does not get through the frozen LLM".
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from config import TrainConfig
from dataset.collate import collate
from dataset.tasks import get_task
from trainers.builder import build_model, load_datasets


LABELS = get_task("LaMP-1").labels


def label_logits(twin, batch) -> torch.Tensor:
    """The model's LaMP-1 label head on the mean of the query outputs each example uses -> [B, 2]."""
    return twin.label_heads["LaMP-1"](twin.pooled_summary(*twin.summarize(batch)))


def labels(batch) -> torch.Tensor:
    return torch.tensor([LABELS.index(target) for target in batch.targets])


def probe(init: str, steps: int, lr: float, batch_size: int = 8, seed: int = 0) -> list[dict]:
    # The run's encoders, history cache, Q-Former and label head (label_loss); its LLM is not used.
    cfg = TrainConfig(seed=seed, qformer_init=init, label_loss=1.0)
    twin = build_model(cfg)
    params = [p for m in (twin.input_encoder, twin.qformer, twin.label_heads) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    train, _ = load_datasets(cfg, "train")["LaMP-1"]
    dev, _ = load_datasets(cfg, "dev")["LaMP-1"]
    twin.behavioral_encoder.encode_texts(sorted(set(train.all_history_texts()) | set(dev.all_history_texts())),
                                         progress=True)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed)).tolist()

    log, started = [], time.time()
    for step in range(steps):
        twin.train()
        start = (step * batch_size) % len(train)
        batch = collate([train[i] for i in order[start:start + batch_size]])
        twin.label_prediction_loss(*twin.summarize(batch), batch).backward()
        optimizer.step()
        optimizer.zero_grad()
        if (step + 1) % 50 == 0:
            twin.eval()
            with torch.no_grad():
                batches = [collate([dev[j] for j in range(i, min(i + 50, len(dev)))]) for i in range(0, len(dev), 50)]
                correct = sum((label_logits(twin, b).argmax(-1) == labels(b)).sum().item() for b in batches)
            log.append({"init": init, "seed": seed, "step": step + 1, "dev_accuracy": correct / len(dev),
                        "seconds": round(time.time() - started, 1)})
            print(log[-1], flush=True)
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--inits", default="aligned,random")
    parser.add_argument("--seeds", default="0,1,2", help="the transition out of chance is abrupt and seed-dependent")
    args = parser.parse_args()
    final = {init: {seed: probe(init, args.steps, args.lr, seed=int(seed))[-1]["dev_accuracy"]
                    for seed in args.seeds.split(",")} for init in args.inits.split(",")}
    print(json.dumps(final))


if __name__ == "__main__":
    main()
