"""One run end to end: folder, model, data, cached history, train or evaluate, results."""

from __future__ import annotations

import json
import time
from pathlib import Path

from accelerate.utils import broadcast_object_list, set_seed

from trainers import config as config_lib
from dataset.atomic import atomic_write_text
from dataset.lamp import LaMPFormatError, write_predictions
from model import count_parameters
from trainers.model_registry import ModelNotFoundError
from trainers import checkpoint as ckpt
from trainers import distributed
from pplug import HistoryDropAugmented
from trainers.builder import build_model, load_datasets, retrieval_augmented
from trainers.trainer import TaskSequentialTrainer, TrainingDivergedError

# Errors that are the user's to fix: train.py prints their message, not a traceback.
USER_ERRORS = (config_lib.ConfigError, ModelNotFoundError, LaMPFormatError, TrainingDivergedError,
               FileNotFoundError, ckpt.CheckpointError)

MODEL_NAMES = {"twin": "Behavioral Twin", "pplug": "PPlug", "none": "frozen LLM, no personalization",
               "rag": "frozen LLM + retrieved profile items", "prompt_tuning": "prompt tuning (no history)",
               "mean": "mean of history embeddings"}
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


def results_table(metrics: dict, controls: dict, model_name: str) -> str:
    """Markdown, one table per task (tasks have different metrics): a row per method."""
    if not metrics:
        return ""
    blocks = []
    for task, values in metrics.items():
        names = list(values)
        rows = [(f"{MODEL_NAMES[model_name]} ({model_name})", values)]
        rows += [(CONTROL_NAMES[variant], control) for variant, control in controls.get(task, {}).items()]
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


def run(cfg) -> dict:
    accelerator = distributed.make_accelerator(cfg.mixed_precision, cfg.grad_accum)
    set_seed(cfg.seed)
    main = accelerator.is_main_process
    run_dir = run_folder(cfg, accelerator)
    setup = distributed.describe(accelerator)
    if main:
        print(distributed.summary(setup), flush=True)
        (run_dir / "predictions").mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", json.loads(config_lib.to_json(cfg)))
        write_json(run_dir / "distributed.json", setup)

    # Data first: a malformed file fails in seconds, not after a large LLM has loaded.
    eval_sets = load_datasets(cfg, cfg.eval_split, cfg.max_eval_examples)
    train_sets = {} if cfg.mode == "eval_only" else load_datasets(cfg, cfg.train_split, cfg.max_train_examples)

    with distributed.whole_model_loading(accelerator):
        model = build_model(cfg)
    trainable, frozen = count_parameters(model)
    if main:
        print(f"run folder: {run_dir}\nparameters: {trainable:,} trainable, {frozen:,} frozen "
              f"({100 * trainable / (trainable + frozen):.2f}% trained)")
    if not model.trainable_parameters():  # none / rag: nothing to train on
        train_sets = {}
    if cfg.model == "rag":
        eval_sets = retrieval_augmented(cfg, eval_sets, model.llm)
    if cfg.model == "pplug" and cfg.pplug_augment:
        train_sets = {name: (HistoryDropAugmented(dataset, cfg.pplug_augment, cfg.seed), golds)
                      for name, (dataset, golds) in train_sets.items()}
    model.to(accelerator.device)

    if model.reads_history:
        # Encode every distinct history text once, before training, shared among the ranks:
        # each encodes its share of what the store lacks, then (after the barrier) every rank
        # opens the others' parts; the second call also encodes anything still missing.
        texts = sorted({t for sets in (train_sets, eval_sets) for dataset, _ in sets.values()
                        for t in dataset.all_history_texts()})
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
    if cfg.controls and model.reads_history:  # the controls take the history away; others never had it
        for task_name, (dataset, golds) in eval_sets.items():
            if golds:
                controls[task_name] = {variant: trainer.evaluator.evaluate(model, dataset, dataset.task, golds, variant)[0]
                                       for variant in CONTROL_NAMES}

    if main:
        for task_name, predictions in trainer.predictions.items():
            write_predictions(run_dir / "predictions" / f"{task_name}_{cfg.eval_split}.json",
                              task_name, predictions)
        write_json(run_dir / "metrics.json", metrics)
        write_json(run_dir / "controls.json", controls)
        write_json(run_dir / "metrics_history.json", trainer.history)
        hidden = [name for name, (_, golds) in eval_sets.items() if not golds]
        table = results_table(metrics, controls, cfg.model) + hidden_golds_note(hidden, cfg.eval_split, run_dir)
        atomic_write_text(run_dir / "results.md", table)
        trainer.tracker.write_curve()  # also for a run that evaluated nothing
        print(f"\n{cfg.eval_split} results:\n{table}\nrun folder: {run_dir}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return metrics
