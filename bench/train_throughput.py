"""Training throughput of Behavioral Twin with and without the history store.

    python -m bench.train_throughput [--device cpu|cuda] [--steps 8] [--warmup 1] [--variants store,...]
        [--section NAME] [--key=value ...]

One training step (forward, backward, gradient clipping, AdamW step) of the run that
`python train.py` makes, with the same settings (by default the embedded default: MiniLM
encoders, SmolLM2-135M in bf16, batch 8, embedded LaMP-1 train split), is timed in four
variants and against the limit, on the same batches, interleaved step by step so that a
change in the machine's load hits all alike (and each goes first in turn):
  store        history rows read from the history store (filled once before timing, reported apart,
               with the queries and options, as a run's fill holds them); a frozen input encoder
               (--tune_layers=0) has kept the batches' token states too, as from a run's second epoch
  store_prefix_recomputed
               as store, but the LLM runs its instruction prefix in every step instead of
               starting from its cached keys and values (model.FrozenLLM); decoder-only LLMs only
  uncached     the frozen encoder encodes every history item of every batch, each item
               padded to the longest of its encoding micro-batch
  seed_style   as uncached, but every item padded (and truncated) to 512 tokens (pad_to_max_length)
  llm_only     the limit: the frozen LLM's forward and backward alone, on the same inputs and
               targets, with leaf soft-prompt tensors of the store's shape [B, Q, D] in place of
               the model's (no encoder, Q-Former, projection, label head nor optimizer step)
Medians over `--steps` timed steps after `--warmup` untimed ones. Also timed: the part of
each step spent in the history encoder, which is all that differs between store, uncached
and seed_style, and in the forward and backward passes of the trained modules and in the
optimizer, which are what the store's step adds to the limit. `limit_ratio` = llm_only
step / store step: the share of the store's step that no method feeding the LLM Q soft
prompts can avoid (1.0 = nothing else costs anything).
`--key=value` settings and `--config FILE` are train.py's (e.g. --llm_dtype=float32 for a
CPU without bf16, --batch_size=4, --mixed_precision=bf16, --encoder=<folder>).
Prints a table, writes saved/bench/train_throughput.json and its section of RESULTS.md
(`--section`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from typing import Callable

import torch

from trainers import config as config_lib
from bench.common import (Clock, add_results_option, autocast, default_config, each_first_in_turn, machine_info,
                          write_report, write_results_section)
from dataset.collate import collate
from dataset.history_store import HistoryStore
from model import BehavioralEncoder, BehavioralTwin
from trainers.builder import load_datasets
from trainers.methods import build_model
from trainers.trainer import epoch_order, make_optimizer

SEED_MAX_LENGTH = 512  # seed_style pads every history item to this many tokens
RECOMPUTES_PREFIX = "store_prefix_recomputed"
LLM_ONLY = "llm_only"
TRAINED_PARTS = ("input_encoder", "qformer", "projection")  # BehavioralTwin's modules with trained weights
LABELS = {"store": "store (rows read from disk)",
          RECOMPUTES_PREFIX: "store, LLM prefix recomputed every step",
          "uncached": "uncached (encoded every step)",
          "seed_style": "seed style (encoded every step, padded to 512)",
          LLM_ONLY: "LLM only (leaf soft prompts; the limit)"}


def history_sources(encoder: BehavioralEncoder, store: HistoryStore,
                    prefix_cache: bool) -> dict[str, BehavioralEncoder]:
    """The history encoder of each variant, all on the same frozen backbone (one object each,
    so that each variant's time in it is its own)."""
    backbone, tok, pooling = encoder.backbone, encoder.tokenizer, encoder.pooling
    sources = {"store": BehavioralEncoder(backbone, tok, pooling, encoder.max_length, store),
               RECOMPUTES_PREFIX: BehavioralEncoder(backbone, tok, pooling, encoder.max_length, store),
               "uncached": BehavioralEncoder(backbone, tok, pooling, encoder.max_length),
               "seed_style": BehavioralEncoder(backbone, tok, pooling, SEED_MAX_LENGTH, pad_to_max_length=True)}
    if not prefix_cache:  # the LLM cannot cache its prefix: that variant would be the store's again
        del sources[RECOMPUTES_PREFIX]
    return sources


def time_in_module(module: torch.nn.Module, clock: Clock) -> list[float]:
    """Seconds spent in each forward call of `module`, appended as calls happen."""
    spent: list[float] = []
    module.register_forward_pre_hook(lambda m, args: spent.append(-clock()))
    module.register_forward_hook(lambda m, args, out: spent.append(spent.pop() + clock()))
    return spent


def time_in_backward(module: torch.nn.Module, clock: Clock) -> Callable[[], float]:
    """A call that gives the seconds the last backward pass spent in `module` (0 for a module
    that trains nothing), to make after `backward()`. A pass is timed from the gradient of the
    module's output arriving to the last gradient of its trained weights: autograd runs the
    modules' backward in the reverse order of their forward, one after the other, so that
    span is the module's own."""
    marks: dict[str, float] = {}
    params = [p for p in module.parameters() if p.requires_grad]

    def on_output(m, args, out) -> None:
        states = out if torch.is_tensor(out) else out[0]
        if params and states.requires_grad:
            states.register_hook(lambda grad: marks.__setitem__("start", clock()))

    module.register_forward_hook(on_output)
    for p in params:
        p.register_post_accumulate_grad_hook(lambda p: marks.__setitem__("end", clock()))

    def last_pass() -> float:
        seconds = marks["end"] - marks["start"] if {"start", "end"} <= marks.keys() else 0.0
        marks.clear()
        return seconds

    return last_pass


def leaf_prompts(twin: BehavioralTwin, batches: list) -> list[torch.Tensor]:
    """Per batch, [B, Q, D] float32 leaves at the LLM's embedding scale: what llm_only feeds the
    LLM in place of the projection's output (same shape and dtype)."""
    generator = torch.Generator().manual_seed(0)
    shape = (twin.qformer.num_queries, twin.llm.hidden_size)
    return [(torch.randn(len(b), *shape, generator=generator) * twin.llm.embedding_rms).to(twin.llm.device)
            .requires_grad_() for b in batches]


def measure(twin: BehavioralTwin, sources: dict[str, BehavioralEncoder], batches: list, warmup: int,
            cfg: config_lib.TrainConfig) -> dict:
    """-> {variant: {"step_s": [...], "history_s": [...], "first_loss": float}}; timed steps only.
    Variants: one per history source, and llm_only (no history encoder: history_s 0)."""
    clock = Clock(twin.llm.device)
    optimizer = make_optimizer(twin, cfg)  # the trainer's AdamW and parameter groups
    prefix_cache = twin.llm.cache_prefix
    results = {name: {"step_s": [], "history_s": time_in_module(source, clock)} for name, source in sources.items()}
    results[LLM_ONLY] = {"step_s": [], "history_s": []}
    prompts = leaf_prompts(twin, batches)
    # What the twin adds to the LLM's own work, timed inside its steps: the forward and backward
    # passes of its trainable modules and the optimizer (gradient clipping, AdamW step).
    forward = {name: time_in_module(getattr(twin, name), clock) for name in TRAINED_PARTS}
    backward = {name: time_in_backward(getattr(twin, name), clock) for name in TRAINED_PARTS}

    def switch_to(name: str) -> None:
        twin.behavioral_encoder = sources[name]
        twin.llm.cache_prefix = prefix_cache and name != RECOMPUTES_PREFIX

    twin.eval()  # same numbers from each source, dropout aside: the first batch's loss, for the record
    for name in sources:
        switch_to(name)
        with torch.no_grad(), autocast(cfg, twin.llm.device):
            results[name]["first_loss"] = twin(batches[0]).item()
        results[name]["history_s"].clear()
    with torch.no_grad(), autocast(cfg, twin.llm.device):
        results[LLM_ONLY]["first_loss"] = twin.llm.loss(prompts[0], batches[0].inputs, batches[0].targets).item()
    for spent in forward.values():
        spent.clear()

    twin.train()
    names = [*sources, LLM_ONLY]
    for step, batch in enumerate(batches):
        for name in each_first_in_turn(names, step):
            if name == LLM_ONLY:
                twin.llm.cache_prefix = prefix_cache
                start = clock()
                with autocast(cfg, twin.llm.device):
                    loss = twin.llm.loss(prompts[step], batch.inputs, batch.targets)
                loss.backward()
                prompts[step].grad = None
                results[name]["history_s"].append(0.0)
            else:
                switch_to(name)
                start = clock()
                with autocast(cfg, twin.llm.device):
                    loss = twin(batch)
                loss.backward()
                for part, last_pass in backward.items():
                    results[name].setdefault(f"{part}_backward_s", []).append(last_pass())
                optimizer_start = clock()
                torch.nn.utils.clip_grad_norm_(twin.trainable_parameters().values(), cfg.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                results[name].setdefault("optimizer_s", []).append(clock() - optimizer_start)
                for part, spent in forward.items():
                    results[name].setdefault(f"{part}_forward_s", []).append(spent.pop() if spent else 0.0)
            elapsed = clock() - start
            if step < warmup:
                for key in results[name]:
                    if key.endswith("_s") and key != "step_s":
                        results[name][key].pop()
            else:
                results[name]["step_s"].append(elapsed)
    twin.llm.cache_prefix = prefix_cache
    return results


def summarize(results: dict, batch_size: int) -> dict:
    summary = {}
    for name, r in results.items():
        step = statistics.median(r["step_s"])
        summary[name] = {"median_step_s": step, "examples_per_s": batch_size / step,
                         "median_history_s": statistics.median(r["history_s"]),
                         "median_rest_s": statistics.median(s - h for s, h in zip(r["step_s"], r["history_s"])),
                         "first_batch_loss": r["first_loss"], "step_s": r["step_s"], "history_s": r["history_s"],
                         **{f"median_{key}": statistics.median(values) for key, values in r.items()
                            if key.endswith("_s") and key not in ("step_s", "history_s")}}
    return summary


def beyond_the_limit(summary: dict) -> str:
    """Where the store step's time goes beyond the LLM-only step (medians, so the parts need
    not add up exactly); the rest is the reading of the history rows, the label heads and
    what joins the parts."""
    store, limit = summary["store"], summary[LLM_ONLY]["median_step_s"]
    extra = store["median_step_s"] - limit
    named = {"optimizer (clipping, AdamW step)": store["median_optimizer_s"],
             **{f"{part} {way}": store[f"median_{part}_{way}_s"] for part in TRAINED_PARTS
                for way in ("forward", "backward")}}
    rows = [f"| {label} | {seconds:.3f} |" for label, seconds in named.items()]
    rows.append(f"| rest (history rows, label heads, what joins the parts) | {extra - sum(named.values()):.3f} |")
    return "\n".join([f"| store step beyond llm_only ({extra:.3f} s) | s |", "|---|---|", *rows])


def table(summary: dict) -> str:
    store = summary["store"]["median_step_s"]
    lines = ["| history embeddings | step (s) | in history encoder (s) | rest of step (s) | examples/s "
             "| step time / store's |", "|---|---|---|---|---|---|"]
    for name, s in summary.items():
        cells = [LABELS[name], f"{s['median_step_s']:.3f}", f"{s['median_history_s']:.3f}",
                 f"{s['median_rest_s']:.3f}", f"{s['examples_per_s']:.2f}", f"{s['median_step_s'] / store:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant (fewer are noisy on a shared CPU)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    parser.add_argument("--variants", default="", help="comma-separated history sources to time (store is always "
                        "timed, and llm_only); default: all. E.g. --variants=store --results='': the store against the "
                        "limit alone, RESULTS.md's full table left as it is")
    parser.add_argument("--out", default="saved/bench/train_throughput.json")
    parser.add_argument("--section", default="train_throughput",
                        help="the RESULTS.md section to write, e.g. train_throughput-limit for a --variants=store run "
                             "(which would otherwise replace the full table)")
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    wanted = set(args.variants.split(",")) - {""}
    unknown = wanted - set(LABELS)
    if unknown:  # before any model loads
        parser.error(f"--variants: no variant {', '.join(sorted(unknown))}; choose from {', '.join(LABELS)}")
    cfg = default_config(settings)
    device = torch.device(args.device)

    twin = build_model(cfg).to(device)
    train, _ = load_datasets(cfg, cfg.train_split)[cfg.tasks[0]]
    order = epoch_order(len(train), cfg.seed, phase=0, epoch=0)
    n = cfg.batch_size
    batches = [collate([train[i] for i in order[k * n:(k + 1) * n]]) for k in range(args.warmup + args.steps)]

    with tempfile.TemporaryDirectory() as folder:
        sources = history_sources(twin.behavioral_encoder, HistoryStore(folder), twin.llm.cache_prefix)
        sources = {name: source for name, source in sources.items() if not wanted or name in wanted | {"store"}}
        clock = Clock(device)
        texts = train.encoder_texts(order[:n * len(batches)])  # what a run's fill holds for these batches
        start = clock()
        sources["store"].precompute(texts, progress=True)
        fill = {"texts": len(texts), "seconds": clock() - start}
        if twin.input_encoder.keeps_states:  # a frozen input encoder's states, as from a run's second epoch on
            with torch.no_grad():
                for batch in batches:
                    twin.input_encoder(batch.inputs)
        fill["input_states_kept"] = len(twin.input_encoder.cached_states)
        summary = summarize(measure(twin, sources, batches, args.warmup, cfg), n)

    def against_store(name: str) -> float | None:  # that variant's step / the store's; None when not timed
        return summary[name]["median_step_s"] / summary["store"]["median_step_s"] if name in summary else None

    report = {
        "what": "Behavioral Twin training step (forward, backward, AdamW), history embeddings from each source",
        "encoder": cfg.encoder, "llm": cfg.llm, "task": cfg.tasks[0], "data_dir": cfg.data_dir,
        "device": str(device), "llm_dtype": cfg.llm_dtype, "mixed_precision": cfg.mixed_precision,
        "batch_size": n, "steps": args.steps, "warmup": args.warmup,
        "machine": machine_info(device),
        "speedup_store_vs_uncached": against_store("uncached"),
        "speedup_store_vs_seed_style": against_store("seed_style"),
        "speedup_prefix_cache": against_store(RECOMPUTES_PREFIX),
        "limit_ratio": against_store(LLM_ONLY),
        "history_items_per_batch": statistics.mean(sum(map(len, b.history)) for b in batches),
        "distinct_history_items_per_batch": statistics.mean(len({t for h in b.history for t in h}) for b in batches),
        "store_fill": fill, "variants": summary, "argv": sys.argv[1:] if argv is None else argv,
    }
    machine = report["machine"]
    setting = (f"{cfg.encoder} + {cfg.llm}, {cfg.tasks[0]} ({cfg.data_dir}), batch {n}, LLM in {cfg.llm_dtype}, "
               f"mixed precision {cfg.mixed_precision or 'no'}, on "
               f"{machine['gpu'] or machine['cpu']} ({machine['torch_threads']} threads, torch {machine['torch']}); "
               f"medians of {args.steps} steps after {args.warmup} warm-up, same batches, interleaved")
    nan = float("nan")
    ratios = (f"limit_ratio {report['limit_ratio']:.2f}, "
              f"speedup_store_vs_uncached {report['speedup_store_vs_uncached'] or nan:.2f}, "
              f"speedup_store_vs_seed_style {report['speedup_store_vs_seed_style'] or nan:.2f}, "
              f"speedup_prefix_cache {report['speedup_prefix_cache'] or nan:.2f}; "
              f"{report['history_items_per_batch']:.0f} history items per batch; store fill (once per encoder): "
              f"{fill['texts']} texts in {fill['seconds']:.1f} s")
    print(f"\n{setting}\n\n{table(summary)}\n\n{beyond_the_limit(summary)}\n\n{ratios}")
    write_report(report, args.out)
    title = "Training step: history sources and the LLM-only limit"
    write_results_section(args.section, title if args.section == "train_throughput" else f"{title}, {args.section}",
                          f"{setting}.\n\n{table(summary)}\n\n{beyond_the_limit(summary)}\n\n{ratios}.",
                          device=device, path=args.results)
    return report


if __name__ == "__main__":
    main()
