"""How far LaMP's official ROUGE (bootstrap "mid") lies from ours (the exact mean).

    python -m bench.scorer_gap [--repeats 20] [--sizes 100,1498]

LaMP's `eval/evaluation.py` scores LaMP-4..7 with `evaluate.load("rouge")`, which feeds
rouge_score's per-example scores to a `BootstrapAggregator` (1000 resamples, numpy's
global, unseeded RNG) and reports the median of the resampled means ("mid"); our
trainers.metrics.rouge_metrics reports the exact mean. `evaluate` loads its metric script
from the hub, so this replays what that script runs, step for step, with rouge_score
itself: the same scorer (all four default ROUGE types, no stemmer), `score_multi` over
the one-reference lists LaMP passes, and the aggregator's "mid" F-measure.

Predictions are real-looking LaMP-7 answers on the embedded LaMP-7 dev split (users'
tweets): the question's tweet copied (the history-blind rule), and that copy with its
last third cut. Each size is a dev split of that many users; each official score is
drawn `repeats` times (seeds 0, 1, ...), as reruns of LaMP's scorer would draw it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import numpy as np
from rouge_score import rouge_scorer, scoring

from bench.common import add_results_option, write_results_section
from dataset.embedded.lamp7 import blind_prediction, generate_embedded_lamp7
from dataset.lamp import load_split
from dataset.tasks import get_task
from trainers.metrics import rouge_metrics

# evaluate's rouge defaults; the types besides rouge1 and rougeL only cost time, but
# each takes its own resamples from the shared RNG, so they change which ones rouge1 gets.
EVALUATE_ROUGE_TYPES = ["rouge1", "rouge2", "rougeL", "rougeLsum"]


def cut_copy(input_text: str) -> str:
    """The question's tweet with its last third of words cut: a weaker, shorter answer."""
    words = blind_prediction(input_text).split()
    return " ".join(words[:max(1, 2 * len(words) // 3)])


PREDICTORS = {"copy the tweet": blind_prediction, "copy, last third cut": cut_copy}


def official_rouge(predictions: list[str], golds: list[str], seed: int) -> dict[str, float]:
    """LaMP's ROUGE-1 and ROUGE-L: evaluate's rouge with its bootstrap aggregation."""
    np.random.seed(seed)  # the aggregator draws from numpy's global RNG
    scorer = rouge_scorer.RougeScorer(rouge_types=EVALUATE_ROUGE_TYPES, use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    # LaMP's postprocess_text_generation: both stripped, each gold wrapped as a one-item list.
    for prediction, gold in zip(predictions, golds):
        aggregator.add_scores(scorer.score_multi([gold.strip()], prediction.strip()))
    result = aggregator.aggregate()
    return {"rouge-1": result["rouge1"].mid.fmeasure, "rouge-L": result["rougeL"].mid.fmeasure}


def measure(sizes: list[int], repeats: int) -> list[dict]:
    task = get_task("LaMP-7")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            root = generate_embedded_lamp7(f"{tmp}/{size}", seed=0, n_train=1, n_dev=size, n_test=1)
            examples = load_split(root, "LaMP-7", "dev", task.profile_fields)
            golds = [example.output for example in examples]
            for name, predict in PREDICTORS.items():
                predictions = [predict(example.input) for example in examples]
                exact = rouge_metrics(predictions, golds)
                draws = [official_rouge(predictions, golds, seed) for seed in range(repeats)]
                row = {"predictor": name, "n": size}
                for metric in ("rouge-1", "rouge-L"):
                    gaps = [draw[metric] - exact[metric] for draw in draws]
                    row[metric] = {"exact": exact[metric], "official_mean": statistics.fmean(d[metric] for d in draws),
                                   "gap_mean": statistics.fmean(gaps), "gap_sd": statistics.stdev(gaps),
                                   "gap_max_abs": max(abs(g) for g in gaps)}
                rows.append(row)
                print(row, flush=True)
    return rows


def table(rows: list[dict], repeats: int) -> str:
    lines = ["Official = LaMP's scorer (evaluate's rouge: bootstrap \"mid\" of 1000 resamples), drawn "
             f"{repeats} times; ours = the exact mean (trainers/metrics.py). Gap = official - ours, "
             "mean ± sd over the draws, and the largest |gap| seen.", "",
             "| predictions | n | metric | ours (exact mean) | official (mean of draws) | gap | max abs gap |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        for metric in ("rouge-1", "rouge-L"):
            r = row[metric]
            lines.append(f"| {row['predictor']} | {row['n']} | {metric} | {r['exact']:.4f} | {r['official_mean']:.4f} "
                         f"| {r['gap_mean']:+.5f} ± {r['gap_sd']:.5f} | {r['gap_max_abs']:.5f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scorer_gap", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="draws of the official (random) score")
    parser.add_argument("--sizes", default="100,1498", help="dev split sizes; 1498 is LaMP-7's time-based dev")
    add_results_option(parser)
    args = parser.parse_args()
    rows = measure([int(size) for size in args.sizes.split(",")], args.repeats)
    write_results_section("scorer-gap", "LaMP's official ROUGE against ours (bootstrap mid vs exact mean)",
                          table(rows, args.repeats), path=args.results)


if __name__ == "__main__":
    main()
