"""ModelEvaluator: generate on a split, gather across processes, score with LaMP's metrics.

Also runs the history-blind controls that make a personalization claim checkable:
  no_personalization  the frozen LLM on the bare input (no soft prompts at all);
  other_history       the trained model, each example given another user's history.
If the model truly reads the history, both sit near chance on a history-dependent task.
"""

from __future__ import annotations

import dataclasses

from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from dataset.collate import collate
from trainers.metrics import task_metrics

VARIANTS = ("model", "no_personalization", "other_history")


def rotate_histories(batch, everything):
    """Give example i the history of the next example of `everything` (the whole dataset
    collated: another user), with that user's numeric signals and item answers when the
    batch carries them."""
    position = {example_id: i for i, example_id in enumerate(everything.ids)}
    donors = [(position[i] + 1) % len(everything.ids) for i in batch.ids]

    def take(rows):
        return None if rows is None else [rows[d] for d in donors]
    return dataclasses.replace(batch, history=take(everything.history),
                               history_numbers=take(everything.history_numbers),
                               history_outputs=take(everything.history_outputs))


class ModelEvaluator:
    def __init__(self, accelerator, batch_size: int, num_beams: int = 1):
        self.accelerator = accelerator
        self.batch_size = batch_size
        self.num_beams = num_beams

    def predict(self, model, dataset, task, variant: str = "model") -> dict[str, str]:
        """-> {example id: prediction} over the whole dataset, gathered from every process."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        model = self.accelerator.unwrap_model(model)
        was_training = model.training
        model.eval()
        loader = self.accelerator.prepare(DataLoader(dataset, batch_size=self.batch_size, collate_fn=collate))
        everything = collate([dataset[i] for i in range(len(dataset))]) if variant == "other_history" else None
        predictions: dict[str, str] = {}
        bar = tqdm(loader, desc=f"eval {task.name} ({variant})", disable=not self.accelerator.is_main_process,
                   leave=False)
        for batch in bar:
            if variant == "no_personalization":
                outputs = model.llm.answer(None, batch.inputs, batch.choices, task.max_new_tokens, self.num_beams)
            else:
                if variant == "other_history":
                    batch = rotate_histories(batch, everything)
                outputs = model.generate(batch, task.max_new_tokens, self.num_beams)
            # gather_for_metrics drops the samples accelerate repeats to even out the last batch.
            for example_id, output in self.accelerator.gather_for_metrics(list(zip(batch.ids, outputs)),
                                                                          use_gather_object=True):
                predictions[example_id] = output
        model.train(was_training)
        return predictions

    def evaluate(self, model, dataset, task, golds: dict[str, str], variant: str = "model"):
        """-> (metrics, predictions). Without golds (hidden, as LaMP's test outputs are) there
        is nothing to score: the metrics are {} and the predictions are what to submit."""
        predictions = self.predict(model, dataset, task, variant)
        if not golds:
            return {}, predictions
        missing = sorted(set(golds) - set(predictions))
        if missing:
            raise RuntimeError(f"{task.name}: {len(missing)} examples got no prediction, e.g. {missing[:3]}")
        ids = sorted(golds)
        metrics = task_metrics(task, [predictions[i] for i in ids], [golds[i] for i in ids])
        return metrics, predictions
