"""LaMP metrics against hand-computed values, and the `trainers.evaluate` command line."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from dataset.tasks import TASKS, get_task
from trainers.compare import PValue, comparison_table, markdown, paired_bootstrap_p
from trainers.config import TrainConfig
from trainers.evaluate import main
from trainers.metrics import (METRIC_NAMES, classification_metrics, label_index, parse_rating, rating_metrics,
                              rating_value, rouge_metrics, task_metrics)

ROOT = Path(__file__).resolve().parents[1]


# --- classification ------------------------------------------------------------------------------------------


def test_label_index_strips_and_rejects_unknown():
    assert label_index(" [2]\n", ("[1]", "[2]")) == 1
    assert label_index("[3]", ("[1]", "[2]")) == -1


def test_lamp1_accuracy_and_macro_f1_with_out_of_list_output():
    golds = ["[1]", "[2]", "[1]", "[2]"]
    predictions = ["[1]", " [2] ", "[2]", "yes"]  # "yes" is not a label: index -1, always wrong
    # Indices: preds 0, 1, 1, -1 against golds 0, 1, 0, 1 -> 2 of 4 right, accuracy 0.5.
    # Label [1]: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3.
    # Label [2]: TP 1, FP 1, FN 1 (the "yes") -> P 1/2, R 1/2, F1 1/2.
    # Macro-F1 = (2/3 + 1/2) / 2 = 7/12.
    metrics = task_metrics(get_task("LaMP-1"), predictions, golds)
    assert metrics == {"accuracy": pytest.approx(0.5), "f1": pytest.approx(7 / 12)}
    assert list(metrics) == ["accuracy", "f1"]


def test_lamp2_macro_f1_is_over_all_15_tags():
    golds = ["comedy", "sci-fi", "true story"]
    predictions = ["comedy", "Sci-Fi", " true story"]  # labels are case-sensitive: "Sci-Fi" is -1
    # Accuracy 2/3. F1: comedy 1, true story 1, sci-fi 0 (missed), and the 12 tags that never
    # occur score 0, so macro-F1 = 2/15, not the 2/3 a mean over occurring tags would give.
    metrics = task_metrics(get_task("LaMP-2"), predictions, golds)
    assert metrics == {"accuracy": pytest.approx(2 / 3), "f1": pytest.approx(2 / 15)}


def test_classification_needs_matching_nonempty_inputs():
    with pytest.raises(ValueError, match="2 predictions for 1 golds"):
        classification_metrics(["[1]", "[2]"], ["[1]"], ("[1]", "[2]"))
    with pytest.raises(ValueError, match="no examples"):
        classification_metrics([], [], ("[1]", "[2]"))


# --- LaMP-3 rating -------------------------------------------------------------------------------------------


def test_parse_rating():
    assert parse_rating(" 3.0 ") == 3.0
    assert parse_rating("4") == 4.0
    assert parse_rating("four") is None
    assert parse_rating("nan") is None and parse_rating("inf") is None


def test_unparseable_rating_maps_to_the_farther_end():
    assert rating_value("great", 2.0) == 5.0  # |1-2| = 1 < |5-2| = 3
    assert rating_value("", 4.0) == 1.0  # |1-4| = 3 > |5-4| = 1
    assert rating_value("?", 3.0) == 5.0  # a tie (2 and 2) goes to 5, as in LaMP
    assert rating_value("7", 3.0) == 7.0  # any number is taken as it is


def test_lamp3_mae_and_rmse():
    golds = ["2", "4", "3", "5"]
    predictions = ["great", "n/a", "3.0", "4"]
    # Scored as 5 (gold 2), 1 (gold 4), 3.0, 4 -> errors 3, 3, 0, 1.
    # MAE  = (3 + 3 + 0 + 1) / 4 = 1.75
    # RMSE = sqrt((9 + 9 + 0 + 1) / 4) = sqrt(4.75)
    metrics = task_metrics(get_task("LaMP-3"), predictions, golds)
    assert metrics == {"mae": pytest.approx(1.75), "rmse": pytest.approx(math.sqrt(4.75))}


def test_lamp3_gold_must_be_a_number():
    with pytest.raises(ValueError, match="gold #1 is 'five'"):
        rating_metrics(["1", "2"], ["1", "five"])


# --- ROUGE -----------------------------------------------------------------------------------------------------


def test_rouge_one_and_l_by_hand():
    golds = ["the cat chased the dog", "Deep nets for text", "running dogs"]
    predictions = ["the dog chased the cat", "deep networks", "run dog"]
    # 1) Same five words reordered: unigram overlap 5/5 -> ROUGE-1 F 1. The longest common
    #    subsequence is "the chased the" (3) -> P = R = 3/5, ROUGE-L F 0.6.
    # 2) Lowercased tokens: gold deep nets for text (4), prediction deep networks (2). One
    #    shared word: P 1/2, R 1/4, F = 2 * (1/8) / (3/4) = 1/3 for both (LCS is 1 word too).
    # 3) No stemmer, as in LaMP: run/running and dog/dogs differ -> 0 and 0.
    # Means: ROUGE-1 (1 + 1/3 + 0) / 3 = 4/9; ROUGE-L (3/5 + 1/3 + 0) / 3 = 14/45.
    metrics = task_metrics(get_task("LaMP-5"), predictions, golds)
    assert metrics == {"rouge-1": pytest.approx(4 / 9), "rouge-L": pytest.approx(14 / 45)}
    assert rouge_metrics(predictions, golds) == metrics


def test_rouge_empty_prediction_scores_zero():
    assert rouge_metrics([""], ["a title"]) == {"rouge-1": 0.0, "rouge-L": 0.0}


def test_every_task_metric_is_known():
    for spec in TASKS.values():
        assert set(spec.metrics) <= set(METRIC_NAMES), spec.name


# --- the command line -------------------------------------------------------------------------------------------


def write_outputs(path: Path, task: str, pairs: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps({"task": task, "golds": [{"id": i, "output": o} for i, o in pairs]}))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_scores_matching_files(tmp_path, capsys):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_3", [("a", "2"), ("b", "4"), ("c", "3"), ("d", "5")])
    # Same ids in another order; the values of test_lamp3_mae_and_rmse.
    preds = write_outputs(tmp_path / "preds.json", "LaMP_3", [("d", "4"), ("c", "3.0"), ("b", "n/a"), ("a", "x")])
    code, out, err = run_cli(capsys, "--task", "LaMP-3", "--preds", str(preds), "--golds", str(golds))
    assert code == 0 and err == ""
    assert json.loads(out) == {"mae": pytest.approx(1.75), "rmse": pytest.approx(math.sqrt(4.75))}


def test_cli_mismatched_ids_fail_without_allow_missing(tmp_path, capsys):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_1", [("1", "[1]"), ("2", "[2]"), ("3", "[1]")])
    preds = write_outputs(tmp_path / "preds.json", "LaMP_1", [("1", "[1]"), ("2", "[1]"), ("9", "[2]")])
    code, out, err = run_cli(capsys, "--task", "LaMP_1", "--preds", str(preds), "--golds", str(golds))
    assert code == 1 and out == ""
    assert "1 of 3 gold ids" in err and "'3'" in err  # gold 3 has no prediction
    assert "1 prediction ids" in err and "'9'" in err  # prediction 9 has no gold
    assert "--allow-missing" in err


def test_cli_allow_missing_scores_the_overlap(tmp_path, capsys):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_1", [("1", "[1]"), ("2", "[2]"), ("3", "[1]")])
    preds = write_outputs(tmp_path / "preds.json", "LaMP_1", [("1", "[1]"), ("2", "[1]"), ("9", "[2]")])
    code, out, err = run_cli(capsys, "--task", "LaMP-1", "--preds", str(preds), "--golds", str(golds),
                             "--allow-missing")
    assert code == 0
    assert "'3'" in err and "'9'" in err and "scoring 2 of 3 golds" in err
    # Scored: id 1 ([1] vs [1], right) and id 2 ([1] vs [2], wrong) -> accuracy 1/2.
    # Label [1]: TP 1, FP 1, FN 0 -> F1 2/3; label [2]: TP 0 -> F1 0; macro (2/3 + 0) / 2 = 1/3.
    assert json.loads(out) == {"accuracy": pytest.approx(0.5), "f1": pytest.approx(1 / 3)}


def test_cli_no_overlap_is_an_error_even_with_allow_missing(tmp_path, capsys):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_4", [("1", "a headline")])
    preds = write_outputs(tmp_path / "preds.json", "LaMP_4", [("2", "a headline")])
    code, out, err = run_cli(capsys, "--task", "LaMP-4", "--preds", str(preds), "--golds", str(golds),
                             "--allow-missing")
    assert code == 1 and out == "" and "nothing to score" in err


def test_cli_malformed_file_is_named(tmp_path, capsys):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_1", [("1", "[1]")])
    preds = tmp_path / "preds.json"
    preds.write_text('{"task": "LaMP_1", "golds": [')  # truncated
    code, out, err = run_cli(capsys, "--task", "LaMP-1", "--preds", str(preds), "--golds", str(golds))
    assert code == 1 and out == ""
    assert str(preds) in err and "malformed JSON" in err


def test_cli_file_of_another_task_is_rejected(tmp_path, capsys):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_1", [("1", "[1]")])
    preds = write_outputs(tmp_path / "preds.json", "LaMP_2", [("1", "[1]")])
    code, _, err = run_cli(capsys, "--task", "LaMP-1", "--preds", str(preds), "--golds", str(golds))
    assert code == 1 and str(preds) in err and "'LaMP_2'" in err


def test_cli_unknown_task_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--task", "LaMP-9", "--preds", "p.json", "--golds", "g.json"])
    assert exit_info.value.code == 2
    assert "LaMP-9" in capsys.readouterr().err


def test_cli_runs_as_a_module(tmp_path):
    golds = write_outputs(tmp_path / "golds.json", "LaMP_7", [("1", "the cat chased the dog")])
    preds = write_outputs(tmp_path / "preds.json", "LaMP_7", [("1", "the dog chased the cat")])
    result = subprocess.run([sys.executable, "-m", "trainers.evaluate", "--task", "LaMP-7",
                             "--preds", str(preds), "--golds", str(golds)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    # As in test_rouge_one_and_l_by_hand: ROUGE-1 1, ROUGE-L 3/5.
    assert json.loads(result.stdout) == {"rouge-1": pytest.approx(1.0), "rouge-L": pytest.approx(0.6)}


# --- significance against twin in the comparison table -----------------------------------------------------


def test_a_bootstrap_that_never_crosses_zero_reports_a_bound_never_zero():
    assert paired_bootstrap_p([0.9] * 50, [0.1] * 50) == PValue(1 / 2001, bound=True)
    assert str(paired_bootstrap_p([0.9] * 50, [0.1] * 50)) == "< 5.0e-04"
    assert paired_bootstrap_p([0.9] * 50, [0.1] * 50, resamples=99) == PValue(0.01, bound=True)
    crossing = paired_bootstrap_p([0.5, 0.6, 0.4, 0.5, 0.7], [0.5, 0.4, 0.6, 0.5, 0.3])
    assert not crossing.bound and str(crossing) == f"{crossing.value:.3g}" and crossing.value > 0.2


def test_the_comparison_table_keeps_the_bound_as_a_number_and_prints_it_as_one():
    # LaMP-3 (MAE first): the bootstrap. twin is 1 off on every example, none 3 off.
    runs = {"LaMP-3": {"twin": [{"mae": 1.0, "rmse": 1.0}], "none": [{"mae": 3.0, "rmse": 3.0}],
                       "mean": [{"mae": 1.1, "rmse": 1.2}]},
            # LaMP-1 (accuracy first): McNemar, whose tail underflows to 0.0 for 1200 one-way pairs.
            "LaMP-1": {"twin": [{"accuracy": 1.0, "f1": 1.0}], "none": [{"accuracy": 0.0, "f1": 0.0}]}}
    scores = {"LaMP-3": {"twin": [1.0] * 40, "none": [3.0] * 40, "mean": [0.5, 1.5] * 20},
              "LaMP-1": {"twin": [1.0] * 1200, "none": [0.0] * 1200}}
    table = comparison_table(TrainConfig(), runs, scores)
    assert table["LaMP-3"]["none"]["p_vs_twin"] == pytest.approx(1 / 2001)
    assert table["LaMP-3"]["none"]["p_vs_twin_text"] == "< 5.0e-04"
    assert table["LaMP-3"]["mean"]["p_vs_twin"] > 0 and not table["LaMP-3"]["mean"]["p_vs_twin_text"].startswith("<")
    assert table["LaMP-1"]["none"]["p_vs_twin"] > 0 and table["LaMP-1"]["none"]["p_vs_twin_text"].startswith("< ")
    assert "p_vs_twin" not in table["LaMP-3"]["twin"]
    json.dumps(table, allow_nan=False)  # plain numbers only
    text = markdown(table, "python train.py --models=twin,none,mean", seeds=1)
    assert "| frozen LLM, no personalization (none) | 3.0000 ± 0.0000 | 3.0000 ± 0.0000 | < 5.0e-04 |" in text
    assert "| 0 |" not in text and "| 0.0 |" not in text


def test_the_replayed_official_rouge_is_a_random_estimate_of_our_exact_mean():
    from bench.scorer_gap import official_rouge
    words = "the cat sat on a mat while dogs ran home fast and birds sang at dawn".split()
    golds = [" ".join(words[i % 7:i % 7 + 6]) for i in range(40)]
    predictions = [" ".join(words[i % 5:i % 5 + 1 + i % 6]) for i in range(40)]  # overlaps of many sizes
    exact = rouge_metrics(predictions, golds)
    draws = [official_rouge(predictions, golds, seed) for seed in range(5)]
    assert draws[0] == official_rouge(predictions, golds, 0)  # seeded here; LaMP's is not
    assert len({draw["rouge-1"] for draw in draws}) > 1  # a random estimate ...
    assert all(abs(draw[m] - exact[m]) < 0.15 for draw in draws for m in exact)  # ... of the mean
    same = official_rouge(["a b c"] * 5, ["a b d"] * 5, seed=0)  # no spread: the median is the mean
    assert same == pytest.approx(rouge_metrics(["a b c"] * 5, ["a b d"] * 5))
