"""PPlug at its authors' protocol by default: its own history text, BGE's query instruction,
the whole input encoder trained, items cut at the encoder's limit, the T5 constants; each
a setting where the project may differ."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import pplug
from dataset.tasks import get_task
from model import BehavioralEncoder, FrozenLLM, InputEncoder
from tiny_models import tiny_bert, tiny_llama, tiny_t5
from trainers import builder
from trainers.config import ConfigError, TrainConfig, resolve_config
from trainers.methods import build_model

ITEMS = {
    "LaMP-1": ({"title": "Deep nets", "abstract": "We study nets."}, "Deep nets We study nets."),
    "LaMP-2": ({"description": "Two hitmen talk.", "tag": "dark comedy"}, "Two hitmen talk."),
    "LaMP-3": ({"text": "Works fine.", "score": "4"}, "Works fine."),
    "LaMP-4": ({"text": "The vote was postponed.", "title": "Council delays"},
               "The vote was postponed. Council delays"),
    "LaMP-5": ({"title": "Parsing", "abstract": "A fast parser."}, "Parsing A fast parser."),
    "LaMP-7": ({"text": "coffee first"}, "coffee first"),
}


@pytest.mark.parametrize("task", sorted(ITEMS))
def test_history_text_is_pplugs_own_without_the_users_labels(task):
    item, expected = ITEMS[task]
    assert pplug.history_text(task, item) == expected
    assert pplug.history_text(task.replace("-", "_"), item) == expected


def test_the_pplug_run_reads_pplugs_history_text_and_twin_its_own(tiny_model_dirs, lamp_dir):
    settings = dict(data_dir=str(lamp_dir), encoder=str(tiny_model_dirs / "bert"), llm=str(tiny_model_dirs / "llama"))
    dataset, _ = builder.load_datasets(TrainConfig(model="pplug", **settings), "dev", limit=2)["LaMP-1"]
    profile = dataset.examples[0].profile
    assert dataset[0].history[-1] == f"{profile[-1]['title']} {profile[-1]['abstract']}"
    twin, _ = builder.load_datasets(TrainConfig(model="twin", **settings), "dev", limit=2)["LaMP-1"]
    assert twin[0].history[-1] == get_task("LaMP-1").profile_text(profile[-1])
    same_text = TrainConfig(model="pplug", pplug_history_text="twin", **settings)
    same, _ = builder.load_datasets(same_text, "dev", 2)["LaMP-1"]
    assert same[0].history == twin[0].history


def small_pplug(llm_family: str, rescale: str = "auto", instruction: str = "") -> pplug.PPlug:
    lm, tok = tiny_t5() if llm_family == "t5" else tiny_llama()
    llm = FrozenLLM(lm, tok, "encoder-decoder" if llm_family == "t5" else "decoder", "Personalize.")
    history_bert, history_tok = tiny_bert(seed=1)
    input_bert, input_tok = tiny_bert(seed=1)
    torch.manual_seed(0)
    return pplug.PPlug(BehavioralEncoder(history_bert, history_tok, "cls", 64),
                       InputEncoder(input_bert, input_tok, 0, 64, "cls", "pooled"), llm, rescale, instruction)


BATCH = SimpleNamespace(history=[["graph neural networks", "galaxy surveys"]], task=["LaMP-7"],
                        inputs=["Paraphrase the following tweet without any explanation before or after it: hi there"],
                        query=["hi there"])


def test_bge_query_instruction_goes_before_every_query():
    instruction = "Represent this sentence for searching relevant passages:"
    assert pplug.query_instruction("BAAI/bge-base-en-v1.5") == instruction
    assert pplug.query_instruction("minilm") == ""
    model = small_pplug("llama", instruction=pplug.BGE_QUERY_INSTRUCTION).eval()
    seen = []
    original = model.input_encoder.forward
    model.input_encoder.forward = lambda texts: seen.extend(texts) or original(texts)
    model.soft_prompts(BATCH)
    assert seen == ["Represent this sentence for searching relevant passages:hi there"]


def test_t5_scale_is_the_codes_constants_and_auto_picks_them_for_encoder_decoders():
    assert small_pplug("t5").rescale == "constants" and small_pplug("llama").rescale == "rms"
    with torch.no_grad():
        raw = small_pplug("t5", "none").eval().soft_prompts(BATCH)  # [1, 2, D]: instruction, persona
        scaled = small_pplug("t5", "constants").eval().soft_prompts(BATCH)
        rms = small_pplug("t5", "rms").eval().soft_prompts(BATCH)
    assert torch.allclose(scaled[:, 0], raw[:, 0] * 539.9738 / 7)
    assert torch.allclose(scaled[:, 1], raw[:, 1] * 539.9738)
    model = small_pplug("t5", "rms")
    assert torch.allclose(rms.pow(2).mean(-1).sqrt(), torch.full((1, 2), model.llm.embedding_rms), rtol=1e-4)
    with pytest.raises(ValueError, match="pplug_rescale"):
        small_pplug("t5", "bogus")


def test_builder_trains_the_whole_input_encoder_and_cuts_items_at_the_encoders_limit(tiny_model_dirs, tmp_path):
    settings = dict(model="pplug", encoder=str(tiny_model_dirs / "bert"), llm=str(tiny_model_dirs / "llama"),
                    cache_dir=str(tmp_path))
    model = build_model(TrainConfig(**settings))
    assert all(p.requires_grad for p in model.input_encoder.backbone.parameters()), "embeddings included"
    assert model.behavioral_encoder.max_length == 512  # tiny BERT: 512 position embeddings, no tokenizer limit
    assert model.query_instruction == ""  # not a BGE encoder
    partial = build_model(TrainConfig(pplug_tune_layers=2, pplug_max_item_tokens=128, **settings))
    tuned = {name.split(".")[2] for name, p in partial.input_encoder.backbone.named_parameters()
             if p.requires_grad and name.startswith("encoder.layer.")}
    assert tuned == {"2", "3"} and not partial.input_encoder.backbone.embeddings.word_embeddings.weight.requires_grad
    assert partial.behavioral_encoder.max_length == 128


def test_pplug_settings_are_checked():
    for bad, fragment in (({"pplug_rescale": "yes"}, "pplug_rescale"),
                          ({"pplug_tune_layers": "-2"}, "pplug_tune_layers"),
                          ({"pplug_history_text": "labels"}, "pplug_history_text"),
                          ({"pplug_max_item_tokens": "-1"}, "pplug_max_item_tokens")):
        with pytest.raises(ConfigError, match=fragment):
            resolve_config(overrides=bad)
