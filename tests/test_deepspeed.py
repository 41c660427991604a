"""DeepSpeed for real: `accelerate launch --config_file config/ds_*.yaml train.py` on 2 CPU processes.

No ACCELERATE_USE_CPU: accelerate builds a DeepSpeed engine, which runs on DeepSpeed's CPU
accelerator with gloo, the path a GPU cluster takes up to the device. The shipped accelerate
configs are used as they are, with num_processes set to 2. ZeRO-3's optimizer offload runs
DeepSpeedCPUAdam, a C++ op DeepSpeed compiles on first use (cached afterwards).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import CHILD_ENV, CHILD_TIMEOUT, ROOT, free_port, script_args
from trainers.checkpoint import CHECKPOINT_FILES

TRAIN_EXAMPLES, DEV_EXAMPLES = 16, 7  # 16 = 4 optimizer steps of 2 ranks x batch 2; 7 pads the last eval batch
ENV = {k: v for k, v in CHILD_ENV.items() if k != "ACCELERATE_USE_CPU"}


def two_process_config(tmp: Path, shipped: str) -> Path:
    """The shipped accelerate config with num_processes 2."""
    text = (ROOT / "config" / shipped).read_text()
    path = tmp / shipped
    path.write_text(re.sub(r"(?m)^num_processes: .*$", "num_processes: 2", text))
    return path


def launch(config: Path | None, args: list, log: Path) -> str:
    """train.py under `accelerate launch --config_file config` (or one plain process); -> its output."""
    prefix = ["-m", "accelerate.commands.launch", "--config_file", config, "--main_process_port", free_port()] \
        if config else []
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, *map(str, prefix), "train.py", *map(str, args)], cwd=ROOT, env=ENV,
                              stdout=out, stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT).returncode
    text = log.read_text()
    assert code == 0, text[-5000:]
    return text


def copy_run_until(run: Path, step: str, into: Path) -> Path:
    """A run folder holding only `run`'s checkpoint `step`: the run as if it had been killed after it."""
    (into / "checkpoints").mkdir(parents=True)
    shutil.copytree(run / "checkpoints" / step, into / "checkpoints" / step)
    (into / "checkpoints" / "latest").write_text(step)
    shutil.copy(run / "config.json", into / "config.json")
    return into


@pytest.fixture(scope="module")
def zero2(tmp_path_factory, tiny_model_dirs, lamp_dir):
    """ZeRO-2 (config/ds_config.yaml, bf16): a run, the same run resumed from its mid-epoch
    checkpoint, and the run's checkpoint evaluated by one process without DeepSpeed and by
    ZeRO-3 (config/ds_zero3_offload.yaml)."""
    tmp = tmp_path_factory.mktemp("zero2")
    runs = tmp / "runs"
    common = script_args(tmp, tiny_model_dirs, lamp_dir, f"--out_dir={runs}", "--batch_size=2", "--eval_batch_size=2",
                         f"--max_train_examples={TRAIN_EXAMPLES}", f"--max_eval_examples={DEV_EXAMPLES}",
                         "--save_every=2", "--controls=false")
    zero2_config = two_process_config(tmp, "ds_config.yaml")
    logs = {"run": launch(zero2_config, [*common, "--run_name=ds"], tmp / "ds.log")}
    resumed = copy_run_until(runs / "ds", "step-00000002", runs / "resumed")
    logs["resumed"] = launch(zero2_config, [*common, f"--resume_from={resumed}"], tmp / "resumed.log")
    evaluate = [*common, "--mode=eval_only", f"--resume_from={runs / 'ds'}"]
    logs["single"] = launch(None, [*evaluate, "--run_name=single"], tmp / "single.log")
    logs["zero3-eval"] = launch(two_process_config(tmp, "ds_zero3_offload.yaml"),
                                [*evaluate, "--run_name=zero3-eval", "--mixed_precision=no"], tmp / "zero3-eval.log")
    return runs, logs


def parameter_counts(log: str) -> tuple[int, int]:
    trainable, frozen = re.search(r"parameters: ([\d,]+) trainable, ([\d,]+) frozen", log).groups()
    return int(trainable.replace(",", "")), int(frozen.replace(",", ""))


def test_the_run_trains_with_a_zero2_engine_that_optimizes_the_trainable_tensors_only(zero2):
    runs, logs = zero2
    log = logs["run"]
    assert log.count("distributed: DEEPSPEED, 2 processes, ZeRO stage 2, bf16 autocast (backend gloo") == 1
    setup = json.loads((runs / "ds" / "distributed.json").read_text())
    assert (setup["type"], setup["processes"], setup["zero_stage"], setup["mixed_precision"]) == \
        ("DEEPSPEED", 2, 2, "bf16 autocast")
    # Read from ZeRO's own parameter groups: only the trainable tensors, the frozen LLM outside them.
    trainable, frozen = parameter_counts(log)
    assert (f"DeepSpeed engine: DeepSpeedEngine, DeepSpeedZeroOptimizer over AdamW, ZeRO stage 2; its optimizer "
            f"holds ") in log
    assert f"({trainable:,} parameters, 0 of them frozen); {frozen:,} frozen parameters are outside it" in log
    assert re.findall(r"step (\d+): loss", log) == ["1", "2", "3", "4"]
    assert json.loads((runs / "ds" / "metrics.json").read_text())["LaMP-1"].keys() == {"accuracy", "f1"}


def test_checkpoints_are_the_projects_own_files_gathered_in_full(zero2, tiny_model_dirs):
    runs, _ = zero2
    checkpoints = runs / "ds" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["latest", "step-00000002", "step-00000004"]
    final = checkpoints / "step-00000004"
    assert sorted(p.name for p in final.iterdir()) == sorted(CHECKPOINT_FILES)  # no DeepSpeed pickles
    weights, moments = load_file(str(final / "trainable.safetensors")), load_file(str(final / "optimizer.safetensors"))
    before = load_file(str(checkpoints / "step-00000002" / "trainable.safetensors"))
    assert all(w.dtype == torch.float32 and w.numel() > 0 for w in weights.values())  # fp32 masters, in full
    assert not all(torch.equal(weights[k], before[k]) for k in weights), "no optimizer step changed the weights"
    groups = json.loads((final / "optimizer.json").read_text())["param_groups"]
    indices = sorted(i for g in groups for i in g["params"])
    assert indices == list(range(len(weights)))  # torch AdamW's layout, one entry per trainable tensor
    assert {f"state.{i}.{k}" for i in indices for k in ("step", "exp_avg", "exp_avg_sq")} == moments.keys()
    assert all(float(moments[f"state.{i}.step"]) == 4 for i in indices)
    assert all(moments[f"state.{i}.exp_avg"].abs().sum() > 0 for i in indices)
    # Each rank's generator state, so that each resumes its own dropout masks.
    rng = load_file(str(final / "rng.safetensors"))
    assert {"torch_cpu", "rank1.torch_cpu"} <= rng.keys()
    assert not torch.equal(rng["torch_cpu"], rng["rank1.torch_cpu"])


def test_resuming_under_deepspeed_continues_exactly_as_the_uninterrupted_run(zero2):
    runs, logs = zero2
    assert "resuming from" in logs["resumed"] and re.findall(r"step (\d+): loss", logs["resumed"]) == ["3", "4"]
    uninterrupted, resumed = (runs / name / "checkpoints" / "step-00000004" for name in ("ds", "resumed"))
    for name in ("trainable.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(uninterrupted / name)), load_file(str(resumed / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert json.loads((uninterrupted / "optimizer.json").read_text()) == json.loads((resumed / "optimizer.json").read_text())
    for name in ("metrics.json", "predictions/LaMP-1_dev.json"):
        assert (runs / "ds" / name).read_text() == (runs / "resumed" / name).read_text()


@pytest.mark.parametrize("evaluation", ["single", "zero3-eval"])
def test_a_deepspeed_checkpoint_evaluates_with_and_without_deepspeed(zero2, evaluation):
    runs, logs = zero2
    if evaluation == "single":
        assert "distributed: NO, 1 process, fp32" in logs["single"]
    else:  # nothing trains, so no engine: the model is evaluated replicated on both ranks
        assert "distributed: DEEPSPEED, 2 processes, ZeRO stage 3, optimizer offload to cpu, " \
               "parameter offload to cpu, fp32" in logs[evaluation]
        assert "DeepSpeed engine" not in logs[evaluation]
    trained = json.loads((runs / "ds" / "predictions" / "LaMP-1_dev.json").read_text())
    evaluated = json.loads((runs / evaluation / "predictions" / "LaMP-1_dev.json").read_text())
    assert len(trained["golds"]) == DEV_EXAMPLES
    assert sorted(trained["golds"], key=lambda g: g["id"]) == sorted(evaluated["golds"], key=lambda g: g["id"])
    assert json.loads((runs / "ds" / "metrics.json").read_text()) == \
        json.loads((runs / evaluation / "metrics.json").read_text())


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, tiny_model_dirs, lamp_dir):
    """ZeRO-3 with optimizer and parameter offload (config/ds_zero3_offload.yaml, bf16), in
    sequential mode over two embedded tasks: one engine, whose AdamW restarts per task."""
    tmp = tmp_path_factory.mktemp("zero3")
    args = script_args(tmp, tiny_model_dirs, lamp_dir, f"--out_dir={tmp / 'runs'}", "--batch_size=2",
                       "--eval_batch_size=2", "--data_dir=embedded", "--tasks=LaMP-1,LaMP-7", "--max_train_examples=8",
                       "--max_eval_examples=4", "--save_every=0", "--controls=false", "--run_name=z3")
    return tmp / "runs" / "z3", launch(two_process_config(tmp, "ds_zero3_offload.yaml"), args, tmp / "z3.log")


def test_zero3_with_offload_trains_evaluates_and_checkpoints_the_gathered_weights(zero3, tiny_model_dirs):
    run, log = zero3
    assert log.count("distributed: DEEPSPEED, 2 processes, ZeRO stage 3, optimizer offload to cpu, "
                     "parameter offload to cpu, bf16 autocast") == 1
    trainable, frozen = parameter_counts(log)
    assert log.count("DeepSpeed engine: DeepSpeedEngine, DeepSpeedZeroOptimizer_Stage3 over DeepSpeedCPUAdam, "
                     "ZeRO stage 3") == 1  # one engine for both tasks
    assert f"({trainable:,} parameters, 0 of them frozen); {frozen:,} frozen parameters are outside it" in log
    # 8 examples per task = 2 optimizer steps per phase; each phase's schedule starts at the peak lr.
    assert re.findall(r"step (\d+): loss [\d.]+ lr ([\d.e+-]+)", log) == \
        [("1", "3.00e-04"), ("2", "0.00e+00"), ("3", "3.00e-04"), ("4", "0.00e+00")]  # train.py's lr
    assert json.loads((run / "metrics.json").read_text()).keys() == {"LaMP-1", "LaMP-7"}
    # ZeRO-3 leaves each rank an empty placeholder per parameter: the checkpoint holds them gathered.
    final = run / "checkpoints" / "step-00000004"
    weights, moments = load_file(str(final / "trainable.safetensors")), load_file(str(final / "optimizer.safetensors"))
    assert sum(w.numel() for w in weights.values()) == trainable
    assert sum(moments[f"state.{i}.exp_avg_sq"].numel() for i in range(len(weights))) == trainable
    # The second task's AdamW counted its own 2 steps, not the run's 4: it restarted. So the
    # first task's label head, which gets no gradient on the second task, has no moments left.
    assert {float(moments[f"state.{i}.step"]) for i in range(len(weights))} == {2.0}
    unmoved = [moments[f"state.{i}.exp_avg_sq"].numel() for i in range(len(weights))
               if not moments[f"state.{i}.exp_avg_sq"].any()]
    assert sorted(unmoved) == sorted(weights[f"label_heads.LaMP-1.{k}"].numel() for k in ("bias", "weight"))
