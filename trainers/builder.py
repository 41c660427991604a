"""Build the parts of a method (LLM, encoders, each method's model) and the task data from a TrainConfig.

Which builder makes which method is trainers/methods.py's registry."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from tqdm.auto import tqdm

from trainers import config as config_lib
from trainers import model_registry
from dataset.collate import LaMPDataset
from dataset.embedded.lamp1 import ensure_embedded_data
from dataset.embedded.lamp7 import ensure_embedded_lamp7
from dataset.lamp import check_split_files, load_split
from dataset.retrieval import RagPrompter
from dataset.tasks import get_task
from dataset.embedded.lamp3 import ensure_embedded_lamp3
from dataset.numeric import NUM_FEATURES
from dataset.history_store import HistoryStore, store_identity
from dataset.memory import HistoryMemory
from model import (BehavioralEncoder, BehavioralTwin, FrozenLLM, InputEncoder, InputRule, NoPersonalization,
                   ProfileRule, PromptTuning, QFormer, RELEVANCE_FEATURES)
import pplug

DTYPES = {name: getattr(torch, name) for name in config_lib.choices(config_lib.LLMDtype)}  # llm_dtype -> torch


def build_history_encoder(cfg) -> BehavioralEncoder:
    """The frozen history encoder with its on-disk embedding cache."""
    cache_dir = cfg.resolved_cache_dir()
    pooling = cfg.pooling or model_registry.default_pooling(cfg.encoder)
    encoder_path = model_registry.resolve_model_path(cfg.encoder, cache_dir)
    backbone, tokenizer = model_registry.load_encoder(cfg.encoder, cache_dir)
    max_tokens = cfg.max_item_tokens
    if cfg.model == "pplug":  # PPlug's items are cut at the encoder's own limit unless told otherwise
        max_tokens = cfg.pplug_max_item_tokens or encoder_token_limit(backbone, tokenizer)
    identity = store_identity(cfg.encoder, model_registry.model_fingerprint(encoder_path), pooling, max_tokens)
    store = HistoryStore.open(cache_dir / "history_store", identity)
    return BehavioralEncoder(backbone, tokenizer, pooling, max_tokens, store, batch_tokens=cfg.history_batch_tokens)


def encoder_token_limit(backbone, tokenizer) -> int:
    """The most tokens an encoder reads: its tokenizer's limit, or its position embeddings'
    when the tokenizer sets none (transformers then reports a huge number)."""
    limits = [tokenizer.model_max_length, getattr(backbone.config, "max_position_embeddings", None)]
    return min(limit for limit in limits if limit and limit < 1_000_000)


def build_input_encoder(cfg, output: str, tune_layers: int | None = None, dropout: float = -1) -> InputEncoder:
    """A trainable copy of the encoder (its top `tune_layers` blocks train; default cfg.tune_layers),
    with its dropouts at `dropout` (-1 = the checkpoint's own)."""
    # It starts from the history encoder's weights but trains its top layers, so it is a copy.
    backbone, tokenizer = model_registry.load_encoder(cfg.encoder, cfg.resolved_cache_dir())
    pooling = cfg.pooling or model_registry.default_pooling(cfg.encoder)
    layers = cfg.tune_layers if tune_layers is None else tune_layers
    return InputEncoder(backbone, tokenizer, layers, cfg.max_query_tokens, pooling, output, cfg.input_cache_mb,
                        dropout)


def build_llm(cfg) -> FrozenLLM:
    model, tokenizer, kind = model_registry.load_llm(cfg.llm, cfg.resolved_cache_dir(), DTYPES[cfg.llm_dtype],
                                                     cfg.trust_remote_code, cfg.llm_attention)
    if cfg.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return FrozenLLM(model, tokenizer, kind, cfg.instruction, cfg.max_input_tokens, cfg.max_target_tokens,
                     cfg.prompt_position, answer_mode=cfg.answer)


# --- one builder per method (trainers/methods.py names them). Trainable weights are
# initialised right after torch.manual_seed(cfg.seed), so they depend on the seed alone,
# not on what was loaded before.

def build_frozen_llm_alone(cfg) -> NoPersonalization:
    """none, and rag (which differs in its inputs, not its model)."""
    return NoPersonalization(build_llm(cfg))


def build_prompt_tuning(cfg) -> PromptTuning:
    llm = build_llm(cfg)
    torch.manual_seed(cfg.seed)
    return PromptTuning(llm, cfg.num_queries)


def build_pplug(cfg) -> pplug.PPlug:
    llm, behavioral = build_llm(cfg), build_history_encoder(cfg)
    whole = cfg.pplug_tune_layers < 0  # PPlug's code trains all of its input encoder
    input_encoder = build_input_encoder(cfg, "pooled", tune_layers=0 if whole else cfg.pplug_tune_layers)
    if whole:
        pplug.train_whole(input_encoder)
    torch.manual_seed(cfg.seed)
    instruction = pplug.query_instruction(cfg.encoder) if cfg.pplug_query_instruction else ""
    return pplug.PPlug(behavioral, input_encoder, llm, cfg.pplug_rescale, instruction)


def build_twin(cfg, aggregator: str = "qformer") -> BehavioralTwin:
    """Behavioral Twin; aggregator="mean" is the `mean` ablation."""
    llm, behavioral = build_llm(cfg), build_history_encoder(cfg)
    input_encoder = build_input_encoder(cfg, cfg.input_output, dropout=cfg.input_dropout)
    hidden = behavioral.hidden_size
    if hidden % cfg.qformer_heads:
        raise ValueError(f"qformer_heads: {cfg.qformer_heads} does not divide the encoder width {hidden}")
    torch.manual_seed(cfg.seed)
    qformer = QFormer(hidden, cfg.num_queries, cfg.qformer_layers, cfg.qformer_heads, cfg.qformer_dropout,
                      cfg.qformer_norm_first, cfg.qformer_init,
                      item_features=RELEVANCE_FEATURES * cfg.relevance_signals + NUM_FEATURES * cfg.numeric_signals,
                      causal_queries=cfg.nested_queries)
    return BehavioralTwin(behavioral, input_encoder, qformer, llm, aggregator=aggregator,
                          memory=HistoryMemory(cfg.memory_top_n) if cfg.memory_top_n else None,
                          relevance=cfg.relevance_signals, numeric=cfg.numeric_signals,
                          nested_queries=cfg.nested_queries, inference_queries=cfg.inference_queries,
                          # The label heads only train: an evaluation builds none, so it can
                          # evaluate a checkpoint on any of the tasks (checkpoint.load_weights).
                          label_loss=0 if cfg.mode == "eval_only" else cfg.label_loss,
                          task_labels={t: get_task(t).labels for t in cfg.tasks},
                          word_prompts=cfg.word_prompts if aggregator == "qformer" else 0, word_loss=cfg.word_loss)


def build_mean(cfg) -> BehavioralTwin:
    return build_twin(cfg, aggregator="mean")


def build_profile_rule(cfg) -> ProfileRule:
    return ProfileRule(build_history_encoder(cfg), cfg.rule_k)


def build_input_rule(cfg) -> InputRule:
    return InputRule(build_history_encoder(cfg))


def rag_prompter(cfg, tokenizer) -> RagPrompter:
    """The `rag` baseline's prompt writer for `cfg`; tokenizer: the LLM's."""
    encoder = build_history_encoder(cfg) if cfg.retriever == "dense" else None
    return RagPrompter(tokenizer, cfg.rag_k, cfg.max_input_tokens, encoder)


def retrieval_augmented(cfg, sets: dict, tokenizer) -> dict:
    """The `rag` baseline's data (sets as load_datasets reads them): each question rewritten with
    its user's top `rag_k` items of the whole profile, as LaMP ranks them (not only the last
    `max_history` items that load_datasets keeps for the methods that read the history); tokenizer: the LLM's."""
    prompter = rag_prompter(cfg, tokenizer)
    out = {}
    for name, (dataset, golds) in sets.items():
        whole = tqdm(dataset.examples.keeping_last(0), desc=f"retrieving for {name} ({cfg.retriever})", leave=False)
        # Only the rewritten inputs are kept: the examples stay a lazy split whose profiles
        # (their last max_history items, as every method reads them) are read when asked for.
        examples = dataset.examples.with_inputs([prompter(dataset.task, example) for example in whole])
        out[name] = (LaMPDataset(examples, dataset.task, cfg.max_history, numeric=cfg.numeric_signals), golds)
    return out


# Tasks that data_dir=embedded can generate: a classification task, a generation task, and
# a rating task whose answer only the items' dates reveal (for numeric_signals).
EMBEDDED_TASKS = {"LaMP-1": ensure_embedded_data, "LaMP-3": ensure_embedded_lamp3, "LaMP-7": ensure_embedded_lamp7}


def data_root(cfg) -> Path:
    """The LaMP-layout folder to read: `data_dir`, or the generated embedded tasks."""
    if cfg.data_dir != "embedded":
        return Path(cfg.data_dir)
    root = cfg.resolved_cache_dir() / "data" / f"embedded-seed{cfg.embedded_seed}"
    for name in cfg.tasks:
        ensure = EMBEDDED_TASKS.get(get_task(name).name)
        if ensure is None:
            raise FileNotFoundError(f"tasks: there is no embedded version of {name} (embedded tasks: "
                                    f"{', '.join(EMBEDDED_TASKS)}); pass --data_dir=<LaMP folder> for real LaMP data")
        ensure(root, seed=cfg.embedded_seed)
    return root


def load_datasets(cfg, split: str, limit: int = 0) -> dict[str, tuple[LaMPDataset, dict[str, str]]]:
    """task name -> (dataset, {id: gold}) for one split; golds are empty when hidden."""
    root = data_root(cfg)
    # Every task's files are checked before any is read, so one error names all the
    # missing tasks (with the download command) instead of failing after loading the others.
    check_split_files(root, cfg.tasks, split)
    out = {}
    for name in cfg.tasks:
        task = get_task(name)
        examples = load_split(root, name, split, task.profile_fields, task.labels, cfg.resolved_cache_dir())
        examples = examples.keeping_last(cfg.max_history)  # all a method reads (rag: retrieval_augmented)
        if limit:
            examples = examples[:limit]
        golds = examples.golds()
        render = None  # the task's own rendering (TaskSpec.profile_text)
        if cfg.model == "pplug" and cfg.pplug_history_text == "pplug":
            render = functools.partial(pplug.history_text, task.name)
        out[name] = (LaMPDataset(examples, task, cfg.max_history, numeric=cfg.numeric_signals, render=render), golds)
    return out
