"""TaskSequentialTrainer: trains a model (Behavioral Twin or a baseline) task by task or all mixed.

A run is a list of phases: one per task in `sequential` mode, one over every task in
`joint` mode. Each phase has its own AdamW and linear warm-up/decay schedule. The
position (phase, epoch, optimizer step within the epoch) is saved with every
checkpoint, and an epoch's data order depends only on (seed, phase, epoch), so a
resumed run skips exactly the batches it had already seen and continues bit for bit.

Under DeepSpeed the model, its optimizer and a dataloader are prepared together into one
engine, which then accumulates, clips and steps; sequential mode's later phases restart
that engine's AdamW state rather than build another engine. Checkpoints hold the same
files either way, gathered from the engine (trainers.distributed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import torch
from accelerate.utils import DistributedType, gather_object
from torch.utils.data import ConcatDataset, DataLoader, Subset
from tqdm.auto import tqdm

from dataset.collate import collate, group_by_length, llm_lengths
from trainers import checkpoint as ckpt
from trainers import distributed
from trainers.evaluator import ModelEvaluator
from trainers.tracking import RunTracker


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite."""


NO_DECAY = {"query_tokens", "base", "prompts"}  # parameter names of learned vectors


def make_optimizer(model, cfg) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on norms, biases, queries and
    soft-prompt vectors (they are embeddings, not weights to shrink). Fused (one kernel over
    all parameters) where torch has it for their device and dtype: the same update, without
    a pass over memory per tensor and operation (timed by bench/train_throughput.py)."""
    decay, no_decay = [], []
    for name, p in model.trainable_parameters().items():
        (no_decay if p.ndim < 2 or name.split(".")[-1] in NO_DECAY else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    params = decay + no_decay
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.bfloat16,
                                 torch.float16) for p in params) and len({p.device for p in params}) == 1
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, fused=fused)


def linear_warmup_decay(optimizer, total_steps: int, warmup_ratio: float):
    warmup = max(1, int(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def epoch_order(n: int, seed: int, phase: int, epoch: int, lengths: list[int] | None = None,
                batch_size: int = 1) -> list[int]:
    """The shuffled example order of one epoch; independent of every other RNG. With
    `lengths`, batches of `batch_size` hold examples of similar length."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + phase * 1_009 + epoch)
    order = torch.randperm(n, generator=generator).tolist()
    return order if lengths is None else group_by_length(order, lengths, batch_size, generator)


class TaskSequentialTrainer:
    def __init__(self, cfg, model, accelerator, run_dir: Path, train_sets: dict, eval_sets: dict):
        """train_sets / eval_sets: task name -> (LaMPDataset, {id: gold})."""
        self.cfg = cfg
        self.accelerator = accelerator
        self.raw_model = model
        # DeepSpeed builds its engine from the model and its optimizer together (_phase_optimizer).
        # A run that trains nothing (mode=eval_only, or a model without trainable weights)
        # builds none and evaluates the model replicated on every rank.
        self.deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
        self.engine = None
        self.model = model if self.deepspeed else accelerator.prepare(model)
        self.run_dir = Path(run_dir)
        self.train_sets = train_sets
        self.eval_sets = eval_sets
        self.evaluator = ModelEvaluator(accelerator, cfg.eval_batch_size, cfg.num_beams)
        self.history: list[dict] = []  # one entry per evaluation: phase, epoch, task, metrics
        self.predictions: dict[str, dict[str, str]] = {}  # task -> {id: output}, latest evaluation
        self.tracker = RunTracker(cfg.log_with, accelerator, self.run_dir, dataclasses.asdict(cfg))

    def log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(message)

    def phases(self) -> list[list[str]]:
        tasks = list(self.train_sets)
        return [tasks] if self.cfg.mode == "joint" else [[t] for t in tasks]

    def loader(self, phase: int, epoch: int, tasks: list[str]) -> DataLoader:
        return self.accelerator.prepare(self._unprepared_loader(phase, epoch, tasks))

    def _unprepared_loader(self, phase: int, epoch: int, tasks: list[str]) -> DataLoader:
        data = ConcatDataset([self.train_sets[t][0] for t in tasks])
        lengths = None
        if self.cfg.group_by_length:
            llm = self.raw_model.llm
            lengths = llm_lengths(data.datasets, llm.tokenizer, llm.max_input_tokens, llm.max_target_tokens)
        order = epoch_order(len(data), self.cfg.seed, phase, epoch, lengths, self.cfg.batch_size)
        # Its own generator: a DataLoader draws a seed from the global RNG each time it is
        # iterated, which would shift the dropout masks of a resumed run.
        return DataLoader(Subset(data, order), batch_size=self.cfg.batch_size, collate_fn=collate,
                          generator=torch.Generator().manual_seed(self.cfg.seed))

    def fit(self, resume_from: Path | None = None) -> dict:
        """Train every phase, evaluating after each epoch; return the final dev metrics."""
        cfg, acc = self.cfg, self.accelerator
        position = {"phase": 0, "epoch": 0, "step_in_epoch": 0, "global_step": 0}
        resume_checkpoint = ckpt.find_checkpoint(resume_from) if resume_from else None
        if resume_checkpoint is not None:
            ckpt.check_compatible(resume_checkpoint, cfg)
            ckpt.load_weights(resume_checkpoint, self.raw_model)  # before any engine partitions the weights
            saved = ckpt.read_state(resume_checkpoint)
            position = {k: saved[k] for k in position}
            self.history = saved.get("history", [])
            self.log(f"resuming from {resume_checkpoint} at {position}")

        if not self.raw_model.trainable_parameters():  # none / rag: a frozen LLM, nothing to fit
            self.log("this model has no trainable parameters: evaluating only")
            self.evaluate(list(self.eval_sets), phase=0, epoch=-1)
            return self.final_metrics()
        for phase, tasks in enumerate(self.phases()):
            if phase < position["phase"]:
                continue
            steps_per_epoch = math.ceil(len(self.loader(phase, 0, tasks)) / cfg.grad_accum)
            optimizer, scheduler = self._phase_optimizer(phase, tasks, steps_per_epoch * cfg.epochs)
            if resume_checkpoint is not None:  # only the phase the run stopped in
                self._load_training_state(resume_checkpoint, optimizer, scheduler)  # RNG too
                resume_checkpoint = None
            else:
                position.update(phase=phase, epoch=0, step_in_epoch=0)
            for epoch in range(position["epoch"], cfg.epochs):
                position["epoch"] = epoch
                self._train_epoch(phase, epoch, tasks, optimizer, scheduler, position, steps_per_epoch)
                self.evaluate(sorted(set(self._tasks_so_far(phase))), phase, epoch, position["global_step"])
                position.update(epoch=epoch + 1, step_in_epoch=0)
                self.save(optimizer, scheduler, position)
        return self.final_metrics()

    def _phase_optimizer(self, phase: int, tasks: list[str], total_steps: int):
        """This phase's AdamW and linear schedule, both starting afresh."""
        cfg, acc = self.cfg, self.accelerator
        if not self.deepspeed:
            optimizer = acc.prepare(make_optimizer(self.raw_model, cfg))
        elif self.engine is None:
            optimizer = make_optimizer(self.raw_model, cfg)
            # The checkpoint's layout of the AdamW state: ZeRO replaces the groups' tensors with its flat partitions.
            self._adam_params = [p for group in optimizer.param_groups for p in group["params"]]
            self._adam_groups = optimizer.state_dict()["param_groups"]
            # accelerate's DeepSpeed integration builds the engine from these together (the
            # dataloader gives the micro-batch size); this phase's epochs make their own loaders.
            self.engine, optimizer, _ = acc.prepare(self.raw_model, optimizer,
                                                    self._unprepared_loader(phase, 0, tasks))
            self.model, self._engine_optimizer = self.engine, optimizer
            distributed.gather_persistent(self.engine)
            self.log(distributed.engine_summary(self.engine, self.raw_model))
        else:
            # A later phase (sequential mode) keeps the engine, whose ZeRO-3 has partitioned the
            # model already, and restarts its AdamW state as a new optimizer would start.
            optimizer = self._engine_optimizer
            distributed.load_optimizer_state(self.engine, self._adam_params, {"param_groups": self._adam_groups})
        # Built on the prepared optimizer and stepped once per optimizer step here: accelerate's
        # prepared scheduler would step once per process.
        return optimizer, linear_warmup_decay(optimizer, total_steps, cfg.warmup_ratio)

    def _load_training_state(self, checkpoint: Path, optimizer, scheduler) -> None:
        rank = self.accelerator.process_index
        if self.engine is None:
            ckpt.load_training_state(checkpoint, optimizer, scheduler, rank=rank)
            return
        # The engine built its fp32 master weights from the module's (maybe bf16) copies: set them exactly.
        distributed.load_full_weights(self.raw_model.trainable_parameters(), ckpt.read_weights(checkpoint, self.raw_model))
        distributed.gather_persistent(self.engine)
        ckpt.load_training_state(checkpoint, optimizer, scheduler, rank=rank, load_optimizer=lambda state: (
            distributed.load_optimizer_state(self.engine, self._adam_params, state)))

    def _tasks_so_far(self, phase: int) -> list[str]:
        return [t for tasks in self.phases()[:phase + 1] for t in tasks]

    def _train_epoch(self, phase, epoch, tasks, optimizer, scheduler, position, steps_per_epoch) -> None:
        cfg, acc = self.cfg, self.accelerator
        loader = self.loader(phase, epoch, tasks)
        skip = position["step_in_epoch"] * cfg.grad_accum
        if skip:
            loader = acc.skip_first_batches(loader, skip)
        self.model.train()
        bar = tqdm(total=steps_per_epoch, initial=position["step_in_epoch"], disable=not acc.is_main_process,
                   desc=f"train {'+'.join(tasks)} epoch {epoch + 1}/{cfg.epochs}")
        total_micro = len(loader) + skip
        running, norms, started = [], [], time.time()
        for micro, batch in enumerate(loader, start=skip):
            last_micro = micro + 1 == total_micro
            sync = (micro + 1) % cfg.grad_accum == 0 or last_micro
            if self.engine is not None:
                loss = self._engine_micro_step(batch, sync, position, tasks, epoch)
            else:
                # Skip the gradient all-reduce on accumulation micro-batches.
                with contextlib.nullcontext() if sync else acc.no_sync(self.model):
                    loss = self.model(batch)
                    self._check_loss(loss, position, tasks, epoch)
                    acc.backward(loss / cfg.grad_accum)
            running.append(loss.detach().float().item())
            if not sync:
                continue
            norm = None
            if self.engine is not None:  # it clipped (DeepSpeed's gradient_clipping, = max_grad_norm) and stepped
                norm = self.engine.get_global_grad_norm() if cfg.max_grad_norm > 0 else None
            elif cfg.max_grad_norm > 0:
                norm = acc.clip_grad_norm_(self.raw_model.trainable_parameters().values(), cfg.max_grad_norm)
            # A finite loss can still give inf gradients; stepping on them would poison the weights
            # (the engine has stepped already: save() then refuses the weights). The norm is taken
            # after the all-reduce, so every rank stops at the same step.
            if norm is not None and not torch.isfinite(torch.as_tensor(norm)):
                raise self.diverged(f"gradient norm became {float(norm)}", position["global_step"] + 1, tasks, epoch)
            if norm is not None:
                norms.append(float(norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position["global_step"] += 1
            position["step_in_epoch"] += 1
            bar.update(1)
            if position["global_step"] % cfg.log_every == 0:
                mean, lr = sum(running) / len(running), scheduler.get_last_lr()[0]
                per_process = len(running) * cfg.batch_size / (time.time() - started)
                bar.set_postfix(loss=f"{mean:.4f}")
                self.log(f"step {position['global_step']}: loss {mean:.4f} lr {lr:.2e} "
                         f"({per_process:.1f} examples/s/process)")
                self.tracker.train_step(position["global_step"], mean, lr, sum(norms) / len(norms) if norms else None,
                                        per_process * acc.num_processes)
                running, norms, started = [], [], time.time()
            if cfg.save_every and position["global_step"] % cfg.save_every == 0 \
                    and position["step_in_epoch"] < steps_per_epoch:
                self.save(optimizer, scheduler, position)
        bar.close()

    def _engine_micro_step(self, batch, sync: bool, position: dict, tasks: list[str], epoch: int) -> torch.Tensor:
        """Forward and backward through the DeepSpeed engine, which accumulates the gradients
        (scaling the loss by 1/gradient_accumulation_steps itself) and, on a micro-batch that
        ends an accumulation, clips and steps. It is told which one does: an epoch's last
        micro-batch ends a short accumulation, as without DeepSpeed."""
        loss = self.engine(batch)
        self._check_loss(loss, position, tasks, epoch)
        self.engine.set_gradient_accumulation_boundary(sync)
        self.engine.backward(loss)
        if sync:
            self.engine.step()
        return loss

    def _check_loss(self, loss: torch.Tensor, position: dict, tasks: list[str], epoch: int) -> None:
        if not torch.isfinite(loss.detach()):
            raise self.diverged(f"loss became {loss.item()}", position["global_step"] + 1, tasks, epoch)

    def diverged(self, what: str, step: int, tasks: list[str], epoch: int | None = None) -> TrainingDivergedError:
        """The error that stops a diverged run; it names the step and the checkpoint to go back to."""
        latest = self.run_dir / "checkpoints" / "latest"
        kept = latest.parent / latest.read_text().strip() if latest.exists() else "none yet"
        return TrainingDivergedError(
            f"{what} at optimizer step {step} (task {'+'.join(tasks)}"
            f"{'' if epoch is None else f', epoch {epoch + 1}'}); training stopped. "
            f"Last good checkpoint: {kept}. Lower lr, raise warmup_ratio or use float32.")

    def save(self, optimizer, scheduler, position: dict) -> None:
        # Under DeepSpeed every rank takes part in gathering the weights and the AdamW state.
        if self.engine is not None:
            weights = distributed.full_weights(self.raw_model.trainable_parameters())
            optimizer_state = distributed.full_optimizer_state(self.engine, self._adam_params, self._adam_groups)
        else:
            weights, optimizer_state = self.raw_model.trainable_state_dict(), optimizer.state_dict()
        # Never write non-finite weights over a good checkpoint (a huge step can overflow them
        # while the loss and gradients were still finite). Ranks hold identical weights, so all
        # of them stop here together.
        if not all(torch.isfinite(w).all() for w in weights.values()):
            raise self.diverged("trainable weights became non-finite", position["global_step"],
                                self.phases()[position["phase"]])
        rng_states = gather_object([ckpt.rng_state()])  # by rank
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            ckpt.save_checkpoint(self.run_dir, weights, optimizer_state, scheduler.state_dict(),
                                 {**position, "history": self.history}, self.cfg, self.cfg.keep_checkpoints, rng_states)
        self.accelerator.wait_for_everyone()

    def evaluate(self, tasks: list[str], phase: int, epoch: int, step: int = 0) -> dict:
        """Dev metrics of each task in `tasks` after optimizer step `step`."""
        results = {}
        for name in tasks:
            dataset, golds = self.eval_sets[name]
            metrics, predictions = self.evaluator.evaluate(self.model, dataset, dataset.task, golds)
            self.predictions[name] = predictions
            if not golds:  # hidden golds (LaMP's test split): predictions to submit, no metrics
                continue
            results[name] = metrics
            self.history.append({"phase": phase, "epoch": epoch + 1, "task": name, **metrics})
            self.log(f"dev {name} after phase {phase + 1} epoch {epoch + 1}: "
                     + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            self.tracker.evaluation(step, name, metrics)
        return results

    def final_metrics(self) -> dict:
        """The last evaluation of each task."""
        final = {}
        for entry in self.history:
            final[entry["task"]] = {k: v for k, v in entry.items() if k not in ("phase", "epoch", "task")}
        return final
