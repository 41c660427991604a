"""The training loop on tiny models: checkpoints, exact resume, NaN handling, whole script runs.

The `lamp_dir` and `tiny_model_dirs` fixtures are in conftest.py.
"""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from trainers import config as config_lib
from dataset.embedded.lamp1 import generate_embedded_lamp1
from dataset.embedded.lamp7 import generate_embedded_lamp7
from tiny_models import fit_until_saved, make_trainer, run_script, trained_weights
from trainers import checkpoint as ckpt
from trainers import distributed
from trainers.builder import data_root
from trainers.trainer import TrainingDivergedError


def test_resume_mid_epoch_gives_identical_weights(tmp_path, lamp_dir, monkeypatch):
    straight = make_trainer(tmp_path / "straight", lamp_dir)
    straight.fit()
    expected = trained_weights(straight)  # 20 examples / batch 4 = 5 steps per epoch, 10 in all

    interrupted = make_trainer(tmp_path / "resumed", lamp_dir)
    fit_until_saved(interrupted, monkeypatch, step=4)  # mid-epoch of epoch 1 of 2
    state = json.loads((ckpt.find_checkpoint(tmp_path / "resumed") / "state.json").read_text())
    assert (state["epoch"], state["step_in_epoch"], state["global_step"]) == (0, 4, 4)

    resumed = make_trainer(tmp_path / "resumed", lamp_dir)  # a fresh process would start from here
    resumed.fit(resume_from=tmp_path / "resumed")
    got = trained_weights(resumed)
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected), "resumed run diverged from the straight run"
    assert resumed.final_metrics() == straight.final_metrics()


def test_checkpoint_is_safetensors_and_json_and_keeps_the_newest(tmp_path, lamp_dir):
    trainer = make_trainer(tmp_path / "run", lamp_dir, epochs=1, keep_checkpoints=2)
    trainer.fit()
    folders = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert [f.name for f in folders] == ["step-00000004", "step-00000005"]
    latest = ckpt.find_checkpoint(tmp_path / "run")
    assert latest.name == "step-00000005"
    assert {f.name for f in latest.iterdir()} == {"trainable.safetensors", "optimizer.safetensors", "optimizer.json",
                                                 "rng.safetensors", "state.json", "config.json"}
    weights = load_file(str(latest / "trainable.safetensors"))
    assert set(weights) == set(trainer.raw_model.trainable_parameters())
    assert not any(p.name.startswith(".") for p in (tmp_path / "run" / "checkpoints").iterdir())


def test_incompatible_checkpoint_is_refused_by_name(tmp_path, lamp_dir):
    make_trainer(tmp_path / "run", lamp_dir, epochs=1).fit()
    with pytest.raises(ValueError, match="num_queries: checkpoint 8 vs now 16"):
        ckpt.check_compatible(ckpt.find_checkpoint(tmp_path / "run"), config_lib.TrainConfig(num_queries=16))
    # label_loss is a loss weight: resuming with another one is fine, switching the label heads off is not.
    checkpoint = ckpt.find_checkpoint(tmp_path / "run")
    saved = config_lib.from_json((checkpoint / "config.json").read_text(), "config.json")
    assert saved.label_loss == 1.0
    ckpt.check_compatible(checkpoint, dataclasses.replace(saved, label_loss=0.5))
    with pytest.raises(ValueError, match="label_loss > 0: checkpoint True vs now False"):
        ckpt.check_compatible(checkpoint, dataclasses.replace(saved, label_loss=0.0))
    # Resuming continues the saved position, which counts in the checkpoint's task list and mode.
    with pytest.raises(ValueError, match=r"tasks: checkpoint \['LaMP-1'\] vs now \['LaMP-1', 'LaMP-7'\]"):
        ckpt.check_compatible(checkpoint, dataclasses.replace(saved, tasks=["LaMP-1", "LaMP-7"]))
    with pytest.raises(ValueError, match="mode: checkpoint 'sequential' vs now 'joint'"):
        ckpt.check_compatible(checkpoint, dataclasses.replace(saved, mode="joint"))
    # Evaluating needs only the weights to fit: the label heads and the task list are free.
    ckpt.check_compatible(checkpoint, dataclasses.replace(saved, mode="eval_only", label_loss=0.0, tasks=["LaMP-7"]))


def test_nan_loss_stops_and_names_the_step_and_last_checkpoint(tmp_path, lamp_dir, monkeypatch):
    trainer = make_trainer(tmp_path / "run", lamp_dir, epochs=1)
    real_forward = type(trainer.raw_model).forward
    calls = {"n": 0}

    def forward(self, batch):
        calls["n"] += 1
        loss = real_forward(self, batch)
        return loss * float("nan") if calls["n"] == 3 else loss
    monkeypatch.setattr(type(trainer.raw_model), "forward", forward)
    with pytest.raises(TrainingDivergedError, match=r"step 3 .*step-00000002"):
        trainer.fit()
    assert ckpt.find_checkpoint(tmp_path / "run").name == "step-00000002"


def test_whole_script_trains_writes_results_and_evaluates_a_checkpoint(tmp_path, tiny_model_dirs, lamp_dir):
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=first", "--epochs=2") == 0
    run = tmp_path / "first"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["LaMP-1"]) == {"accuracy", "f1"}
    controls = json.loads((run / "controls.json").read_text())
    assert set(controls["LaMP-1"]) == {"no_personalization", "other_history"}
    predictions = json.loads((run / "predictions" / "LaMP-1_dev.json").read_text())
    assert predictions["task"] == "LaMP_1" and len(predictions["golds"]) == 6
    assert json.loads((run / "config.json").read_text())["epochs"] == 2
    assert "Behavioral Twin" in (run / "results.md").read_text()
    assert len(json.loads((run / "metrics_history.json").read_text())) == 2  # one evaluation per epoch

    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=again", "--mode=eval_only",
                      f"--resume_from={run}", "--controls=false") == 0
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == metrics


def test_the_run_warns_once_when_its_bfloat16_llm_would_be_emulated_on_the_cpu(tmp_path, tiny_model_dirs, lamp_dir,
                                                                              capsys, monkeypatch):
    monkeypatch.setattr(distributed, "read_cpuinfo", lambda: "processor\t: 0\nflags\t\t: fpu avx2\n")
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=emulated", "--llm_dtype=bfloat16",
                      "--controls=false") == 0
    assert capsys.readouterr().err.count("warning: llm_dtype=bfloat16 on a CPU whose flags list none of") == 1
    monkeypatch.setattr(distributed, "read_cpuinfo", lambda: "processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n")
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=native", "--llm_dtype=bfloat16",
                      "--controls=false") == 0
    assert "runs emulated" not in capsys.readouterr().err


def test_whole_script_reports_user_errors_without_traceback(tmp_path, tiny_model_dirs, lamp_dir, capsys):
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--llm=no-such-model") == 1
    assert "no-such-model" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "LaMP_1").mkdir(parents=True)
    (broken / "LaMP_1" / "train_questions.json").write_text("[{")
    assert run_script(tmp_path, tiny_model_dirs, broken) == 1
    assert "train_questions.json" in capsys.readouterr().err


@pytest.fixture(scope="module")
def two_task_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("two_tasks")
    generate_embedded_lamp1(root, seed=3, n_train=12, n_dev=4, n_test=2)
    generate_embedded_lamp7(root, seed=3, n_train=12, n_dev=4, n_test=2)
    return root


@pytest.mark.parametrize("mode, evaluations", [("sequential", 3), ("joint", 2)])
def test_two_tasks_train_in_both_modes_and_evaluate_from_one_checkpoint(tmp_path, tiny_model_dirs, two_task_dir,
                                                                        mode, evaluations):
    assert run_script(tmp_path, tiny_model_dirs, two_task_dir, f"--run_name={mode}", f"--mode={mode}",
                      "--tasks=LaMP-1,LaMP-7", "--controls=false") == 0
    run = tmp_path / mode
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"LaMP-1", "LaMP-7"}
    assert set(metrics["LaMP-1"]) == {"accuracy", "f1"} and set(metrics["LaMP-7"]) == {"rouge-1", "rouge-L"}
    # sequential: LaMP-1 after phase 1, both after phase 2; joint: both once.
    assert len(json.loads((run / "metrics_history.json").read_text())) == evaluations
    assert {p.name for p in (run / "predictions").iterdir()} == {"LaMP-1_dev.json", "LaMP-7_dev.json"}

    assert run_script(tmp_path, tiny_model_dirs, two_task_dir, f"--run_name={mode}-eval", "--mode=eval_only",
                      "--tasks=LaMP-1,LaMP-7", f"--resume_from={run}", "--controls=false") == 0
    assert json.loads((tmp_path / f"{mode}-eval" / "metrics.json").read_text()) == metrics
    # Either task alone: the checkpoint's LaMP-1 label head is not needed to answer.
    for task in ("LaMP-1", "LaMP-7"):
        assert run_script(tmp_path, tiny_model_dirs, two_task_dir, f"--run_name={mode}-{task}", "--mode=eval_only",
                          f"--tasks={task}", f"--resume_from={run}", "--controls=false") == 0
        assert json.loads((tmp_path / f"{mode}-{task}" / "metrics.json").read_text()) == {task: metrics[task]}


def test_embedded_data_dir_generates_each_requested_task_and_names_the_missing_ones(tmp_path):
    cfg = config_lib.TrainConfig(cache_dir=str(tmp_path), tasks=["LaMP-1", "LaMP-7"])
    root = data_root(cfg)
    assert (root / "LaMP_1" / "dev_outputs.json").is_file() and (root / "LaMP_7" / "dev_outputs.json").is_file()
    cfg.tasks = ["LaMP-4"]
    with pytest.raises(FileNotFoundError, match="no embedded version of LaMP-4.*LaMP-1, LaMP-3, LaMP-7"):
        data_root(cfg)


def test_t5_trains_and_generates_for_the_generation_task(tmp_path, tiny_model_dirs, two_task_dir):
    assert run_script(tmp_path, tiny_model_dirs, two_task_dir, "--run_name=t5", "--tasks=LaMP-7",
                      f"--llm={tiny_model_dirs / 't5'}", "--controls=false") == 0
    assert set(json.loads((tmp_path / "t5" / "metrics.json").read_text())["LaMP-7"]) == {"rouge-1", "rouge-L"}
