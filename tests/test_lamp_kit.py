"""Reproducing LaMP's published table: submit-ready test predictions, the experiment YAMLs, the
data folder they read, and the published figures beside the measured ones."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from dataset.download.official import build_parser, local_root
from dataset.embedded.lamp7 import generate_embedded_lamp7
from dataset.layout import PUBLIC_TASKS
from tiny_models import run_script
from trainers.compare import comparison_table, markdown, published_protocol_gaps
from trainers.config import TrainConfig, resolve_config
from trainers.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "config").rglob("*.yaml"))
KIT = sorted((ROOT / "config" / "lamp").glob("*.yaml"))


def is_accelerate_config(path: Path) -> bool:
    """accelerate's launch configs (config/*.yaml) name a compute environment; experiments never do."""
    return "compute_environment" in yaml.safe_load(path.read_text())


# --- the experiment YAMLs and the data folder they read --------------------------------------------------


def readme_download_roots() -> set[str]:
    """Every --data_dir the README's download commands fill, parsed as the downloader parses them."""
    roots = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        match = re.search(r"python -m dataset\.download (.*)", line)
        if match and "--out" in match.group(1):
            args = build_parser().parse_args(shlex.split(match.group(1)))
            roots.add(local_root(args.out, args.split).as_posix())
    return roots


def test_every_shipped_experiment_reads_where_the_readmes_download_puts_the_data():
    roots = readme_download_roots()
    assert roots == {"data/lamp", "data/lamp/time"}
    experiments = [path for path in CONFIGS if not is_accelerate_config(path)]
    assert experiments == KIT
    for path in experiments:
        data_dir = yaml.safe_load(path.read_text())["data_dir"]
        assert data_dir in roots, f"{path.relative_to(ROOT)} reads {data_dir}; the README downloads to {roots}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT / "config")))
def test_every_yaml_under_config_loads_and_validates(path, tmp_path):
    if is_accelerate_config(path):
        load_config_from_file(str(path))  # accelerate's own reader: unknown keys are an error
        return
    for model in METHODS:  # the same file serves every method
        cfg = resolve_config(None, str(path), {"model": model, "data_dir": str(tmp_path)}, environ={})
        assert cfg.model == model


def test_the_kit_has_one_experiment_per_public_task_at_the_published_protocol():
    assert [path.stem for path in KIT] == list(PUBLIC_TASKS)
    for path in KIT:
        cfg = TrainConfig(**yaml.safe_load(path.read_text()))
        assert cfg.tasks == [path.stem]
        assert (cfg.llm, cfg.encoder, cfg.rag_k, cfg.retriever, cfg.max_input_tokens, cfg.num_beams) == \
            ("google/flan-t5-xxl", "BAAI/bge-base-en-v1.5", 4, "bm25", 256, 4)
        # PPlug's run_all_t5.sh: weight decay 1e-4, 2 epochs (LaMP-3: 1), batch 2 x 8, augmentation 10.
        assert (cfg.lr, cfg.weight_decay, cfg.warmup_ratio, cfg.batch_size, cfg.grad_accum, cfg.pplug_augment) == \
            (1e-4, 1e-4, 0.05, 2, 8, 10)
        assert cfg.epochs == (1 if path.stem == "LaMP-3" else 2)
        # What comparison.md checks before it shows the published figures.
        assert all(published_protocol_gaps(cfg, model) == [] for model in METHODS)


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


# --- published figures beside the measured ones --------------------------------------------------------------

# Measured LaMP-2 results of four models, one seed, as compare() collects them.
LAMP2_RUNS = {"LaMP-2": {model: [{"accuracy": acc, "f1": acc - 0.1}]
                         for model, acc in (("twin", 0.60), ("pplug", 0.55), ("rag", 0.35), ("none", 0.33))}}
LAMP2_SCORES = {"LaMP-2": {model: [1.0, 0.0, 1.0, 1.0] for model in LAMP2_RUNS["LaMP-2"]}}


def protocol(tmp_path, **changes) -> TrainConfig:
    """The published protocol: LaMP's time-based split, frozen Flan-T5-XXL, k=4, 256 tokens, 4 beams."""
    cfg = TrainConfig(data_dir=str(tmp_path / "data" / "lamp" / "time"), llm="google/flan-t5-xxl",
                      encoder="BAAI/bge-base-en-v1.5", tasks=["LaMP-2"], models=list(LAMP2_RUNS["LaMP-2"]),
                      rag_k=4, retriever="bm25", max_input_tokens=256, num_beams=4)
    return dataclasses.replace(cfg, **changes)


def test_published_figures_stand_beside_the_measured_ones_when_the_protocol_matches(tmp_path):
    cfg = protocol(tmp_path)
    assert all(published_protocol_gaps(cfg, model) == [] for model in cfg.models)
    table = comparison_table(cfg, LAMP2_RUNS, LAMP2_SCORES)
    assert table["LaMP-2"]["pplug"]["published"] == {"accuracy": 0.565, "f1": 0.501}
    assert table["LaMP-2"]["rag"]["published"] == {"accuracy": 0.345}  # no F1 published for BM25
    assert table["LaMP-2"]["none"]["published"] == {"accuracy": 0.326, "f1": 0.255}
    assert "published" not in table["LaMP-2"]["twin"]
    assert table["LaMP-2"]["pplug"]["accuracy"] == 0.55  # the measured figure stays what was measured
    text = markdown(table, "python train.py --config config/lamp/LaMP-2.yaml", seeds=1)
    assert "| LaMP-2 | accuracy | accuracy (published) | f1 | f1 (published) | p vs twin |" in text
    assert "| PPlug (pplug) | 0.5500 ± 0.0000 | 0.565 | 0.4500 ± 0.0000 | 0.501 |" in text
    assert "| frozen LLM + retrieved profile items (rag) | 0.3500 ± 0.0000 | 0.345 | 0.2500 ± 0.0000 |  |" in text
    assert "(published): the figure PPlug paper" in text and "not measured here" in text
    # A local folder of the same model is the same model; the test split has PPlug's test figures.
    same = comparison_table(protocol(tmp_path, llm="/models/flan-t5-xxl", eval_split="test"), LAMP2_RUNS, LAMP2_SCORES)
    assert same["LaMP-2"]["pplug"]["published"] == {"accuracy": 0.559, "f1": 0.495}
    assert "published" not in same["LaMP-2"]["none"]  # nothing published for it on test


@pytest.mark.parametrize("change,gap", [
    ({"num_beams": 1}, "num_beams is 1, not 4"),
    ({"max_input_tokens": 512}, "max_input_tokens is 512, not 256"),
    ({"llm": "Qwen/Qwen2.5-7B-Instruct"}, "llm Qwen/Qwen2.5-7B-Instruct is not google/flan-t5-xxl"),
    ({"data_dir": "data/lamp"}, "data_dir data/lamp is not LaMP's time-based split"),
    ({"data_dir": "embedded"}, "data_dir embedded is not LaMP's time-based split"),
    ({"max_eval_examples": 100}, "max_eval_examples=100 scores part of the dev split"),
])
def test_no_published_figure_when_the_protocol_differs(tmp_path, change, gap):
    cfg = protocol(tmp_path, **change)
    table = comparison_table(cfg, LAMP2_RUNS, LAMP2_SCORES)
    assert not any("published" in values for values in table["LaMP-2"].values())
    gaps = published_protocol_gaps(cfg, "pplug")
    assert any(gap in line for line in gaps)
    text = markdown(table, "python train.py", seeds=1, protocol_gaps=gaps)
    assert "(published)" not in text and "No published figure where the protocol differs" in text and gap in text


def test_a_retriever_off_protocol_drops_only_rags_figure(tmp_path):
    for change in ({"retriever": "dense"}, {"rag_k": 1}):
        table = comparison_table(protocol(tmp_path, **change), LAMP2_RUNS, LAMP2_SCORES)
        assert "published" not in table["LaMP-2"]["rag"]
        assert table["LaMP-2"]["pplug"]["published"]["accuracy"] == 0.565


def test_training_on_part_of_the_split_drops_only_the_trained_models_figures(tmp_path):
    table = comparison_table(protocol(tmp_path, max_train_examples=500), LAMP2_RUNS, LAMP2_SCORES)
    assert "published" not in table["LaMP-2"]["pplug"]
    assert table["LaMP-2"]["none"]["published"]["accuracy"] == 0.326 and "published" in table["LaMP-2"]["rag"]
