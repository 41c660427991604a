"""Tiny models built from configs in code, for tests: BERT encoders, Llama/Qwen and T5 LLMs.

Their tokenizer is a small byte-level BPE trained here in milliseconds, so no test needs
a download. Weights are random but seeded, so tests are deterministic.
"""

from __future__ import annotations

import functools

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast,
                          Qwen2Config, Qwen2ForCausalLM, T5Config, T5ForConditionalGeneration)

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
