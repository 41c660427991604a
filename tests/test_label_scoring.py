"""answer=choices: rank classification of each allowed label under the frozen LLM, batched."""

import json

import pytest
import torch

from dataset.tasks import get_task
from model import FrozenLLM, NoPersonalization, PromptTuning
from tiny_models import batch as model_batch, build_twin, run_script, tiny_llama, tiny_t5
from trainers import config as config_lib
from trainers.compare import published_protocol_gaps

INPUTS = ["For an author who has written the paper with the title, which reference is related? [1]: a [2]: b",
          "a position paper on reproducible research software",
          "the user writes short titles about robots"]
CHOICES = [("[1]", "[2]"), ("comedy", "action", "sci-fi", "social commentary"), ("1", "2", "3", "4", "5")]


def tiny_frozen(family: str, answer_mode: str = "choices") -> FrozenLLM:
    lm, tok = tiny_t5() if family == "t5" else tiny_llama()
    return FrozenLLM(lm, tok, "encoder-decoder" if family == "t5" else "decoder", "Personalize.",
                     answer_mode=answer_mode)


def soft_prompts(llm: FrozenLLM, n: int = 3) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(len(INPUTS), n, llm.hidden_size) * llm.embedding_rms  # [B, Q, D]


def expected_scores(llm: FrozenLLM, prompts: torch.Tensor) -> list[list[float]]:
    """Each label's log-likelihood, one full sequence at a time, straight from the transformers model."""
    lm, tok = llm.model, llm.tokenizer
    embed = lm.get_input_embeddings()
    scores = []
    for prompt, text, options in zip(prompts, INPUTS, CHOICES):
        input_ids = tok(text, add_special_tokens=False)["input_ids"]
        row = []
        for label in options:
            label_ids = tok(label, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            if llm.kind == "encoder-decoder":
                source = torch.cat([prompt, embed(torch.tensor(input_ids + [tok.eos_token_id]))])[None]
                logits = lm(inputs_embeds=source, labels=torch.tensor([label_ids])).logits[0]  # [L, V]
                logp = logits.log_softmax(-1)[torch.arange(len(label_ids)), label_ids]
            else:
                context = llm.prefix_ids, input_ids + llm.suffix_ids
                sequence = torch.cat([embed(torch.tensor(context[0])), prompt, embed(torch.tensor(context[1])),
                                      embed(torch.tensor(label_ids))])[None]
                logits = lm(inputs_embeds=sequence).logits[0]  # [L, V]
                first = sequence.shape[1] - len(label_ids)  # position of the first label token
                logp = logits[first - 1:-1].log_softmax(-1)[torch.arange(len(label_ids)), label_ids]
            row.append(float(logp.sum()))
        scores.append(row)
    return scores


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_choices_answers_the_label_the_llm_scores_highest(family):
    llm = tiny_frozen(family)
    prompts = soft_prompts(llm)
    expected = expected_scores(llm, prompts)
    with torch.no_grad():
        got = llm.score_choices(prompts, INPUTS, CHOICES)
    for row, want in zip(got, expected):
        assert row == pytest.approx(want, abs=1e-4)
    best = [options[max(range(len(row)), key=row.__getitem__)] for options, row in zip(CHOICES, expected)]
    assert llm.answer(prompts, INPUTS, CHOICES, max_new_tokens=4) == best


@pytest.mark.parametrize("family", ["llama", "t5"])
def test_choices_gives_the_same_answers_batched_as_one_at_a_time(family, monkeypatch):
    llm = tiny_frozen(family)
    prompts = soft_prompts(llm)
    choices = [CHOICES[0], None, CHOICES[2]]  # a free-text example in the middle is generated
    batched = llm.answer(prompts, INPUTS, choices, max_new_tokens=4)
    alone = [llm.answer(prompts[i:i + 1], INPUTS[i:i + 1], choices[i:i + 1], max_new_tokens=4) for i in range(3)]
    assert batched == [a[0] for a in alone]
    assert batched[1] == llm.generate(prompts[1:2], INPUTS[1:2], 4)[0] and batched[2] in CHOICES[2]
    # Rows split over several forward passes score the same as in one.
    whole = llm.score_choices(prompts, INPUTS, CHOICES)
    monkeypatch.setattr("model.CHOICE_ROWS", 3)
    split = llm.score_choices(prompts, INPUTS, CHOICES)
    assert all(a == pytest.approx(b, abs=1e-4) for a, b in zip(whole, split))


def test_generate_mode_ignores_the_choices():
    llm = tiny_frozen("llama", answer_mode="generate")
    prompts = soft_prompts(llm)
    assert llm.answer(prompts, INPUTS, CHOICES, 4) == llm.generate(prompts, INPUTS, 4)
    with pytest.raises(ValueError, match="answer: 'vote' is not one of 'generate', 'choices'"):
        tiny_frozen("llama", answer_mode="vote")


@pytest.mark.parametrize("method", ["twin", "mean", "none", "prompt_tuning"])
def test_every_llm_method_answers_with_its_own_soft_prompts_scored(method):
    if method in ("twin", "mean"):
        model = build_twin("llama", aggregator="qformer" if method == "twin" else "mean")
    else:
        lm, tok = tiny_llama()
        llm = FrozenLLM(lm, tok, "decoder", "Personalize.")
        model = NoPersonalization(llm) if method == "none" else PromptTuning(llm, 4)
    model.llm.answer_mode = "choices"
    model.eval()
    batch = model_batch()
    prompts = model.soft_prompts(batch)
    scores = model.llm.score_choices(prompts, batch.inputs, batch.choices)
    assert model.generate(batch, max_new_tokens=4) == [
        options[max(range(len(row)), key=row.__getitem__)] for options, row in zip(batch.choices, scores)]
    if method == "twin":  # the soft prompts matter: other prompts give other scores
        other = model.llm.score_choices(None, batch.inputs, batch.choices)
        assert other != scores


def test_answer_setting_is_checked_and_a_run_answers_only_labels(tmp_path, tiny_model_dirs, lamp_dir):
    problems = config_lib.find_problems(config_lib.TrainConfig(answer="best"))
    assert "answer: 'best' is not one of 'generate', 'choices'" in problems
    for tasks in (["LaMP-1", "LaMP-7"], ["LaMP-7"]):  # a free-text task always generates: nothing to refuse
        assert not [p for p in config_lib.find_problems(config_lib.TrainConfig(answer="choices", tasks=tasks))
                    if p.startswith("answer")]
    gaps = published_protocol_gaps(config_lib.TrainConfig(answer="choices"), "none")
    assert any(g.startswith("answer=choices scores the allowed labels") for g in gaps), "not LaMP's protocol"
    free_text = published_protocol_gaps(config_lib.TrainConfig(answer="choices", tasks=["LaMP-7"]), "none")
    assert not any(g.startswith("answer=") for g in free_text)  # LaMP-7 is generated either way
    assert run_script(tmp_path, tiny_model_dirs, lamp_dir, "--run_name=scored", "--model=none",
                      "--answer=choices") == 0
    outputs = [p["output"] for p in json.loads((tmp_path / "scored" / "predictions" / "LaMP-1_dev.json")
                                                .read_text())["golds"]]
    assert len(outputs) == 6 and set(outputs) <= set(get_task("LaMP-1").labels)
