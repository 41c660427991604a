"""A few steps of the whole script on the real embedded models (MiniLM + SmolLM2-135M)."""

import json

import pytest

import train
from dataset.lamp import read_outputs
from dataset.tasks import get_task
from trainers.builder import data_root
from trainers.config import TrainConfig
from trainers.distributed import bf16_matrix_unit, read_cpuinfo
from trainers.metrics import example_scores


def test_train_py_runs_on_the_real_embedded_models(tmp_path):
    args = [f"--cache_dir={tmp_path / 'cache'}", f"--out_dir={tmp_path / 'saved'}", "--run_name=real",
            "--max_train_examples=8", "--max_eval_examples=4", "--batch_size=4", "--eval_batch_size=4",
            "--log_every=1"]
    if not bf16_matrix_unit(read_cpuinfo()):  # bfloat16 is emulated there: run what train.py's warning says
        args.append("--llm_dtype=float32")
    assert train.main(args) == 0

    run = tmp_path / "saved" / "real"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"LaMP-1"}
    controls = json.loads((run / "controls.json").read_text())
    assert set(controls["LaMP-1"]) == {"no_personalization", "other_history"}
    predictions = read_outputs(run / "predictions" / "LaMP-1_dev.json")
    assert len(predictions) == 4
    # The reported accuracy is what the written answers score against the dev golds on disk.
    golds = read_outputs(data_root(TrainConfig(cache_dir=str(tmp_path / "cache"))) / "LaMP_1" / "dev_outputs.json")
    ids = sorted(predictions)
    scores = example_scores(get_task("LaMP-1"), [predictions[i] for i in ids], [golds[i] for i in ids])
    assert metrics["LaMP-1"]["accuracy"] == pytest.approx(sum(scores) / len(scores))
    config = json.loads((run / "config.json").read_text())
    assert config["encoder"] == "minilm" and config["llm"] == "smollm2-135m"
    assert (run / "checkpoints" / "latest").is_file()
    # The history embeddings were written to the on-disk store.
    assert any((tmp_path / "cache" / "history_store").rglob("part-*.keys.npy"))
