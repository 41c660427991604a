"""Baselines on tiny models: PPlug, none, rag, prompt tuning, mean; the comparison command."""

import json
from types import SimpleNamespace

import pytest
import torch

from model import NoPersonalization, PromptTuning
from model import BehavioralEncoder, FrozenLLM, InputEncoder
from dataset.tasks import get_task
from pplug import HistoryDropAugmented, PPlug, pplug_query
from tiny_models import INPUTS, batch, build_twin, run_script, tiny_bert, tiny_llama, tiny_t5
from trainers.compare import mcnemar_p, paired_bootstrap_p


def tiny_llm(family):
    lm, tok = tiny_t5() if family == "t5" else tiny_llama()
    return FrozenLLM(lm, tok, "encoder-decoder" if family == "t5" else "decoder", "Personalize.")


def build(name, family):
    llm = tiny_llm(family)
    torch.manual_seed(0)
    if name == "none":
        return NoPersonalization(llm)
    if name == "prompt_tuning":
        return PromptTuning(llm, 4)
    if name == "mean":
        return build_twin(family, aggregator="mean")
    history_bert, tok = tiny_bert(seed=1)
    input_bert, input_tok = tiny_bert(seed=1)
    return PPlug(BehavioralEncoder(history_bert, tok, "mean", 32),
                 InputEncoder(input_bert, input_tok, tune_layers=2, max_length=64, output="pooled"), llm)


@pytest.mark.parametrize("family", ["llama", "t5"])
@pytest.mark.parametrize("name", ["pplug", "prompt_tuning", "mean"])
def test_trainable_baselines_take_a_step_and_generate(name, family):
    model = build(name, family).train()
    frozen = {n: p.clone() for n, p in model.llm.named_parameters()}
    before = {n: p.clone() for n, p in model.trainable_parameters().items()}
    assert before, "a trainable baseline must have something to train"
    model(batch()).backward()
    torch.optim.AdamW(model.trainable_parameters().values(), lr=1e-2).step()
    after = model.trainable_parameters()
    if name == "prompt_tuning":
        assert not torch.equal(after["prompts"], before["prompts"])
    assert any(not torch.equal(p, before[n]) for n, p in after.items())
    assert all(torch.equal(p, frozen[n]) for n, p in model.llm.named_parameters())
    outputs = model.generate(batch(), max_new_tokens=3)
    assert len(outputs) == 3 and all(isinstance(o, str) for o in outputs)


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_none_baseline_trains_nothing_and_is_the_bare_llm(family):
    model = build("none", family)
    assert model.trainable_parameters() == {} and not model.reads_history
    assert model.generate(batch(), 3) == model.llm.generate(None, INPUTS, 3)


def test_prompt_tuning_ignores_the_history():
    model = build("prompt_tuning", "llama")
    other = SimpleNamespace(**{**vars(batch()), "history": [["something else entirely"]] * 3})
    assert torch.equal(model(batch()), model(other))


def test_pplug_weights_sum_to_one_and_ignore_padded_items():
    model = build("pplug", "llama").eval()
    history = torch.nn.functional.normalize(torch.randn(3, 4, 32), dim=-1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    query = torch.nn.functional.normalize(torch.randn(3, 32), dim=-1)
    weights = model.aggregation_weights(history, mask, query)
    assert torch.allclose(weights[:2].sum(1), torch.ones(2))
    assert (weights[1, 2:] == 0).all() and (weights[2] == 0).all(), "padding and empty histories get no weight"
    garbage = history.clone()
    garbage[1, 2:] = 100.0  # whatever sits in padded slots must not matter
    assert torch.equal(model.aggregation_weights(garbage, mask, query)[1], weights[1])
    # Higher similarity to the query -> more weight.
    aligned = history.clone()
    aligned[0, 0] = query[0]
    assert model.aggregation_weights(aligned, mask, query)[0].argmax() == 0


def test_pplug_reads_the_users_paper_title_for_lamp1():
    question = ('For an author who has written the paper with the title "Deep nets", which reference is '
                'related? Just answer with [1] or [2] without explanation. [1]: "A" [2]: "B"')
    assert pplug_query("LaMP-1", question, get_task("LaMP-1").retrieval_query(question)) == "Deep nets"
    tweet = "Paraphrase the following tweet without any explanation before or after it: hi"
    assert pplug_query("LaMP-7", tweet, get_task("LaMP-7").retrieval_query(tweet)) == "hi"


def test_pplug_augmentation_drops_history_deterministically():
    items = [SimpleNamespace(id="1", task="LaMP-1", history=[f"h{i}" for i in range(10)], input="q", target="[1]"),
             SimpleNamespace(id="2", task="LaMP-1", history=["a", "b"], input="q", target="[2]")]
    augmented = HistoryDropAugmented(items, copies=3, seed=0)
    assert len(augmented) == 8
    assert augmented[0] is items[0] and augmented[4] is items[1] and augmented[5] is items[1]  # short: untouched
    for i in (1, 2, 3):
        kept = augmented[i].history
        assert 5 <= len(kept) <= 9 and kept == sorted(kept, key=items[0].history.index)
        assert augmented[i].history == HistoryDropAugmented(items, copies=3, seed=0)[i].history


def test_significance_tests():
    a = [1.0] * 30 + [0.0] * 10
    b = [0.0] * 20 + [1.0] * 10 + [0.0] * 10  # a right on 20 examples b gets wrong, never the reverse
    assert mcnemar_p(a, b) < 1e-5 and mcnemar_p(a, a) == 1.0
    assert str(paired_bootstrap_p([0.9] * 50, [0.1] * 50)) == "< 5.0e-04"  # never 0 (tests/test_metrics.py)
    assert paired_bootstrap_p([0.5, 0.6, 0.4, 0.5], [0.5, 0.4, 0.6, 0.5]).value > 0.5


def test_comparison_command_writes_the_table(tmp_path, tiny_model_dirs, lamp_dir, capsys):  # noqa: F811
    models = "twin,pplug,none,rag,prompt_tuning,mean,profile_rule,input_rule"
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=cmp", f"--models={models}",
                      "--seeds=2", "--max_train_examples=8", "--max_eval_examples=6") == 0
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert list(table["LaMP-1"]) == models.split(",")
    for model, values in table["LaMP-1"].items():
        assert {"accuracy", "accuracy_std", "f1", "f1_std"} <= set(values)
        assert ("p_vs_twin" in values) == (model != "twin")
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    assert "p vs twin" in (tmp_path / "cmp" / "comparison.md").read_text()
    rag_inputs = json.loads((tmp_path / "cmp" / "rag-seed0" / "config.json").read_text())
    assert rag_inputs["model"] == "rag" and rag_inputs["seed"] == 0
    # What trains nothing runs once and stands for every seed; what trains runs per seed.
    assert not (tmp_path / "cmp" / "rag-seed1").exists() and (tmp_path / "cmp" / "pplug-seed1").exists()
    assert table["LaMP-1"]["rag"]["accuracy_std"] == 0.0
    # Started again with the same name, finished runs are reused, not retrained.
    mtime = (tmp_path / "cmp" / "twin-seed1" / "metrics.json").stat().st_mtime
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=cmp", f"--models={models}",
                      "--seeds=2", "--max_train_examples=8", "--max_eval_examples=6") == 0
    assert (tmp_path / "cmp" / "twin-seed1" / "metrics.json").stat().st_mtime == mtime
    # With another setting, no run folder is reused: the table would mix two experiments.
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=cmp", f"--models={models}", "--seeds=2",
                      "--max_train_examples=8", "--max_eval_examples=6", "--pplug_augment=2") == 1
    error = capsys.readouterr().err
    assert f"{tmp_path / 'cmp' / 'twin-seed0'} was run with other settings (pplug_augment: 0 there, 2 now)" in error
    assert "choose another --run_name" in error
    assert (tmp_path / "cmp" / "twin-seed1" / "metrics.json").stat().st_mtime == mtime
