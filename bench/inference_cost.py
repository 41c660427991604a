"""What answering one question costs: Behavioral Twin against the bare LLM, PPlug and RAG.

    python -m bench.inference_cost [--device cpu|cuda] [--examples 16] [--repeats 3] [--key=value ...]

On the same dev examples of the run `python train.py` makes with the same settings (by
default the embedded default: LaMP-1, MiniLM, SmolLM2-135M in bf16), each method answers
one question at a time (batch 1, greedy, the task's token budget), timed end to end:
  none   the frozen LLM on the bare question
  twin   history rows from the store (filled before timing, as a deployed model would
         have them), input encoder, Q-Former, projection, LLM with Q soft prompts
  pplug  history rows from the store, input encoder, aggregator, LLM with 2 soft prompts
  rag    BM25 over the user's profile, LaMP's prompt with the top rag_k (4) items, LLM
Weights are as initialised: latency does not depend on what they learned. The four
methods take turns example by example (each going first in turn), so a change in the
machine's load hits all of them alike: each answers an example once untimed, then
`--repeats` times, interleaved. The table gives the median over examples of each
example's median, the LLM input length in tokens and the LLM passes per answer.
`--key=value` settings and `--config FILE` are train.py's (e.g. --tasks=LaMP-7 for the
embedded generation task, --llm_dtype=float32). Writes saved/bench/inference_cost-<task>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys

import torch

from bench.common import (Clock, add_results_option, default_config, each_first_in_turn, machine_info, write_report,
                          write_results_section)
from dataset.collate import collate
from trainers.builder import load_datasets, rag_prompter
from trainers.methods import build_model

METHODS = ("none", "twin", "pplug", "rag")


def answer_fn(method: str, model, cfg, dataset, max_new_tokens: int):
    """-> (index -> answer callable, index -> LLM input tokens) for one method."""
    llm = model.llm
    if method == "rag":
        prompter = rag_prompter(cfg, llm.tokenizer)
        answer = lambda i: llm.generate(None, [prompter(dataset.task, dataset.examples[i])], max_new_tokens)  # noqa
        tokens = lambda i: llm.input_length(0, prompter(dataset.task, dataset.examples[i]))  # noqa: E731
        return answer, tokens
    prompts = {"none": 0, "twin": cfg.num_queries, "pplug": 2}[method]
    answer = lambda i: model.generate(collate([dataset[i]]), max_new_tokens)  # noqa: E731
    return answer, lambda i: llm.input_length(prompts, dataset[i].input)


def measure(answers: dict, indices: list[int], repeats: int, clock: Clock) -> dict[str, list[float]]:
    """answers: method -> (index -> answer callable). -> method -> per-example median latency (s)."""
    names = list(answers)
    medians = {name: [] for name in names}
    for n, i in enumerate(indices):
        times = {name: [] for name in names}
        for timed in [False] + [True] * repeats:  # one untimed answer each, then the timed ones
            for name in each_first_in_turn(names, n):
                start = clock()
                answers[name](i)
                if timed:
                    times[name].append(clock() - start)
        for name in names:
            medians[name].append(statistics.median(times[name]))
    return medians


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--examples", type=int, default=16, help="dev examples, the first N")
    parser.add_argument("--repeats", type=int, default=3, help="timed answers per example")
    parser.add_argument("--out", default="", help="default: saved/bench/inference_cost-<task>.json")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    cfg = dataclasses.replace(default_config(settings), answer="generate")  # decoding is what is timed
    device = torch.device(args.device)
    clock = Clock(device)
    dataset, _ = load_datasets(cfg, cfg.eval_split, args.examples)[cfg.tasks[0]]
    indices = list(range(len(dataset)))

    answers, tokens, passes = {}, {}, {}
    for method in METHODS:
        model = build_model(dataclasses.replace(cfg, model=method)).to(device).eval()
        if model.reads_history:
            model.behavioral_encoder.precompute(dataset.encoder_texts())
        answers[method], tokens[method] = answer_fn(method, model, cfg, dataset, dataset.task.max_new_tokens)
        # Untrained weights answer at whatever length they do, up to the budget, and each new
        # token after the first costs one more pass through the LLM: passes are counted too.
        passes[method] = []
        model.llm.model.register_forward_hook(lambda *_, counted=passes[method]: counted.append(1))
    with torch.no_grad():
        latencies = measure(answers, indices, args.repeats, clock)
    results = {method: {"median_latency_s": statistics.median(latencies[method]), "latency_s": latencies[method],
                        "median_llm_input_tokens": statistics.median(tokens[method](i) for i in indices),
                        "llm_passes_per_answer": len(passes[method]) / (len(indices) * (args.repeats + 1))}
               for method in METHODS}

    def ratio(a: str, b: str) -> float:
        return results[a]["median_latency_s"] / results[b]["median_latency_s"]

    report = {"what": "per-example answer latency, batch 1, greedy", "encoder": cfg.encoder, "llm": cfg.llm,
              "task": cfg.tasks[0], "data_dir": cfg.data_dir, "device": str(device), "llm_dtype": cfg.llm_dtype,
              "examples": len(indices), "repeats": args.repeats, "rag_k": cfg.rag_k, "machine": machine_info(device),
              "latency_ratio_twin_vs_none": ratio("twin", "none"), "latency_ratio_twin_vs_rag": ratio("twin", "rag"),
              "methods": results, "argv": sys.argv[1:] if argv is None else argv}
    machine = report["machine"]
    setting = (f"{cfg.encoder} + {cfg.llm}, {cfg.tasks[0]} ({cfg.data_dir}), LLM in {cfg.llm_dtype}; medians over "
               f"{len(indices)} dev examples of the per-example median of {args.repeats} answers, the methods "
               "interleaved")
    lines = ["| method | latency per example (s) | vs none | LLM input tokens | LLM passes per answer |",
             "|---|---|---|---|---|"]
    lines += [f"| {method} | {r['median_latency_s']:.3f} | {ratio(method, 'none'):.2f}x | "
              f"{r['median_llm_input_tokens']:.0f} | {r['llm_passes_per_answer']:.2f} |"
              for method, r in results.items()]
    ratios = (f"latency_ratio_twin_vs_none {report['latency_ratio_twin_vs_none']:.2f}, "
              f"latency_ratio_twin_vs_rag {report['latency_ratio_twin_vs_rag']:.2f}")
    print(f"\n{setting} (on {machine['gpu'] or machine['cpu']}, {machine['torch_threads']} threads, "
          f"torch {machine['torch']})\n\n" + "\n".join(lines) + f"\n\n{ratios}")
    write_report(report, args.out or f"saved/bench/inference_cost-{cfg.tasks[0]}.json")
    write_results_section(f"inference_cost-{cfg.tasks[0]}", f"Answer latency per method ({cfg.tasks[0]})",
                          f"{setting}.\n\n" + "\n".join(lines) + f"\n\n{ratios}.", device=device, path=args.results)
    return report


if __name__ == "__main__":
    main()
