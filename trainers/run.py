"""One run end to end: folder, model, data, cached history, train or evaluate, results."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from accelerate.utils import broadcast_object_list, set_seed

from trainers import config as config_lib
from dataset.atomic import atomic_write_text
from dataset.collate import LaMPDataset
from dataset.lamp import LaMPFormatError, write_predictions
from model import count_parameters
from trainers.model_registry import ModelNotFoundError
from trainers import checkpoint as ckpt
from trainers import distributed
from trainers.builder import load_datasets
from trainers.methods import get_method
from trainers.trainer import TaskSequentialTrainer, TrainingDivergedError

# Errors that are the user's to fix: train.py prints their message, not a traceback.
USER_ERRORS = (config_lib.ConfigError, ModelNotFoundError, LaMPFormatError, TrainingDivergedError,
               FileNotFoundError, ckpt.CheckpointError)

CONTROL_NAMES = {"no_personalization": "frozen LLM, bare input (no history)",
                 "other_history": "trained model, another user's history"}


def run_folder(cfg, accelerator) -> Path:
    """Resuming continues the resumed run's folder; otherwise out_dir/run_name (or a timestamp)."""
    if cfg.resume_from and cfg.mode != "eval_only":
        checkpoint = ckpt.find_checkpoint(cfg.resume_from)
        return checkpoint.parents[1]
    name = cfg.run_name or f"{cfg.model}{'-eval' if cfg.mode == 'eval_only' else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    name = broadcast_object_list([name])[0]  # every rank must agree on the timestamp
    return Path(cfg.out_dir) / name


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))


# The untrained floors every run is shown beside (`references`).
REFERENCE_RULES = ("profile_rule", "input_rule")


def results_table(metrics: dict, controls: dict, model_name: str, references: dict | None = None) -> str:
    """Markdown, one table per task (tasks have different metrics): a row per method, control and rule."""
    if not metrics:
        return ""
    blocks = []
    for task, values in metrics.items():
        names = list(values)
        rows = [(f"{get_method(model_name).display} ({model_name})", values)]
        rows += [(CONTROL_NAMES[variant], control) for variant, control in controls.get(task, {}).items()]
        rows += [(f"{get_method(rule).display} ({rule})", scores)
                 for rule, scores in (references or {}).get(task, {}).items()]
        lines = [f"| {task} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(f"{row[m]:.4f}" for m in names) + " |" for label, row in rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def hidden_golds_note(tasks: list[str], split: str, run_dir: Path) -> str:
    """What a split without golds gives (LaMP hides its test outputs): predictions, no metrics."""
    lines = [f"{task}: the {split} split has no golds (LaMP keeps the test outputs hidden), so no metrics "
             f"can be computed. Its predictions are in {run_dir / 'predictions' / f'{task}_{split}.json'}, "
             f"in LaMP's official format, ready to submit." for task in tasks]
    return "".join(f"\n{line}\n" for line in lines)


def rule_references(cfg, train_sets: dict, eval_sets: dict, evaluator, accelerator) -> dict:
    """task -> {rule: metrics}: the untrained rules on the run's own evaluation examples, each
    as its own run would build and read them (the task's rendering of the history items)."""
    out: dict = {}
    examples = {name: (LaMPDataset(dataset.examples, dataset.task, cfg.max_history), golds)
                for name, (dataset, golds) in eval_sets.items()}
    for name in REFERENCE_RULES:
        if name == cfg.model:
            continue
        method, rule_cfg = get_method(name), dataclasses.replace(cfg, model=name)
        with distributed.whole_model_loading(accelerator):  # under ZeRO-3 too, its encoder loads whole
            rule = method.build(rule_cfg)
        rule.to(accelerator.device)
        _, rule_sets = method.prepare(rule_cfg, rule, train_sets, examples)
        for task_name, (dataset, golds) in rule_sets.items():
            if golds:
                out.setdefault(task_name, {})[name] = evaluator.evaluate(rule, dataset, dataset.task, golds)[0]
    return out


def run(cfg) -> dict:
    accelerator = distributed.make_accelerator(cfg.mixed_precision, cfg.grad_accum)
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    run_dir = run_folder(cfg, accelerator)
    setup = distributed.describe(accelerator)
    if main:
        print(distributed.summary(setup), flush=True)
        warning = distributed.emulated_bf16_warning(cfg.llm_dtype, setup, distributed.read_cpuinfo())
        if warning:
            print(warning, file=sys.stderr, flush=True)
        (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", json.loads(config_lib.to_json(cfg)))
        write_json(run_dir / "distributed.json", setup)

    # Data first: a malformed file fails in seconds, not after a large LLM has loaded.
    eval_sets = load_datasets(cfg, cfg.eval_split, cfg.max_eval_examples)
    train_sets = {} if cfg.mode == "eval_only" else load_datasets(cfg, cfg.train_split, cfg.max_train_examples)

    method = get_method(cfg.model)
    with distributed.whole_model_loading(accelerator):
        model = method.build(cfg)
    trainable, frozen = count_parameters(model)
    if main:
        print(f"run folder: {run_dir}\nparameters: {trainable:,} trainable, {frozen:,} frozen "
              f"({100 * trainable / max(1, trainable + frozen):.2f}% trained)")
    if method.trains != bool(trainable):
        raise RuntimeError(f"trainers/methods.py says {cfg.model} {'trains' if method.trains else 'trains nothing'}, "
                           f"but its model has {trainable:,} trainable parameters; fix its registry entry")
    loaded = train_sets, eval_sets  # as read: the reference rules take them so
    train_sets, eval_sets = method.prepare(cfg, model, train_sets, eval_sets)
    if not method.trains:  # nothing to fit: the trainer only evaluates
        train_sets = {}
    model.to(accelerator.device)

    if model.reads_history:
        # Encode every distinct history text once, before training, shared among the ranks:
        # each encodes its share of what the store lacks, then (after the barrier) every rank
        # opens the others' parts; the second call also encodes anything still missing.
        texts = sorted({t for sets in (train_sets, eval_sets) for dataset, _ in sets.values()
                        for t in dataset.encoder_texts()})
        encoder = model.behavioral_encoder
        encoder.precompute(texts, progress=main, rank=accelerator.process_index, world=accelerator.num_processes)
        accelerator.wait_for_everyone()
        encoder.precompute(texts, progress=main)

    trainer = TaskSequentialTrainer(cfg, model, accelerator, run_dir, train_sets, eval_sets)
    if cfg.mode == "eval_only":
        checkpoint = ckpt.find_checkpoint(cfg.resume_from)
        ckpt.check_compatible(checkpoint, cfg)
        ckpt.load_weights(checkpoint, model)
        trainer.evaluate(list(eval_sets), phase=0, epoch=-1)
        metrics = trainer.final_metrics()
    else:
        metrics = trainer.fit(Path(cfg.resume_from) if cfg.resume_from else None)

    controls: dict = {}
    # The controls take the history away (others never had it); the frozen-LLM one needs an LLM.
    variants = [v for v in CONTROL_NAMES if v != "no_personalization" or model.llm is not None]
    if cfg.controls and model.reads_history:
        for task_name, (dataset, golds) in eval_sets.items():
            if golds:
                controls[task_name] = {variant: trainer.evaluator.evaluate(model, dataset, dataset.task, golds, variant)[0]
                                       for variant in variants}

    references = {}
    if cfg.references and cfg.mode != "eval_only":
        references = rule_references(cfg, *loaded, trainer.evaluator, accelerator)

    if main:
        for task_name, predictions in trainer.predictions.items():
            write_predictions(run_dir / "predictions" / f"{task_name}_{cfg.eval_split}.json",
                              task_name, predictions)
        write_json(run_dir / "metrics.json", metrics)
        write_json(run_dir / "controls.json", controls)
        write_json(run_dir / "metrics_history.json", trainer.history)
        write_json(run_dir / "references.json", references)
        hidden = [name for name, (_, golds) in eval_sets.items() if not golds]
        table = results_table(metrics, controls, cfg.model, references) + hidden_golds_note(hidden, cfg.eval_split,
                                                                                            run_dir)
        atomic_write_text(run_dir / "results.md", table)
        trainer.tracker.write_curve()  # also for a run that evaluated nothing
        print(f"\n{cfg.eval_split} results:\n{table}\nrun folder: {run_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics
