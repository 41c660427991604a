"""Child processes for the crash and multi-process tests: the project's real code, observed.

    python tests/probes.py train-until FORWARD_CALLS -- <train.py arguments>
        runs train.py, and when the model's training forward is called for the
        FORWARD_CALLS-th time prints "BLOCKED" and waits to be killed.
    python tests/probes.py checkpoint-until POINT RUN_DIR
        saves toy checkpoints 1..3 in RUN_DIR, then saves checkpoint 4 and, at POINT of that
        save (see KILL_POINTS), prints "BLOCKED" and waits to be killed.
    torchrun --nproc_per_node 2 tests/probes.py rank-probe PROBE_DIR -- <train.py arguments>
        runs train.py and writes to PROBE_DIR, per rank: the trainable weights before and
        after training, the training example ids this rank saw, the ids each evaluation
        gathered, accelerate's view of the processes, and every write this rank made
        under the run's out_dir.

The tests then SIGKILL a blocked child (as a scheduler or the OOM killer would) at a known
point. Blocking happens in audit hooks and wrappers, so the code under test is unchanged.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script, the project root is not on the path
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

BLOCKED = "BLOCKED"


def block() -> None:
    print(BLOCKED, flush=True)
    while True:
        time.sleep(60)


# --- a toy model trained by the real checkpoint code ----------------------------------------------------

class Toy(torch.nn.Module):
    """Exposes the two methods trainers.checkpoint needs, like BehavioralTwin."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(256, 256)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.load_state_dict(state)


def toy_training():
    """(model, optimizer, scheduler, step, cfg); step() trains one deterministic optimizer step."""
    from trainers import config as config_lib
    model = Toy()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
    inputs = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))

    def step() -> None:
        model.layer(inputs).pow(2).mean().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler, step, config_lib.TrainConfig()


def toy_weights_after(steps: int) -> dict[str, torch.Tensor]:
    model, _, _, step, _ = toy_training()
    for _ in range(steps):
        step()
    return model.trainable_state_dict()


def save_toy(run_dir: Path, model, optimizer, scheduler, cfg, global_step: int) -> Path:
    from trainers import checkpoint as ckpt
    state = {"phase": 0, "epoch": 0, "step_in_epoch": global_step, "global_step": global_step, "history": []}
    return ckpt.save_checkpoint(run_dir, model.trainable_state_dict(), optimizer.state_dict(),
                                scheduler.state_dict(), state, cfg, keep=2)


# Where the save of checkpoint 4 is stopped, and which checkpoint must load afterwards.
KILL_POINTS = {
    "mid-write": 3,         # the tensors are in the temporary folder, the JSON files are being written
    "before-rename": 3,     # the temporary folder is complete but not yet renamed to step-00000004
    "before-latest": 3,     # step-00000004 exists, `latest` still names step-00000003
    "mid-prune": 4,         # `latest` names step-00000004; the oldest checkpoint is half deleted
}


def kill_point_hook(point: str, checkpoints: Path):
    """An audit hook that blocks when the save reaches `point` (audit events come before the act)."""
    trash_removals = []

    def hook(event: str, args: tuple) -> None:
        path = str(args[0]) if args and isinstance(args[0], (str, os.PathLike)) else ""
        if point == "mid-write" and event == "open" and path.endswith("state.json") and ".tmp-" in path:
            block()
        if point == "before-rename" and event == "os.rename" and ".step-00000004.tmp-" in path:
            block()
        if point == "before-latest" and event == "os.rename" and path.startswith(str(checkpoints / ".latest")):
            block()
        if point == "mid-prune" and event == "shutil.rmtree" and ".trash-" in path:
            trash_removals.clear()  # file removals from here on are inside the old checkpoint
            trash_removals.append(path)
        if point == "mid-prune" and event == "os.remove" and trash_removals:
            trash_removals.append(path)
            if len(trash_removals) == 4:  # two files of the old checkpoint are gone, the rest are not
                block()
    return hook


def checkpoint_until(point: str, run_dir: Path) -> None:
    model, optimizer, scheduler, step, cfg = toy_training()
    for global_step in (1, 2, 3):
        step()
        save_toy(run_dir, model, optimizer, scheduler, cfg, global_step)
    step()
    sys.addaudithook(kill_point_hook(point, run_dir / "checkpoints"))
    save_toy(run_dir, model, optimizer, scheduler, cfg, 4)
    raise SystemExit(f"the save of checkpoint 4 never reached {point!r}")


# --- train.py, observed ----------------------------------------------------------------------------------

def train_until(forward_calls: int, argv: list[str]) -> int:
    import train
    from model import BehavioralTwin
    real_forward = BehavioralTwin.forward
    calls = []

    def forward(self, batch):
        calls.append(1)
        if len(calls) == forward_calls:
            block()
        return real_forward(self, batch)
    BehavioralTwin.forward = forward
    return train.main(argv)


def _write_paths(event: str, args: tuple) -> list[str]:
    """Paths an audited event writes to (or creates, renames, deletes); [] for reads."""
    # bytes too: TensorBoard's event writer opens its files by bytes path
    paths = [os.fsdecode(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
    if event == "open":
        mode, flags = args[1], args[2]
        writes = any(c in mode for c in "wax+") if isinstance(mode, str) else \
            bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        return [str(paths[0])] if writes and paths else []
    if event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
        return [str(p) for p in paths]
    return []


def rank_probe(probe_dir: Path, argv: list[str]) -> int:
    import accelerate
    from safetensors.torch import save_file

    import train
    from model import BehavioralTwin
    from trainers.evaluator import ModelEvaluator
    from trainers.trainer import TaskSequentialTrainer
    rank = int(os.environ["RANK"])
    out_dir = str(Path([a.split("=", 1)[1] for a in argv if a.startswith("--out_dir=")][-1]).resolve())
    writes: list[str] = []
    sys.addaudithook(lambda event, args: writes.extend(
        p for p in _write_paths(event, args) if os.path.abspath(p).startswith(out_dir)))

    seen_ids: list[str] = []
    real_forward = BehavioralTwin.forward

    def forward(self, batch):
        seen_ids.extend(batch.ids)
        return real_forward(self, batch)
    BehavioralTwin.forward = forward

    gathered: list[list[str]] = []
    real_gather = accelerate.Accelerator.gather_for_metrics

    def gather_for_metrics(self, data, use_gather_object=False):
        out = real_gather(self, data, use_gather_object=use_gather_object)
        gathered[-1].extend(example_id for example_id, _ in out)
        return out
    accelerate.Accelerator.gather_for_metrics = gather_for_metrics

    real_predict = ModelEvaluator.predict

    def predict(self, *args, **kwargs):
        gathered.append([])  # one list per evaluation
        return real_predict(self, *args, **kwargs)
    ModelEvaluator.predict = predict

    real_fit = TaskSequentialTrainer.fit

    def fit(self, *args, **kwargs):
        save_file(self.raw_model.trainable_state_dict(), str(probe_dir / f"rank{rank}-before.safetensors"))
        result = real_fit(self, *args, **kwargs)
        save_file(self.raw_model.trainable_state_dict(), str(probe_dir / f"rank{rank}-after.safetensors"))
        state = self.accelerator.state
        (probe_dir / f"rank{rank}-accelerate.json").write_text(json.dumps(
            {"distributed_type": str(state.distributed_type), "num_processes": state.num_processes,
             "backend": state.backend}))
        return result
    TaskSequentialTrainer.fit = fit

    code = train.main(argv)
    (probe_dir / f"rank{rank}.json").write_text(json.dumps(
        {"exit": code, "train_ids": seen_ids, "gathered": gathered, "writes": writes}))
    return code


def main(args: list[str]) -> int:
    command, value, rest = args[0], args[1], args[2:]
    if command == "checkpoint-until":
        checkpoint_until(value, Path(rest[0]))
    if command == "train-until":
        return train_until(int(value), rest[rest.index("--") + 1:])
    if command == "rank-probe":
        return rank_probe(Path(value), rest[rest.index("--") + 1:])
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
