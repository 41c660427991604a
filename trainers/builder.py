"""Build a BehavioralTwin and the task data from a TrainConfig."""

from __future__ import annotations

from pathlib import Path

import torch

import model_registry
from dataset.collate import LaMPDataset
from dataset.embedded import ensure_embedded_data
from dataset.embedded_style import ensure_embedded_lamp7
from dataset.lamp import check_split_files, load_split
from dataset.tasks import get_task
from history_store import HistoryStore, store_identity
from model import BehavioralEncoder, BehavioralTwin, FrozenLLM, InputEncoder, QFormer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(cfg) -> BehavioralTwin:
    """Load the encoders and the LLM named in `cfg` and assemble the model."""
    cache_dir = cfg.resolved_cache_dir()
    pooling = cfg.pooling or model_registry.default_pooling(cfg.encoder)
    encoder_path = model_registry.resolve_model_path(cfg.encoder, cache_dir)

    history_backbone, tokenizer = model_registry.load_encoder(cfg.encoder, cache_dir)
    identity = store_identity(cfg.encoder, model_registry.model_fingerprint(encoder_path), pooling,
                              cfg.max_item_tokens)
    store = HistoryStore.open(cache_dir / "history_store", identity)
    behavioral = BehavioralEncoder(history_backbone, tokenizer, pooling, cfg.max_item_tokens, store)

    # The input encoder starts from the same weights but trains its top layers, so it is a copy.
    input_backbone, input_tokenizer = model_registry.load_encoder(cfg.encoder, cache_dir)
    input_encoder = InputEncoder(input_backbone, input_tokenizer, cfg.tune_layers, cfg.max_query_tokens,
                                 pooling, cfg.input_output)

    llm_model, llm_tokenizer, kind = model_registry.load_llm(cfg.llm, cache_dir, DTYPES[cfg.llm_dtype],
                                                             cfg.trust_remote_code)
    if cfg.gradient_checkpointing:
        llm_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    llm = FrozenLLM(llm_model, llm_tokenizer, kind, cfg.instruction, cfg.max_input_tokens, cfg.max_target_tokens)

    hidden = behavioral.hidden_size
    if hidden % cfg.qformer_heads:
        raise ValueError(f"qformer_heads: {cfg.qformer_heads} does not divide the encoder width {hidden}")
    torch.manual_seed(cfg.seed)  # the trainable init depends on the seed alone
    qformer = QFormer(hidden, cfg.num_queries, cfg.qformer_layers, cfg.qformer_heads, cfg.qformer_dropout,
                      cfg.qformer_norm_first, cfg.qformer_init)
    return BehavioralTwin(behavioral, input_encoder, qformer, llm,
                          aggregator="mean" if cfg.model == "mean" else "qformer")


# Tasks that data_dir=embedded can generate: a classification and a generation task.
EMBEDDED_TASKS = {"LaMP-1": ensure_embedded_data, "LaMP-7": ensure_embedded_lamp7}


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
        examples = load_split(root, name, split, task.profile_fields)
        if limit:
            examples = examples[:limit]
        golds = {e.id: e.output for e in examples if e.output is not None}
        out[name] = (LaMPDataset(examples, task, cfg.max_history), golds)
    return out
