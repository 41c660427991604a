"""What the tests build, in one module (no test imports another test).

Tiny models built from configs in code: BERT encoders, Llama/Qwen and T5 LLMs. Their
tokenizer is a small byte-level BPE trained here in milliseconds, so no test needs a
download. Weights are random but seeded, so tests are deterministic.

From them: a tiny Behavioral Twin and a batch for it (`build_twin`, `batch`), a trainer on
generated LaMP-1 (`make_trainer`), and train.py runs on the tiny model folders
(`script_args`, `run_script`; the folders and the data are conftest.py's fixtures).
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from accelerate import Accelerator
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration)

import train
from dataset.collate import LaMPDataset
from dataset.lamp import load_split
from dataset.tasks import get_task
from model import RELEVANCE_FEATURES, BehavioralEncoder, BehavioralTwin, FrozenLLM, InputEncoder, QFormer
from trainers import config as config_lib
from trainers.trainer import TaskSequentialTrainer

ROOT = Path(__file__).resolve().parents[1]
# Child processes run single-threaded: faster on a shared 2-core machine, and bit-for-bit repeatable.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
CHILD_TIMEOUT = 300


def run_forked(target, args_per_process: list[tuple], timeout: float = 120) -> None:
    """Run target(*args) in one forked process per args tuple, all at once; each must exit 0."""
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=target, args=args) for args in args_per_process]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=timeout)
        assert process.exitcode == 0, f"{target.__name__} in {process.name} exited with {process.exitcode}"


def free_port() -> int:
    """A free local TCP port, for a child's rendezvous (torchrun, accelerate launch)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

CORPUS = [
    "For an author who has written the paper with the title, which reference is related?",
    "Just answer with [1] or [2] without explanation. [1]: [2]:",
    "learning graph neural networks for protein folding and galaxy surveys",
    "query optimization in distributed databases with learned cost models",
    "a position paper on reproducible research software and shared evaluation",
    "the user writes short titles about robots, climate, music and language",
]


@functools.lru_cache(maxsize=None)
def _tokenizer_json(chat: bool) -> str:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "</s>", "<s>"] + (["<|im_start|>", "<|im_end|>"] if chat else [])
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    return tok.to_str()


CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def tiny_tokenizer(chat: bool = False) -> PreTrainedTokenizerFast:
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(chat)),
                                  pad_token="<pad>", eos_token="<|im_end|>" if chat else "</s>", bos_token="<s>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_bert(hidden: int = 32, layers: int = 4, seed: int = 0):
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=2 * hidden, max_position_embeddings=512, pad_token_id=tok.pad_token_id)
    return BertModel(config, add_pooling_layer=False).eval(), tok


def tiny_llama(hidden: int = 48, layers: int = 2, seed: int = 0, family: str = "llama", chat: bool = True):
    torch.manual_seed(seed)
    tok = tiny_tokenizer(chat=chat)
    common = dict(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
                  tie_word_embeddings=True, initializer_range=0.3)
    if family == "qwen":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.eval(), tok


def tiny_t5(hidden: int = 32, layers: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    tok = tiny_tokenizer()
    config = T5Config(vocab_size=len(tok), d_model=hidden, d_kv=8, d_ff=2 * hidden, num_layers=layers,
                      num_decoder_layers=layers, num_heads=4, pad_token_id=tok.pad_token_id,
                      eos_token_id=tok.eos_token_id, decoder_start_token_id=tok.pad_token_id)
    return T5ForConditionalGeneration(config).eval(), tok


# ----------------------------------------------------------------------------- a tiny twin and its batch

HISTORY = [["learning graph neural networks", "galaxy surveys", "query optimization"],
           ["robots and climate"],
           ["music and language", "protein folding"]]
INPUTS = ["For an author who has written the paper with the title, which reference is related? [1]: a [2]: b",
          "which reference is related?", "a position paper"]
TARGETS = ["[1]", "[2]", "[1]"]


def batch(history=HISTORY, inputs=INPUTS, targets=TARGETS, tasks=None):
    """What dataset.collate.collate makes of these examples."""
    tasks = tasks or ["LaMP-1"] * len(inputs)
    return SimpleNamespace(history=history, inputs=inputs, targets=targets, task=tasks,
                           query=[get_task(t).retrieval_query(x) for t, x in zip(tasks, inputs)],
                           choices=[get_task(t).labels for t in tasks],
                           candidates=[get_task(t).candidates(x) for t, x in zip(tasks, inputs)])


def build_twin(llm="llama", queries=4, aggregator="qformer", store=None, output="tokens", label_loss=0.0,
               relevance=False, word_prompts=0, word_loss=0.0):
    history_bert, tok = tiny_bert(seed=1)
    input_bert, input_tok = tiny_bert(seed=1)
    if llm == "t5":
        lm, lm_tok = tiny_t5()
        kind = "encoder-decoder"
    else:
        lm, lm_tok = tiny_llama(family=llm)
        kind = "decoder"
    torch.manual_seed(0)
    return BehavioralTwin(BehavioralEncoder(history_bert, tok, "mean", 32, store),
                          InputEncoder(input_bert, input_tok, tune_layers=2, max_length=64, output=output),
                          QFormer(32, queries, num_layers=2, heads=4, dropout=0.1,
                                  item_features=RELEVANCE_FEATURES if relevance else 0),
                          FrozenLLM(lm, lm_tok, kind, "Personalize."), aggregator=aggregator, relevance=relevance,
                          label_loss=label_loss, task_labels={"LaMP-1": ("[1]", "[2]"), "LaMP-4": None},
                          word_prompts=word_prompts, word_loss=word_loss)


# ----------------------------------------------------------------------------- training on generated LaMP-1

def datasets(root, split, limit):
    task = get_task("LaMP-1")
    examples = load_split(root, "LaMP-1", split, task.profile_fields)[:limit]
    return {"LaMP-1": (LaMPDataset(examples, task, max_history=6), {e.id: e.output for e in examples})}


def make_trainer(run_dir, lamp_dir, **overrides):
    cfg = config_lib.TrainConfig(**{"batch_size": 4, "epochs": 2, "save_every": 2, "lr": 3e-3, "log_every": 1,
                                    "eval_batch_size": 8, "controls": False, **overrides})
    torch.manual_seed(0)
    return TaskSequentialTrainer(cfg, build_twin("llama"), Accelerator(cpu=True), run_dir,
                                 datasets(lamp_dir, "train", 20), datasets(lamp_dir, "dev", 8))


def trained_weights(trainer):
    return {k: v.clone() for k, v in trainer.raw_model.trainable_state_dict().items()}


class Stop(Exception):
    pass


def fit_until_saved(trainer, monkeypatch, step: int) -> None:
    """Run trainer.fit() and stop it, as a crash would, right after the checkpoint of `step`."""
    real_save = TaskSequentialTrainer.save

    def save_then_crash(self, optimizer, scheduler, position):
        real_save(self, optimizer, scheduler, position)
        if position["global_step"] == step:
            raise Stop
    monkeypatch.setattr(TaskSequentialTrainer, "save", save_then_crash)
    with pytest.raises(Stop):
        trainer.fit()
    monkeypatch.setattr(TaskSequentialTrainer, "save", real_save)


def script_args(tmp_path, tiny_model_dirs, lamp_dir, *extra) -> list[str]:
    """train.py arguments for a small run on the tiny models; later flags override earlier ones."""
    return [f"--encoder={tiny_model_dirs / 'bert'}", f"--llm={tiny_model_dirs / 'llama'}",
            f"--data_dir={lamp_dir}", f"--out_dir={tmp_path}", f"--cache_dir={tmp_path / 'cache'}",
            "--qformer_heads=4", "--batch_size=4", "--max_train_examples=12", "--max_eval_examples=6",
            "--epochs=1", "--save_every=0", "--log_every=1", *extra]


def run_script(tmp_path, tiny_model_dirs, lamp_dir, *extra):
    return train.main(script_args(tmp_path, tiny_model_dirs, lamp_dir, *extra))
