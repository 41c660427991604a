"""A few steps of the whole script on the real embedded models (MiniLM + SmolLM2-135M)."""

import json

import train


def test_train_py_runs_on_the_real_embedded_models(tmp_path):
    args = [f"--cache_dir={tmp_path / 'cache'}", f"--out_dir={tmp_path / 'saved'}", "--run_name=real",
            "--max_train_examples=8", "--max_eval_examples=4", "--batch_size=4", "--eval_batch_size=4",
            "--log_every=1"]
    assert train.main(args) == 0

    run = tmp_path / "saved" / "real"
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"LaMP-1"} and 0.0 <= metrics["LaMP-1"]["accuracy"] <= 1.0
    controls = json.loads((run / "controls.json").read_text())
    assert set(controls["LaMP-1"]) == {"no_personalization", "other_history"}
    predictions = json.loads((run / "predictions" / "LaMP-1_dev.json").read_text())
    assert predictions["task"] == "LaMP_1" and len(predictions["golds"]) == 4
    config = json.loads((run / "config.json").read_text())
    assert config["encoder"] == "minilm" and config["llm"] == "smollm2-135m"
    assert (run / "checkpoints" / "latest").is_file()
    # The history embeddings were written to the on-disk store.
    assert any((tmp_path / "cache" / "history_store").rglob("part-*.keys.npy"))
