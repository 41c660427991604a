"""The research scripts under bench/ on tiny models: the Q-Former probe, adaptive queries,
history scaling, the embedded tasks' reference scores and the ablation grid. They check
what each script computes and reports, never how fast or how accurate the tiny models are.

The `lamp_dir` and `tiny_model_dirs` fixtures are in conftest.py.
"""

import json
import math
import shutil

from bench import ablations, adaptive_queries, comparison, embedded_references, history_scaling, qformer_probe
from dataset.embedded.lamp7 import generate_embedded_lamp7
from dataset.lamp import load_split
from dataset.tasks import get_task, lamp1_candidates, lamp1_paper_title
from tiny_models import script_args


def tiny_settings(tmp_path, tiny_model_dirs, lamp_dir) -> list[str]:
    """train.py settings that put a script on the tiny models and the small LaMP-1."""
    return [f"--encoder={tiny_model_dirs / 'bert'}", f"--llm={tiny_model_dirs / 'llama'}", f"--data_dir={lamp_dir}",
            f"--cache_dir={tmp_path / 'cache'}", "--qformer_heads=4", "--max_item_tokens=32", "--max_history=8"]


def test_qformer_probe_trains_the_head_and_reports_dev_accuracy(tmp_path, tiny_model_dirs, lamp_dir, capsys,
                                                                results_file):
    # The "dev" split here is the 24 training questions themselves: the tiny random encoder carries
    # too little of the history signal to generalise, but a probe that trains must fit what it saw.
    data = tmp_path / "seen"
    shutil.copytree(lamp_dir, data)
    for kind in ("questions", "outputs"):
        shutil.copy(data / "LaMP_1" / f"train_{kind}.json", data / "LaMP_1" / f"dev_{kind}.json")
    out = tmp_path / "probe.json"
    report = qformer_probe.main(["--steps=30", "--eval_every=10", "--lr=1e-3", "--inits=aligned,random", "--seeds=0",
                                 f"--out={out}", *tiny_settings(tmp_path, tiny_model_dirs, lamp_dir),
                                 f"--data_dir={data}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    for init in ("aligned", "random"):
        run = report["runs"][init]["0"]
        assert [entry["step"] for entry in run["log"]] == [10, 20, 30]
        assert all(entry["init"] == init for entry in run["log"])
        assert report["final_dev_accuracy"][init]["0"] == run["log"][-1]["dev_accuracy"]
        # 24 training questions seen 10 times over: the label loss must fall if anything trains.
        losses = run["losses"]
        assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
        assert sum(losses[-6:]) < sum(losses[:6])
    # Chance is 0.5 (half the answers are [1]); the aligned probe fits its 24 questions.
    assert report["final_dev_accuracy"]["aligned"]["0"] >= 0.875
    assert "dev accuracy after 30 steps" in capsys.readouterr().out
    assert "## Q-Former probe" in results_file.read_text()  # its RESULTS.md section, in the tests' own file


def test_adaptive_queries_evaluates_every_prefix_and_the_history_rule(tmp_path, tiny_model_dirs, lamp_dir, capsys):
    out = tmp_path / "adaptive.json"
    report = adaptive_queries.main(["--queries=4", "--steps=2", "--batch_size=8", f"--out={out}",
                                    *tiny_settings(tmp_path, tiny_model_dirs, lamp_dir)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    plain, nested = report["results"]["plain"], report["results"]["nested"]
    assert list(plain["accuracy"]) == ["1", "2", "4"]
    assert list(nested["accuracy"]) == ["1", "2", "4", "history"]
    for rule in ("1", "2", "4"):  # the first K queries: every dev example uses exactly K
        assert plain["mean_queries"][rule] == nested["mean_queries"][rule] == int(rule)
    # Every dev profile has at least max_history = 8 items, so the history rule gives each example
    # ceil(log2(8 + 1)) = 4 queries: the same prompts, hence the same answers, as "the first 4".
    assert nested["mean_queries"]["history"] == 4
    assert nested["accuracy"]["history"] == nested["accuracy"]["4"]
    assert all(a * 8 == round(a * 8) for result in (plain, nested) for a in result["accuracy"].values())  # 8 dev
    assert "| per example, `history` rule" in report["table"] and "| n/a |" in report["table"]
    assert report["table"] in capsys.readouterr().out


def test_history_scaling_measures_each_length_with_and_without_memory(tmp_path, tiny_model_dirs, lamp_dir):
    out = tmp_path / "scaling.json"
    report = history_scaling.main(["--lengths=3,40", "--top_n=2", "--repeats=1", f"--out={out}",
                                   *tiny_settings(tmp_path, tiny_model_dirs, lamp_dir)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    results = report["results"]
    assert set(results) == {f"{n}_{m}_memory" for n in (3, 40) for m in ("with", "without")}
    for key, row in results.items():
        assert row["seconds_prompts"] > 0 and row["seconds_with_llm"] > 0
        assert row["peak_bytes_prompts"] > 0 and row["peak_bytes_with_llm"] > 0
        if key.endswith("_with_memory"):
            assert row["index_builds"] == 1, "the user's index is built once and reused for every example"
    assert results["40_with_memory"]["index_bytes"] > results["3_with_memory"]["index_bytes"]
    assert report["setup"]["memory_top_n"] == 2 and report["setup"]["llm_dtype"] == "bfloat16"
    for name in ("time_ratio_40_vs_3_with_memory", "peak_memory_ratio_40_vs_3_without_memory_with_llm"):
        assert report[name] > 0


def test_embedded_references_score_blind_and_history_aware_rules(tmp_path, tiny_model_dirs, lamp_dir):
    embed = embedded_references.unit_encoder(str(tiny_model_dirs / "bert"), tmp_path / "cache")
    lamp1 = embedded_references.lamp1_references(lamp_dir, embed)
    assert list(lamp1) == list(embedded_references.LAMP1_ROWS)
    # Each rule recomputed from its definition, question by question.
    hits = {name: 0 for name in lamp1}
    dev = load_split(lamp_dir, "LaMP-1", "dev", ("title", "abstract"))
    for e in dev:
        first, second = embed([lamp1_candidates(e.input)[0]])[0], embed([lamp1_candidates(e.input)[1]])[0]
        title = embed([lamp1_paper_title(e.input)])[0]
        history = embed([get_task("LaMP-1").profile_text(p) for p in e.profile])
        closer = {"always [1]": (1.0, 0.0), "closest to the input paper's title": (first @ title, second @ title),
                  "closest to the mean profile embedding": (first @ history.mean(0), second @ history.mean(0)),
                  "closest to the most similar profile paper": ((history @ first).max(), (history @ second).max())}
        for name, (a, b) in closer.items():
            hits[name] += ("[1]" if float(a) >= float(b) else "[2]") == e.output
    for name, count in hits.items():
        assert lamp1[name]["accuracy"] == count / len(dev), name

    generate_embedded_lamp7(tmp_path / "lamp7", seed=1, n_train=4, n_dev=40, n_test=2)
    lamp7 = embedded_references.lamp7_references(tmp_path / "lamp7", embed)
    copied, styled = lamp7["copy the tweet"], lamp7["the tweet with the user's usual markers"]
    # The generated task is built so that the profile's markers are part of what the gold adds to the tweet.
    assert styled["rouge-1"] > copied["rouge-1"] and styled["rouge-L"] > copied["rouge-L"]
    assert 0 < lamp7["the most similar past tweet"]["rouge-1"] < copied["rouge-1"]  # another tweet's content

    text = embedded_references.table({"LaMP-1": lamp1, "LaMP-7": lamp7})
    assert "| LaMP-1 | always [1] | the question only | accuracy" in text
    assert "| LaMP-7 | the tweet with the user's usual markers | the history | rouge-1" in text


def test_ablation_grid_runs_its_cells_then_reuses_them(tmp_path, tiny_model_dirs, lamp_dir, capsys):
    argv = [f"--run_dir={tmp_path / 'runs'}", f"--bench_dir={tmp_path / 'bench'}", "--only=default,mean",
            *tiny_settings(tmp_path, tiny_model_dirs, lamp_dir), "--batch_size=4", "--max_train_examples=8",
            "--max_eval_examples=4", "--save_every=0"]
    assert ablations.main(argv) == 0
    report = json.loads((tmp_path / "bench" / "ablations.json").read_text())
    assert [(row["cell"], row["axis"], row["reused"]) for row in report["rows"]] == [
        ("default", "default", False), ("mean", "aggregator", False)]
    assert json.loads((tmp_path / "runs" / "mean" / "config.json").read_text())["model"] == "mean"
    assert (tmp_path / "bench" / "ablations.png").stat().st_size > 0
    assert "| aggregator | mean of history embeddings |" in (tmp_path / "bench" / "ablations.md").read_text()

    capsys.readouterr()
    assert ablations.main(argv) == 0  # every cell's run folder holds its metrics: nothing trains again
    assert [row["reused"] for row in json.loads((tmp_path / "bench" / "ablations.json").read_text())["rows"]] == \
        [True, True]
    assert "reusing" in capsys.readouterr().out


def test_ablation_grid_refuses_a_config_file_by_name(tmp_path, capsys):
    assert ablations.main(["--config", str(tmp_path / "x.yaml")]) == 2
    assert "--config is not supported" in capsys.readouterr().err


def test_comparison_runs_train_pys_table_and_writes_it_as_the_tasks_section(tmp_path, tiny_model_dirs, lamp_dir,
                                                                          results_file):
    table = comparison.main(script_args(tmp_path, tiny_model_dirs, lamp_dir, "--models=twin,input_rule",
                                        "--max_train_examples=8"))
    assert list(table["LaMP-1"]) == ["twin", "input_rule"]
    saved = (tmp_path / "comparison-LaMP-1" / "comparison.md").read_text()  # the default run name: resumable
    section = results_file.read_text()
    assert "<!-- results:comparison-LaMP-1 -->" in section and saved.strip() in section
    assert "python train.py " in saved  # the equivalent train.py command, under the script's own
