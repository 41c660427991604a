"""Reproducing LaMP's published table: submit-ready test predictions, the experiment YAMLs, the
data folder they read, and the published figures beside the measured ones."""

from __future__ import annotations

import json
import shutil

from dataset.embedded.lamp7 import generate_embedded_lamp7
from test_training import run_script


def test_a_split_without_golds_writes_submit_ready_predictions_for_every_task(tmp_path, tiny_model_dirs,
                                                                              lamp_dir, capsys):
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=trained", "--max_train_examples=4", "--max_eval_examples=2",
                      "--controls=false") == 0
    # What LaMP publishes for the test split: questions only. LaMP-1 as the downloader stores
    # it, LaMP-7 as LaMP's server does.
    hidden = tmp_path / "hidden"
    (hidden / "LaMP_1").mkdir(parents=True)
    shutil.copy(lamp_dir / "LaMP_1" / "test_questions.json", hidden / "LaMP_1")
    lamp7 = generate_embedded_lamp7(tmp_path / "lamp7", seed=1, n_train=1, n_dev=1, n_test=2)
    (hidden / "LaMP_7" / "test").mkdir(parents=True)
    shutil.copy(lamp7 / "LaMP_7" / "test_questions.json", hidden / "LaMP_7" / "test")
    capsys.readouterr()
    assert run_script(tmp_path, tiny_model_dirs, hidden, "--run_name=submission", "--mode=eval_only",
                      f"--resume_from={tmp_path / 'trained'}", "--tasks=LaMP-1,LaMP-7", "--eval_split=test",
                      "--max_eval_examples=0") == 0
    out = capsys.readouterr().out
    run = tmp_path / "submission"
    for task, questions in (("LaMP-1", hidden / "LaMP_1" / "test_questions.json"),
                            ("LaMP-7", hidden / "LaMP_7" / "test" / "test_questions.json")):
        submitted = json.loads((run / "predictions" / f"{task}_test.json").read_text())
        assert submitted["task"] == task.replace("-", "_")
        assert [g["id"] for g in submitted["golds"]] == [q["id"] for q in json.loads(questions.read_text())]
        assert all(isinstance(g["output"], str) and set(g) == {"id", "output"} for g in submitted["golds"])
        assert f"{task}: the test split has no golds" in out and "no metrics can be computed" in out
    assert "ready to submit" in (run / "results.md").read_text()
    assert json.loads((run / "metrics.json").read_text()) == {}
