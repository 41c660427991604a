"""Bad input, crash safety and security, each checked on the path a user takes: train.py.

Every bad input must end in an `error: ...` message (no traceback) that names the file,
field or setting and says what to do, and must leave every file already saved byte for
byte as it was. Crashes are real SIGKILLs of real child processes (see probes.py).
"""

import ast
import errno
import hashlib
import json
import pickle
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import train
from dataset.tasks import get_task
from dataset.history_store import HistoryStore
from probes import BLOCKED, KILL_POINTS, save_toy, toy_training, toy_weights_after
from tiny_models import CHILD_ENV, CHILD_TIMEOUT, ROOT, make_trainer, run_script, script_args, tiny_llama
from trainers import checkpoint as ckpt
from trainers.trainer import TrainingDivergedError



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory, tiny_model_dirs, lamp_dir):
    """A finished run with two checkpoints (steps 1 and 2): what a bad input must never damage."""
    out = tmp_path_factory.mktemp("saved")
    assert run_script(out, tiny_model_dirs, lamp_dir, "--run_name=saved", "--max_train_examples=8",
                      "--save_every=1", "--controls=false") == 0
    return out / "saved"


@pytest.fixture(scope="module")
def wide_llama(tmp_path_factory):
    """A tiny Llama 64 wide, where the one the saved run used is 48 wide."""
    folder = tmp_path_factory.mktemp("wide") / "llama"
    model, tokenizer = tiny_llama(hidden=64)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# --- bad input -------------------------------------------------------------------------------------------

def broken_data(tmp: Path, data: Path, filename: str, mutate) -> Path:
    """A copy of `data` with LaMP_1/<filename> passed through mutate(bytes) -> bytes."""
    root = tmp / "data"
    shutil.copytree(data, root)
    path = root / "LaMP_1" / filename
    path.write_bytes(mutate(path.read_bytes()))
    return root


def edited_data(tmp: Path, data: Path, filename: str, edit) -> Path:
    """A copy of `data` with the JSON of LaMP_1/<filename> changed in place by edit(document)."""
    def mutate(raw: bytes) -> bytes:
        document = json.loads(raw)
        edit(document)
        return json.dumps(document).encode()
    return broken_data(tmp, data, filename, mutate)


@dataclass
class Setup:
    tmp: Path
    data: Path
    saved: Path
    wide: Path

    def broken_data(self, filename: str, mutate) -> Path:
        return broken_data(self.tmp, self.data, filename, mutate)

    def edited_data(self, filename: str, edit) -> Path:
        return edited_data(self.tmp, self.data, filename, edit)

    def saved_copy(self) -> Path:
        copy = self.tmp / "copy"
        shutil.copytree(self.saved, copy)
        return copy


def drop_abstract(questions):
    del questions[0]["profile"][0]["abstract"]


def _set_config_llm(setup: Setup) -> Path:
    """A copy of the saved checkpoint whose config names the wide LLM: the name fits, the width does not."""
    checkpoint = ckpt.find_checkpoint(setup.saved_copy())
    saved = json.loads((checkpoint / "config.json").read_text())
    (checkpoint / "config.json").write_text(json.dumps({**saved, "llm": str(setup.wide)}))
    return checkpoint


def _latin1_config(setup: Setup) -> Path:
    path = setup.tmp / "experiment.yaml"
    path.write_bytes("instruction: Personnalisé\n".encode("latin-1"))
    return path


def _truncated_weights(setup: Setup) -> Path:
    run = setup.saved_copy()
    weights = ckpt.find_checkpoint(run) / "trainable.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    return run


def _bad_state_json(setup: Setup) -> Path:
    run = setup.saved_copy()
    (ckpt.find_checkpoint(run) / "state.json").write_text('{"phase": 0, "epo')
    return run


# Each case: what makes the input bad -> (train.py arguments, exit code, words the message must hold).
BAD_INPUTS = {
    "malformed JSON": lambda s: (
        [f"--data_dir={s.broken_data('train_questions.json', lambda b: b[:len(b) // 2])}"], 1,
        ["train_questions.json", "malformed JSON at line", "re-download"]),
    "question and gold ids do not match": lambda s: (
        [f"--data_dir={s.edited_data('dev_outputs.json', lambda d: d['golds'][0].update(id='999999'))}"], 1,
        ["dev_outputs.json", '"golds"', "have no gold", "'999999'", "same task and split"]),
    "gold outside the task's labels": lambda s: (
        [f"--data_dir={s.edited_data('dev_outputs.json', lambda d: d['golds'][1].update(output='[3]'))}"], 1,
        ["dev_outputs.json", "gold #1", "'[3]', which is not one of LaMP-1's 2 labels", "fix or remove that gold"]),
    "outputs file of another task": lambda s: (
        [f"--data_dir={s.edited_data('dev_outputs.json', lambda d: d.update(task='LaMP_2'))}"], 1,
        ["LaMP_1/dev_outputs.json", "field \"task\" is 'LaMP_2', expected 'LaMP_1'", "re-download it"]),
    "empty profile": lambda s: (
        [f"--data_dir={s.edited_data('train_questions.json', lambda q: q[0].update(profile=[]))}"], 1,
        ["train_questions.json", "record #0", '"profile" is empty', "restore its profile"]),
    "profile item missing a field": lambda s: (
        [f"--data_dir={s.edited_data('train_questions.json', drop_abstract)}"], 1,
        ["train_questions.json", "item #0", "lacks required field 'abstract'", "fix that item"]),
    "unknown task": lambda s: (
        ["--tasks=LaMP-1,LaMP-9"], 2, ["tasks", "'LaMP-9'", "known tasks: LaMP-1"]),
    "non-UTF-8 data file": lambda s: (
        [f"--data_dir={s.broken_data('dev_questions.json', lambda b: b[:40] + bytes([0xFF]) + b[40:])}"], 1,
        ["dev_questions.json", "not valid UTF-8 at byte offset 40", "re-encode it as UTF-8"]),
    "non-UTF-8 config file": lambda s: (
        ["--config", str(_latin1_config(s))], 2, ["experiment.yaml", "not UTF-8", "save it as UTF-8"]),
    "model folder that does not exist": lambda s: (
        [f"--llm={s.tmp / 'models' / 'llama-7b'}"], 1, ["llama-7b", "does not exist", "save_pretrained"]),
    "model alias that does not exist": lambda s: (
        ["--encoder=minilm-l6"], 1, ["'minilm-l6' was not found", "Did you mean 'minilm'"]),
    "checkpoint with another num_queries": lambda s: (
        [f"--resume_from={s.saved}", "--num_queries=4"], 2,
        ["resume_from", "num_queries: checkpoint 8 vs now 4", "config.json"]),
    "checkpoint of another model type": lambda s: (
        ["--mode=eval_only", f"--resume_from={s.saved}", "--model=mean"], 2,
        ["model: checkpoint 'twin' vs now 'mean'"]),
    "checkpoint for another LLM width": lambda s: (
        ["--mode=eval_only", f"--resume_from={_set_config_llm(s)}", f"--llm={s.wide}"], 1,
        ["does not fit the model built now", "projection", "another width"]),
    "checkpoint with damaged weights": lambda s: (
        [f"--resume_from={_truncated_weights(s)}"], 2,
        ["trainable.safetensors is not a readable safetensors file", "resume from an earlier one with "
         "--resume_from=", "step-00000001"]),
    "checkpoint with malformed state.json": lambda s: (
        [f"--resume_from={_bad_state_json(s)}"], 2, ["state.json is not valid UTF-8 JSON", "step-00000001"]),
    "qformer_heads that do not divide the encoder width": lambda s: (
        ["--qformer_heads=7"], 2, ["qformer_heads: 7 does not divide the width 32", "use one of 1, 2, 4, 8"]),
    "resume_from that does not exist": lambda s: (
        [f"--resume_from={s.tmp / 'saved' / 'no-such-run'}"], 2, ["resume_from", "no-such-run", "does not exist"]),
    "run_name of a finished run, not resumed": lambda s: (
        [f"--out_dir={s.saved.parent}", "--run_name=saved"], 2,
        ["run_name", "already holds a run", f"--resume_from={s.saved}"]),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_a_clear_error_and_loses_nothing(case, tmp_path, tiny_model_dirs, lamp_dir, saved_run,
                                                      wide_llama, capsys):
    setup = Setup(tmp_path, lamp_dir, saved_run, wide_llama)
    args, code, fragments = BAD_INPUTS[case](setup)
    kept = {folder: snapshot(folder) for folder in (saved_run, tmp_path)}
    capsys.readouterr()
    assert train.main(script_args(tmp_path, tiny_model_dirs, lamp_dir, "--controls=false", *args)) == code
    err = capsys.readouterr().err
    message = err[err.index("error: "):]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"
    for folder, before in kept.items():
        after = snapshot(folder)
        assert {k: after.get(k) for k in before} == before, f"a file saved under {folder} changed"


def test_diverging_loss_stops_names_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model_dirs,
                                                                                 lamp_dir, capsys):
    # lr 1e30 is a real divergence: step 1 throws the weights to ~1e30, step 2's loss overflows.
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=diverged", "--lr=1e30", "--save_every=1",
                      "--controls=false") == 1
    message = capsys.readouterr().err.split("error: ", 1)[1]
    run = tmp_path / "diverged"
    assert "became nan at optimizer step 2" in message or "became inf at optimizer step 2" in message, message
    assert f"Last good checkpoint: {run / 'checkpoints' / 'step-00000001'}" in message
    checkpoint = ckpt.find_checkpoint(run)
    assert checkpoint.name == "step-00000001" and ckpt.damage(checkpoint) == []
    assert all(torch.isfinite(t).all() for t in load_file(str(checkpoint / "trainable.safetensors")).values())


class InfiniteGradient(torch.autograd.Function):
    """Passes the loss through unchanged; its gradient is infinite."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("inf")


def test_infinite_gradient_with_finite_loss_stops_before_the_weights_are_touched(tmp_path, lamp_dir, monkeypatch):
    trainer = make_trainer(tmp_path / "run", lamp_dir, epochs=1)
    real_forward = type(trainer.raw_model).forward
    calls = []

    def forward(self, batch):
        calls.append(1)
        loss = real_forward(self, batch)
        return InfiniteGradient.apply(loss) if len(calls) == 3 else loss
    monkeypatch.setattr(type(trainer.raw_model), "forward", forward)
    with pytest.raises(TrainingDivergedError, match=r"gradient norm became (inf|nan) at optimizer step 3 .*"
                                                    r"step-00000002"):
        trainer.fit()
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.trainable_parameters().values())


def test_non_finite_weights_are_never_saved(tmp_path, lamp_dir, monkeypatch):
    trainer = make_trainer(tmp_path / "run", lamp_dir, epochs=1)
    real_step = torch.optim.AdamW.step
    steps = []

    def step(self, *args, **kwargs):  # an optimizer step that overflows the weights at step 4
        result = real_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 4:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(float("inf"))
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    with pytest.raises(TrainingDivergedError, match=r"weights became non-finite at optimizer step 4 .*step-00000002"):
        trainer.fit()
    assert ckpt.find_checkpoint(tmp_path / "run").name == "step-00000002"


def test_a_profile_of_100000_items_costs_only_the_kept_history(tmp_path, tiny_model_dirs, lamp_dir):
    items = [{"title": f"paper number {i}", "abstract": f"abstract of paper {i}"} for i in range(100_000)]
    data = edited_data(tmp_path, lamp_dir, "train_questions.json", lambda questions: questions[0].update(profile=items))
    assert run_script(tmp_path, tiny_model_dirs, data, "--run_name=long", "--controls=false", "--epochs=1",
                      "--max_train_examples=4", "--max_eval_examples=2") == 0
    [folder] = (tmp_path / "cache" / "history_store").iterdir()
    cache = HistoryStore(folder)
    render = get_task("LaMP-1").profile_text
    # max_history=512 keeps the user's last 512 items; only those are ever encoded.
    assert render(items[-1]) in cache and render(items[-512]) in cache and render(items[-513]) not in cache
    assert not any(render(item) in cache for item in items[:-512])  # the 99,488 dropped items never were


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, tiny_model_dirs, lamp_dir, monkeypatch,
                                                                capsys):
    real_save_file = ckpt.save_file
    saves = []

    def save_file(tensors, path):
        saves.append(path)
        if len(saves) == 4:  # the second checkpoint's first file (each checkpoint writes three)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save_file(tensors, path)
    monkeypatch.setattr(ckpt, "save_file", save_file)
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=full", "--save_every=1",
                      "--controls=false") == 1
    message = capsys.readouterr().err.split("error: ", 1)[1]
    checkpoints = tmp_path / "full" / "checkpoints"
    assert "No space left on device" in message and f"--resume_from={tmp_path / 'full'}" in message
    assert f"the previous checkpoint {checkpoints / 'step-00000001'} is intact" in message
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-00000001"]  # no leftovers
    assert ckpt.damage(ckpt.find_checkpoint(tmp_path / "full")) == []


# --- crash safety: real processes, killed with SIGKILL ---------------------------------------------------

def spawn(args: list, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=CHILD_ENV, stdout=out,
                                stderr=subprocess.STDOUT)


def kill_when_blocked(child: subprocess.Popen, log: Path) -> None:
    """SIGKILL `child` once it reports that it reached its kill point."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    while BLOCKED not in log.read_text(errors="replace"):
        assert child.poll() is None, f"child exited ({child.returncode}) before its kill point:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"child never reached its kill point:\n{log.read_text()}"
        time.sleep(0.1)
    child.send_signal(signal.SIGKILL)
    assert child.wait(CHILD_TIMEOUT) == -signal.SIGKILL


def finish(child: subprocess.Popen, log: Path) -> None:
    assert child.wait(CHILD_TIMEOUT) == 0, log.read_text()


def test_sigkill_while_writing_a_checkpoint_leaves_a_loadable_one(tmp_path):
    children = {point: spawn([ROOT / "tests" / "probes.py", "checkpoint-until", point, tmp_path / point],
                             tmp_path / f"{point}.log") for point in KILL_POINTS}
    for point, child in children.items():
        kill_when_blocked(child, tmp_path / f"{point}.log")

    for point, expected_step in KILL_POINTS.items():
        run = tmp_path / point
        checkpoint = ckpt.find_checkpoint(run)
        assert checkpoint.name == f"step-{expected_step:08d}", point
        model, optimizer, scheduler, _, cfg = toy_training()
        ckpt.load_weights(checkpoint, model)
        position = ckpt.load_training_state(checkpoint, optimizer, scheduler)
        expected = toy_weights_after(expected_step)
        assert position["global_step"] == expected_step
        assert all(torch.equal(model.trainable_state_dict()[k], expected[k]) for k in expected), point
        assert all(p.name.startswith((".", "latest")) or ckpt.damage(p) == []
                   for p in (run / "checkpoints").iterdir()), f"{point}: a step-* folder is incomplete"

        # The next save removes what the killed one left behind and keeps the newest two.
        newest = max(p.name for p in (run / "checkpoints").glob("step-*"))
        save_toy(run, model, optimizer, scheduler, cfg, 5)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["latest", newest, "step-00000005"], point


def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(tmp_path, tiny_model_dirs, lamp_dir):
    # 16 examples / batch 4 = 4 optimizer steps per epoch, 2 epochs; checkpoints every 2 steps.
    common = ["train.py", *script_args(tmp_path, tiny_model_dirs, lamp_dir, "--epochs=2", "--save_every=2",
                                       "--max_train_examples=16", "--max_eval_examples=4", "--controls=false")]
    straight = spawn([*common, "--run_name=straight", f"--cache_dir={tmp_path / 'cache-a'}"],
                     tmp_path / "straight.log")
    # Killed inside optimizer step 7 (the 7th training forward): epoch 2, one step after checkpoint 6.
    crashed = spawn([ROOT / "tests" / "probes.py", "train-until", "7", "--", *common[1:], "--run_name=crashed",
                     f"--cache_dir={tmp_path / 'cache-b'}"], tmp_path / "crashed.log")
    kill_when_blocked(crashed, tmp_path / "crashed.log")
    run = tmp_path / "crashed"
    state = ckpt.read_state(ckpt.find_checkpoint(run))
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (1, 2, 6)
    assert not (run / "metrics.json").exists()

    resumed = spawn([*common, f"--resume_from={run}", f"--cache_dir={tmp_path / 'cache-b'}"],
                    tmp_path / "resumed.log")
    finish(resumed, tmp_path / "resumed.log")
    finish(straight, tmp_path / "straight.log")

    for name in ("trainable.safetensors", "optimizer.safetensors"):
        want = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000008" / name))
        got = load_file(str(run / "checkpoints" / "step-00000008" / name))
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want), name
    for name in ("metrics.json", "metrics_history.json", "predictions/LaMP-1_dev.json"):
        assert (run / name).read_text() == (tmp_path / "straight" / name).read_text(), name


# --- security --------------------------------------------------------------------------------------------

class Payload:
    """Unpickling this creates `marker`: proof that a file was executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_checkpoint_folder_with_unexpected_files_is_never_executed(tmp_path, tiny_model_dirs, lamp_dir, saved_run):
    marker = tmp_path / "EXECUTED"
    pickle.loads(pickle.dumps(Payload(marker)))  # the payload is live: unpickling it runs code
    assert marker.exists()
    marker.unlink()
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(ckpt.find_checkpoint(saved_run), checkpoint)
    for name in ("pytorch_model.bin", "optimizer.pt", "rng_state.pth"):
        (checkpoint / name).write_bytes(pickle.dumps(Payload(marker)))
    for name in ("__init__.py", "modeling.py"):
        (checkpoint / name).write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.warns(UserWarning, match="__init__.py, modeling.py, optimizer.pt, pytorch_model.bin, rng_state.pth"):
        assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=eval", "--mode=eval_only",
                          f"--resume_from={checkpoint}", "--controls=false") == 0
    assert not marker.exists()

    # A pickle under a checkpoint file's own name is refused as damaged, not unpickled.
    shutil.copy(checkpoint / "pytorch_model.bin", checkpoint / "trainable.safetensors")
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=eval2", "--mode=eval_only",
                      f"--resume_from={checkpoint}", "--controls=false") == 2
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch, about the payload it refuses
def test_model_folder_code_and_pickles_do_not_run(tmp_path, tiny_model_dirs, lamp_dir, capsys):
    marker = tmp_path / "EXECUTED"
    custom = tmp_path / "custom-llama"
    shutil.copytree(tiny_model_dirs / "llama", custom)
    config = json.loads((custom / "config.json").read_text())
    config.update(model_type="custom-llama", auto_map={"AutoConfig": "modeling.Config",
                                                      "AutoModelForCausalLM": "modeling.Model"})
    (custom / "config.json").write_text(json.dumps(config))
    (custom / "modeling.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, f"--llm={custom}") == 1  # trust_remote_code is off
    assert "ships its own Python code" in capsys.readouterr().err and not marker.exists()

    pickled = tmp_path / "pickled-llama"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_model_dirs / "llama" / name, pickled / name)
    (pickled / "pytorch_model.bin").write_bytes(pickle.dumps(Payload(marker)))
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, f"--llm={pickled}") == 1
    assert "weights_only=True refused it" in capsys.readouterr().err and not marker.exists()


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """torch.load without weights_only=True, and any pickle/np.load(allow_pickle=True) load."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        keywords = {k.arg: k.value for k in node.keywords}
        safe_flag = keywords.get("weights_only")
        if owner == "torch" and node.func.attr == "load" and \
                not (isinstance(safe_flag, ast.Constant) and safe_flag.value is True):
            found.append(f"line {node.lineno}: torch.load without weights_only=True")
        if owner in ("pickle", "dill", "cloudpickle", "joblib") and node.func.attr in ("load", "loads"):
            found.append(f"line {node.lineno}: {owner}.{node.func.attr}")
        allow = keywords.get("allow_pickle")
        if owner in ("np", "numpy") and node.func.attr == "load" and \
                isinstance(allow, ast.Constant) and allow.value is True:
            found.append(f"line {node.lineno}: numpy.load(allow_pickle=True)")
    return found


def test_the_code_never_unpickles():
    sources = [p for p in ROOT.rglob("*.py") if "tests" not in p.relative_to(ROOT).parts]
    assert len(sources) > 10
    problems = {str(p.relative_to(ROOT)): _unsafe_loads(ast.parse(p.read_text())) for p in sources}
    assert {k: v for k, v in problems.items() if v} == {}
    # The check itself works:
    assert _unsafe_loads(ast.parse("torch.load(f)\ntorch.load(f, weights_only=False)\npickle.loads(b)")) == [
        "line 1: torch.load without weights_only=True", "line 2: torch.load without weights_only=True",
        "line 3: pickle.loads"]
