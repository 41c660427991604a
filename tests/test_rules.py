"""The untrained rule baselines (profile_rule, input_rule) on hand-made profiles with hand-set embeddings."""

import json
import math

import pytest
import torch

from dataset.collate import LaMPItem, collate
from dataset.tasks import TASKS
from model import InputRule, ProfileRule, lead_sentence, nearest_label
from tiny_models import run_script
from trainers import model_registry


def at(cosine: float) -> list[float]:
    """A unit vector whose cosine with the query direction [1, 0] is `cosine`."""
    return [cosine, math.sqrt(1 - cosine ** 2)]


class HandEncoder:
    """Stands in for the frozen history encoder: each text's embedding is set by hand
    (texts not listed embed to zero, a cosine of 0 with everything)."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode_texts(self, texts):
        return torch.tensor([self.vectors.get(t, [0.0, 0.0]) for t in texts])


LAMP1 = ('For an author who has written the paper with the title "Robot hands", which reference is related? '
         'Just answer with [1] or [2] without explanation. [1]: "Grasping" [2]: "Galaxies"')


def lamp1_batch():
    return collate([LaMPItem("q1", "LaMP-1", ["paper one", "paper two"], LAMP1, None)])


LAMP1_VECTORS = {"paper one": [1.0, 0.0], "paper two": [0.6, 0.8],  # profile mean [0.8, 0.4]
                 "Grasping": [0.0, 1.0], "Galaxies": [1.0, 0.0], "Robot hands": [0.1, 1.0]}


def test_lamp1_profile_rule_picks_the_candidate_closest_to_the_mean_profile():
    # cos(Grasping, mean) = 0.4, cos(Galaxies, mean) = 0.8: the profile says [2]
    assert ProfileRule(HandEncoder(LAMP1_VECTORS)).generate(lamp1_batch()) == ["[2]"]


def test_lamp1_input_rule_picks_the_candidate_closest_to_the_papers_title():
    # the title points at Grasping: [1], whatever the profile says
    assert InputRule(HandEncoder(LAMP1_VECTORS)).generate(lamp1_batch()) == ["[1]"]


@pytest.mark.parametrize("rule", [ProfileRule, InputRule])
def test_lamp1_rules_refuse_a_question_that_does_not_spell_out_its_two_references(rule):
    cut = LAMP1.split(" [1]:")[0]
    batch = collate([LaMPItem("q1", "LaMP-1", ["paper one", "paper two"], cut, None)])
    with pytest.raises(ValueError, match=r"example q1: a LaMP-1 question must end '\[1\]"):
        rule(HandEncoder(LAMP1_VECTORS)).generate(batch)


LAMP2 = ("Which tag does this movie relate to among the following tags? Just answer with the tag name without "
         "further explanation. tags: [sci-fi, comedy, action] description: a heist goes wrong")
TAGGED = [("m1", 0.9, "comedy"), ("m2", 0.8, "action"), ("m3", 0.7, "action"), ("m4", 0.1, "comedy"),
          ("m5", -0.5, "comedy")]


def lamp2_batch():
    item = LaMPItem("q2", "LaMP-2", [m for m, _, _ in TAGGED], LAMP2, None, outputs=[t for _, _, t in TAGGED])
    return collate([item])


def lamp2_vectors():
    return {"a heist goes wrong": [1.0, 0.0], **{m: at(c) for m, c, _ in TAGGED}}


def test_lamp2_profile_rule_is_the_tag_vote_of_the_k_most_similar_items():
    assert ProfileRule(HandEncoder(lamp2_vectors()), k=3).generate(lamp2_batch()) == ["action"]  # 2 of the top 3
    assert ProfileRule(HandEncoder(lamp2_vectors()), k=5).generate(lamp2_batch()) == ["comedy"]  # 3 of all 5
    # k=2: one vote each; comedy's voter is the more similar (0.9 vs 0.8)
    assert ProfileRule(HandEncoder(lamp2_vectors()), k=2).generate(lamp2_batch()) == ["comedy"]


def test_lamp2_input_rule_is_the_tag_closest_to_the_description():
    vectors = {**lamp2_vectors(), "action": at(0.9), "comedy": at(0.2), "sci-fi": at(-0.3)}
    assert InputRule(HandEncoder(vectors)).generate(lamp2_batch()) == ["action"]


LAMP3 = "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 " \
        "without further explanation. review: fine blender"
REVIEWS = [("r1", 0.9, "5"), ("r2", 0.3, "1"), ("r3", 0.2, "1"), ("r4", -0.2, "5")]


def lamp3_batch():
    item = LaMPItem("q3", "LaMP-3", [r for r, _, _ in REVIEWS], LAMP3, None, outputs=[s for _, _, s in REVIEWS])
    return collate([item])


def test_lamp3_profile_rule_is_the_similarity_weighted_rating_of_the_k_most_similar_reviews():
    vectors = {"fine blender": [1.0, 0.0], **{r: at(c) for r, c, _ in REVIEWS}}
    # (0.9 * 5 + 0.3 * 1 + 0.2 * 1) / 1.4 = 3.57 -> 4 (the plain mean of the three would be 2.33 -> 2)
    assert ProfileRule(HandEncoder(vectors), k=3).generate(lamp3_batch()) == ["4"]
    # r4's cosine is negative: weight 0, the same answer
    assert ProfileRule(HandEncoder(vectors), k=4).generate(lamp3_batch()) == ["4"]
    assert nearest_label(2.5, ("1", "2", "3", "4", "5")) == "3" and nearest_label(0.2, ("1", "2")) == "1"


def test_lamp3_input_rule_is_the_training_splits_most_common_rating():
    rule = InputRule(HandEncoder({}))
    with pytest.raises(ValueError, match="saw no training data"):
        rule.generate(lamp3_batch())
    rule.learn_most_common("LaMP-3", ["5", "4", "4", "1", " 4 "], TASKS["LaMP-3"].labels)
    assert rule.generate(lamp3_batch()) == ["4"]
    rule.learn_most_common("LaMP-3", ["5", "2"], TASKS["LaMP-3"].labels)
    assert rule.generate(lamp3_batch()) == ["2"], "a tie goes to the lower rating"


def test_generation_rules_answer_with_the_most_similar_items_title_or_the_inputs_lead():
    article = "Generate a headline for the following article: Stocks fell on Monday. Investors worried about rates."
    history = ["Rates rise. The bank moved.", "Cats nap. They sleep a lot."]
    batch = collate([LaMPItem("q4", "LaMP-4", history, article, None, outputs=["Rates rise", "Cats nap"])])
    vectors = {"Stocks fell on Monday. Investors worried about rates.": [1.0, 0.0],
               history[0]: at(0.7), history[1]: at(0.2)}
    assert ProfileRule(HandEncoder(vectors)).generate(batch) == ["Rates rise"]
    assert InputRule(HandEncoder(vectors)).generate(batch) == ["Stocks fell on Monday."]
    assert lead_sentence("No period here") == "No period here" and lead_sentence("  ") == ""


def test_lamp7_rules_copy_the_tweet_or_answer_the_most_similar_past_tweet():
    question = "Paraphrase the following tweet without any explanation before or after it: so tired today"
    tweets = ["sleepy again lol", "great game tonight"]
    batch = collate([LaMPItem("q7", "LaMP-7", tweets, question, None, outputs=tweets)])
    vectors = {"so tired today": [1.0, 0.0], tweets[0]: at(0.8), tweets[1]: at(-0.1)}
    assert InputRule(HandEncoder(vectors)).generate(batch) == ["so tired today"]
    assert ProfileRule(HandEncoder(vectors)).generate(batch) == ["sleepy again lol"]


def test_every_task_has_both_rules_and_an_empty_history_answers_the_first_label():
    assert set(ProfileRule.rules) == set(InputRule.rules) == set(TASKS)
    empty = collate([LaMPItem("q", "LaMP-1", [], LAMP1, None)])
    assert ProfileRule(HandEncoder(LAMP1_VECTORS)).generate(empty) == ["[1]"]


def test_rule_runs_train_nothing_and_never_load_the_llm(tmp_path, tiny_model_dirs, lamp_dir, monkeypatch):
    def no_llm(*args, **kwargs):
        raise AssertionError("a rule loaded the LLM")
    monkeypatch.setattr(model_registry, "load_llm", no_llm)
    for rule in ("profile_rule", "input_rule"):
        assert run_script(tmp_path, tiny_model_dirs, lamp_dir, f"--run_name={rule}", f"--model={rule}") == 0
        run = tmp_path / rule
        predictions = json.loads((run / "predictions" / "LaMP-1_dev.json").read_text())["golds"]
        assert len(predictions) == 6 and {p["output"] for p in predictions} <= {"[1]", "[2]"}
        assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
        assert set(json.loads((run / "metrics.json").read_text())["LaMP-1"]) == {"accuracy", "f1"}
        assert f"({rule})" in (run / "results.md").read_text()
    # The history-swap control applies to the rule that reads the history; the frozen-LLM one to neither.
    assert set(json.loads((tmp_path / "profile_rule" / "controls.json").read_text())["LaMP-1"]) == {"other_history"}
    assert json.loads((tmp_path / "input_rule" / "controls.json").read_text()) == {}


def test_every_run_shows_the_rules_beside_the_method(tmp_path, tiny_model_dirs, lamp_dir):
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=bare", "--model=none") == 0
    references = json.loads((tmp_path / "bare" / "references.json").read_text())
    assert set(references["LaMP-1"]) == {"profile_rule", "input_rule"}
    assert set(references["LaMP-1"]["profile_rule"]) == {"accuracy", "f1"}
    table = (tmp_path / "bare" / "results.md").read_text()
    assert "(none)" in table and "(profile_rule)" in table and "(input_rule)" in table
    # The same rule run on its own scores what the reference row says.
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=alone", "--model=profile_rule") == 0
    alone = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    assert alone == {"LaMP-1": references["LaMP-1"]["profile_rule"]}
