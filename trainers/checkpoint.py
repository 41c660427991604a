"""Checkpoints: trainable weights + optimizer + scheduler + RNG + position, written atomically.

    <run>/checkpoints/step-00000120/
        trainable.safetensors   the trainable weights only (the frozen LLM is never copied)
        optimizer.safetensors   AdamW moments, keyed "state.<param index>.<name>"
        optimizer.json          param groups (lr, betas, ...), scheduler state
        rng.safetensors         torch CPU (and CUDA) generator states
        state.json              phase, epoch, step in epoch, global step, python/numpy RNG
        config.json             the resolved config the run was started with
    <run>/checkpoints/latest    name of the newest complete checkpoint

Everything is safetensors or JSON: loading never unpickles, so a checkpoint cannot run
code. A checkpoint is written under a temporary name and renamed when complete, so a
crash mid-write leaves the previous one intact and `latest` pointing at it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import config as config_lib

# Settings that change the shape or meaning of the trainable weights.
ARCHITECTURE_FIELDS = ("model", "encoder", "llm", "prompt_position", "num_queries", "qformer_layers", "qformer_heads",
                       "qformer_norm_first", "tune_layers", "input_output")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


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


def save_checkpoint(run_dir: Path, model, optimizer, scheduler, state: dict, cfg, keep: int = 2) -> Path:
    """Write checkpoints/step-<global step> atomically and point `latest` at it."""
    folder = Path(run_dir) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{state['global_step']:08d}"
    final, tmp = folder / name, folder / f".{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    save_file(model.trainable_state_dict(), str(tmp / "trainable.safetensors"))
    opt = optimizer.state_dict()
    moments = {f"state.{i}.{k}": v.detach().cpu().contiguous().reshape(v.shape)
               for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    save_file(moments, str(tmp / "optimizer.safetensors"))
    _write_text(tmp / "optimizer.json", json.dumps({"param_groups": opt["param_groups"],
                                                    "scheduler": scheduler.state_dict()}))
    rng_tensors, rng_plain = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    _write_text(tmp / "state.json", json.dumps({**state, "rng": rng_plain}))
    _write_text(tmp / "config.json", config_lib.to_json(cfg))
    for f in tmp.iterdir():  # safetensors does not fsync; make the files durable before the rename
        with open(f, "rb+") as handle:
            os.fsync(handle.fileno())
    _fsync_dir(tmp)

    if final.exists():  # a resumed run re-saving the same step
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = folder / f".latest.tmp-{os.getpid()}"
    _write_text(latest_tmp, name)
    os.replace(latest_tmp, folder / "latest")
    _fsync_dir(folder)

    for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its latest checkpoint) or a checkpoint folder -> checkpoint folder."""
    path = Path(path)
    if (path / "trainable.safetensors").exists():
        return path
    latest = path / "checkpoints" / "latest"
    if latest.exists():
        checkpoint = path / "checkpoints" / latest.read_text().strip()
        if (checkpoint / "trainable.safetensors").exists():
            return checkpoint
    found = sorted(path.glob("checkpoints/step-*/trainable.safetensors"))
    if found:
        return found[-1].parent
    raise FileNotFoundError(f"resume_from: no checkpoint in {path} (expected trainable.safetensors, "
                            "or a run folder with checkpoints/latest)")


def check_compatible(checkpoint: Path, cfg) -> None:
    """Refuse a checkpoint whose architecture settings differ from `cfg`, naming each one."""
    saved = config_lib.from_json((checkpoint / "config.json").read_text(), str(checkpoint / "config.json"))
    diffs = [f"{k}: checkpoint {getattr(saved, k)!r} vs now {getattr(cfg, k)!r}"
             for k in ARCHITECTURE_FIELDS if getattr(saved, k) != getattr(cfg, k)]
    if diffs:
        raise ValueError(f"checkpoint {checkpoint} was trained with other settings:\n  - " + "\n  - ".join(diffs)
                         + f"\nrun with the checkpoint's settings (see {checkpoint / 'config.json'}).")


def load_weights(checkpoint: Path, model) -> None:
    model.load_trainable_state_dict(load_file(str(checkpoint / "trainable.safetensors")))


def load_training_state(checkpoint: Path, optimizer, scheduler) -> dict:
    """Restore optimizer, scheduler and RNG; return the saved position (state.json)."""
    moments = load_file(str(checkpoint / "optimizer.safetensors"))
    saved = json.loads((checkpoint / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, value in moments.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    scheduler.load_state_dict(saved["scheduler"])
    position = json.loads((checkpoint / "state.json").read_text())
    set_rng_state(load_file(str(checkpoint / "rng.safetensors")), position.pop("rng"))
    return position
