"""Checkpoints: trainable weights + optimizer + scheduler + RNG + position, written atomically.

    <run>/checkpoints/step-00000120/
        trainable.safetensors   the trainable weights only (the frozen LLM is never copied)
        optimizer.safetensors   AdamW moments, keyed "state.<param index>.<name>"
        optimizer.json          param groups (lr, betas, ...), scheduler state
        rng.safetensors         torch CPU (and CUDA) generator states; "rank<r>.*" those of rank r > 0
        state.json              phase, epoch, step in epoch, global step, python/numpy RNG (rank_rng: ranks > 0)
        config.json             the resolved config the run was started with
    <run>/checkpoints/latest    name of the newest complete checkpoint

Everything is safetensors or JSON: loading never unpickles, and only the files above are
ever opened, so a checkpoint cannot run code whatever else its folder holds. The layout is
the same with or without DeepSpeed (the trainer gathers a ZeRO engine's weights and AdamW
state into it: trainers.distributed), so either resumes or evaluates the other's.

Crash safety (dataset.atomic): a checkpoint is written under a hidden temporary name and renamed when
complete; a checkpoint being replaced or pruned is first renamed to a hidden trash name.
So at every instant each `step-*` folder is complete, and a process killed at any point
(SIGKILL included) leaves `latest` or the newest `step-*` folder loadable. The next save
removes the hidden leftovers of an interrupted one.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from dataset.atomic import atomic_folder, atomic_write_text, discard, remove_leftovers
from trainers import config as config_lib

# Settings that change the shape or meaning of the trainable weights.
ARCHITECTURE_FIELDS = ("model", "encoder", "llm", "prompt_position", "num_queries", "qformer_layers", "qformer_heads",
                       "qformer_norm_first", "tune_layers", "input_output", "relevance_signals",
                       "numeric_signals", "nested_queries", "word_prompts")
# What resuming training needs to match too: the saved position (phase, epoch, step) counts
# in this task list and mode, and the label heads (one per classification task) train.
RESUME_FIELDS = ("mode", "tasks")
LABEL_HEADS = "label_heads."  # their weights' names; an evaluation builds none
TENSOR_FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors")
JSON_FILES = ("optimizer.json", "state.json", "config.json")
CHECKPOINT_FILES = TENSOR_FILES + JSON_FILES


class CheckpointError(ValueError):
    """A checkpoint that is damaged, cannot be written, or does not fit the run's settings or model."""


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = state
    np_state = np.random.get_state()
    plain = {"python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
             "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]}
    return tensors, plain


def set_rng_state(tensors: dict[str, torch.Tensor], plain: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[:torch.cuda.device_count()])
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# --- writing ---------------------------------------------------------------------------------------------

def save_checkpoint(run_dir: Path, weights: dict[str, torch.Tensor], optimizer_state: dict, scheduler_state: dict,
                    state: dict, cfg, keep: int = 2, rng_states: list | None = None) -> Path:
    """Write checkpoints/step-<global step> atomically, point `latest` at it, prune old ones.

    weights: the trainable weights by name; optimizer_state and scheduler_state: as torch's
    state_dict() gives them; rng_states: every process's rng_state(), by rank (default: this
    process's). Each rank draws its own dropout masks, so each resumes from its own.

    A failed write (a full disk) raises CheckpointError and leaves the previous checkpoint
    as it was.
    """
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    remove_leftovers(folder)  # of an interrupted save (one writer per run folder)
    name = f"step-{state['global_step']:08d}"
    final = folder / name
    try:
        # A resumed run re-saving the same step replaces the old folder in one rename.
        with atomic_folder(final, replace=True) as tmp:
            _write_files(tmp, weights, optimizer_state, scheduler_state, state, cfg, rng_states or [rng_state()])
    except OSError as error:
        previous = _newest_complete(folder)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"could not write checkpoint {final}: {error}. Nothing was replaced: {kept}. "
                              f"Free disk space, then continue with --resume_from={run_dir}.") from error
    atomic_write_text(folder / "latest", final.name)
    _prune(folder, keep, newest=name)
    return final


def _write_files(tmp: Path, weights: dict, opt: dict, scheduler_state: dict, state: dict, cfg,
                 rng_states: list) -> None:
    save_file(weights, str(tmp / "trainable.safetensors"))
    moments = {f"state.{i}.{k}": v.detach().cpu().contiguous().reshape(v.shape)
               for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    save_file(moments, str(tmp / "optimizer.safetensors"))
    (tmp / "optimizer.json").write_text(json.dumps({"param_groups": opt["param_groups"],
                                                    "scheduler": scheduler_state}), encoding="utf-8")
    (rng_tensors, rng_plain), others = rng_states[0], rng_states[1:]
    rng_tensors = {**rng_tensors, **{f"rank{rank}.{name}": tensor for rank, (tensors, _) in enumerate(others, start=1)
                                     for name, tensor in tensors.items()}}
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "rng": rng_plain, "rank_rng": [plain for _, plain in others]}),
                                    encoding="utf-8")
    (tmp / "config.json").write_text(config_lib.to_json(cfg), encoding="utf-8")


def _prune(folder: Path, keep: int, newest: str) -> None:
    """Delete all but the `keep` newest checkpoints; `newest` (just written) always stays."""
    others = sorted(p for p in folder.glob("step-*") if p.is_dir() and p.name != newest)
    for old in others[:max(0, len(others) - (keep - 1))]:
        discard(old)  # renamed first: a kill during the deletion never leaves a half-deleted step-* folder


# --- finding and checking --------------------------------------------------------------------------------

def _is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in CHECKPOINT_FILES)


def _newest_complete(folder: Path) -> Path | None:
    complete = [p for p in sorted(folder.glob("step-*")) if p.is_dir() and _is_complete(p)]
    return complete[-1] if complete else None


def find_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its latest checkpoint) or a checkpoint folder -> checkpoint folder."""
    path = Path(path)
    if (path / "trainable.safetensors").exists():
        return path
    folder = path / "checkpoints"
    latest = folder / "latest"
    if latest.exists():
        checkpoint = folder / latest.read_text(encoding="utf-8", errors="replace").strip()
        if _is_complete(checkpoint):
            return checkpoint
    newest = _newest_complete(folder) if folder.is_dir() else None
    if newest is not None:
        if latest.exists():  # our writes never do this; someone deleted or damaged files
            warnings.warn(f"{latest} names {checkpoint.name}, which is missing or incomplete; "
                          f"using the newest complete checkpoint, {newest}", stacklevel=2)
        return newest
    raise FileNotFoundError(f"resume_from: no checkpoint in {path} (expected trainable.safetensors, "
                            "or a run folder with checkpoints/latest)")


def damage(checkpoint: Path) -> list[str]:
    """What makes `checkpoint` unloadable (missing or unreadable files); [] when it is sound.

    Reads only the safetensors headers and the JSON files, so it is cheap for any model size.
    """
    problems = []
    for name in CHECKPOINT_FILES:
        path = checkpoint / name
        if not path.is_file():
            problems.append(f"{path} is missing")
            continue
        try:
            if name in TENSOR_FILES:
                with safe_open(str(path), framework="pt"):
                    pass
            else:
                _read_json(path)
        except CheckpointError as error:
            problems.append(str(error))
        except (SafetensorError, OSError) as error:
            problems.append(f"{path} is not a readable safetensors file ({error})")
    return problems


def checkpoint_problems(path: str | Path, cfg) -> list[str]:
    """Why `path` cannot be resumed or evaluated with `cfg`: for config validation, before anything is written."""
    try:
        checkpoint = find_checkpoint(path)
    except FileNotFoundError as error:
        return [str(error).removeprefix("resume_from: ")]
    problems = damage(checkpoint)
    if problems:
        return problems + [_earlier_advice(checkpoint)]
    diffs = architecture_diffs(checkpoint, cfg)
    if diffs:
        return [_incompatible_message(checkpoint, diffs)]
    return []


def _architecture(cfg, resuming: bool) -> dict:
    """The settings a checkpoint must share with `cfg`. Evaluating needs only the weights'
    shapes to match. Resuming needs the task list and mode too, and whether the label heads
    exist (label_loss > 0); label_loss's value is a loss weight, free to change."""
    fields = {k: getattr(cfg, k) for k in ARCHITECTURE_FIELDS}
    if resuming:
        fields.update({k: getattr(cfg, k) for k in RESUME_FIELDS})
        fields["label_loss > 0"] = cfg.label_loss > 0
    return fields


def architecture_diffs(checkpoint: Path, cfg) -> list[str]:
    resuming = cfg.mode != "eval_only"
    saved, now = _architecture(_saved_config(checkpoint), resuming), _architecture(cfg, resuming)
    return [f"{k}: checkpoint {saved[k]!r} vs now {now[k]!r}" for k in saved if saved[k] != now[k]]


def check_compatible(checkpoint: Path, cfg) -> None:
    """Refuse a checkpoint whose architecture settings differ from `cfg`, naming each one."""
    diffs = architecture_diffs(checkpoint, cfg)
    if diffs:
        raise CheckpointError(_incompatible_message(checkpoint, diffs))


def _incompatible_message(checkpoint: Path, diffs: list[str]) -> str:
    return (f"checkpoint {checkpoint} was trained with other settings ({'; '.join(diffs)}); "
            f"run with the checkpoint's settings (see {checkpoint / 'config.json'}).")


def _earlier_advice(checkpoint: Path) -> str:
    earlier = [p.name for p in sorted(checkpoint.parent.glob("step-*")) if p != checkpoint and _is_complete(p)]
    if not earlier:
        return f"checkpoint {checkpoint} is damaged and no earlier checkpoint is left; start the run again"
    return (f"checkpoint {checkpoint} is damaged; resume from an earlier one with "
            f"--resume_from={checkpoint.parent / earlier[-1]}")


def unexpected_files(checkpoint: Path) -> list[str]:
    return sorted(p.name for p in checkpoint.iterdir() if p.name not in CHECKPOINT_FILES)


def _warn_unexpected(checkpoint: Path) -> None:
    extra = unexpected_files(checkpoint)
    if extra:
        warnings.warn(f"checkpoint {checkpoint} holds files that are not part of a checkpoint: "
                      f"{', '.join(extra)}. They are ignored (never opened or run).", stacklevel=3)


# --- loading ---------------------------------------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is not valid UTF-8 JSON ({error})") from error


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error}); "
                              + _earlier_advice(path.parent)) from error


def _saved_config(checkpoint: Path):
    path = checkpoint / "config.json"
    try:
        return config_lib.from_json(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, config_lib.ConfigError) as error:
        raise CheckpointError(f"{path} cannot be read as a run config ({error})") from error


def read_weights(checkpoint: Path, model) -> dict[str, torch.Tensor]:
    """The trainable weights `model` takes from the checkpoint: a model built without label
    heads (an evaluation: they only train) skips the checkpoint's."""
    _warn_unexpected(checkpoint)
    state = _load_tensors(checkpoint / "trainable.safetensors")
    if not any(name.startswith(LABEL_HEADS) for name, _ in model.named_parameters()):
        state = {name: weights for name, weights in state.items() if not name.startswith(LABEL_HEADS)}
    return state


def load_weights(checkpoint: Path, model) -> None:
    """Load the trainable weights; a model of another shape (e.g. another LLM width) is refused by name."""
    state = read_weights(checkpoint, model)
    try:
        model.load_trainable_state_dict(state)
    except ValueError as error:
        saved = _saved_config(checkpoint)
        raise CheckpointError(
            f"checkpoint {checkpoint} does not fit the model built now: {error}. Shapes differ when the encoder "
            f"or LLM now has another width than when it was trained (encoder={saved.encoder!r}, "
            f"llm={saved.llm!r}); use the models it was trained with.") from error


def read_state(checkpoint: Path) -> dict:
    """The saved position and history (state.json)."""
    return _read_json(checkpoint / "state.json")


def load_training_state(checkpoint: Path, optimizer, scheduler, load_optimizer=None, rank: int = 0) -> dict:
    """Restore optimizer, scheduler and process `rank`'s RNG; return the saved position (state.json).

    load_optimizer(state_dict), when given, restores the optimizer instead of
    optimizer.load_state_dict (a DeepSpeed engine keeps the state: trainers.distributed).
    A rank the checkpoint has no RNG state for (it was written by fewer processes) takes rank 0's.
    """
    moments = _load_tensors(checkpoint / "optimizer.safetensors")
    saved = _read_json(checkpoint / "optimizer.json")
    state: dict[int, dict] = {}
    for key, value in moments.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    try:
        (load_optimizer or optimizer.load_state_dict)({"state": state, "param_groups": saved["param_groups"]})
        scheduler.load_state_dict(saved["scheduler"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{checkpoint / 'optimizer.json'}: optimizer state does not fit this run "
                              f"({error}); {_earlier_advice(checkpoint)}") from error
    position = read_state(checkpoint)
    tensors, plain, others = _load_tensors(checkpoint / "rng.safetensors"), position.pop("rng"), position.pop("rank_rng", [])
    if 0 < rank <= len(others):
        prefix = f"rank{rank}."
        tensors = {name[len(prefix):]: tensor for name, tensor in tensors.items() if name.startswith(prefix)}
        plain = others[rank - 1]
    set_rng_state(tensors, plain)
    return position
