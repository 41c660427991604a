"""The run configuration: one typed dataclass, layered defaults <- YAML <- --key=value.

Every field carries a docstring (litgpt style). `resolve_config` merges the layers and
`validate` reports every problem at once, so a researcher fixes a config in one go.
The resolved config is saved with every run as config.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

MODES = ("sequential", "joint", "eval_only")
MODELS = ("twin", "pplug", "none", "rag", "prompt_tuning", "mean")
RETRIEVERS = ("bm25", "dense")


class ConfigError(ValueError):
    """A bad setting; the message lists every problem found."""


@dataclass
class TrainConfig:
    # --- what to run
    mode: str = "sequential"
    """'sequential' trains each task in turn (evaluating after each), 'joint' trains one model on all
    tasks mixed, 'eval_only' loads `resume_from` and evaluates."""
    resume_from: str = ""
    """A run folder (saved/<run>, resumes from its latest checkpoint) or one checkpoint folder.
    Training continues exactly where it stopped; with mode=eval_only the weights are evaluated."""
    run_name: str = ""
    """Folder name under `out_dir`; empty = '<model>-<timestamp>'. Resuming reuses the resumed run's folder."""
    out_dir: str = "saved"
    """Where run folders are written."""
    seed: int = 0
    """Seeds model init, data order and dropout."""

    # --- data
    tasks: list[str] = field(default_factory=lambda: ["LaMP-1"])
    """Task names, e.g. ['LaMP-1']; on the command line --tasks=LaMP-1,LaMP-3."""
    data_dir: str = "embedded"
    """Folder in LaMP's layout (DATA_DIR/LaMP_<i>/{split}_questions.json ...), or 'embedded' for the
    generated offline task (written once under `cache_dir`)."""
    embedded_seed: int = 0
    """Seed of the generated embedded task."""
    train_split: str = "train"
    """Split to train on."""
    eval_split: str = "dev"
    """Split to evaluate on (its outputs file must exist to get metrics)."""
    max_history: int = 512
    """Most recent profile items given to the model per example (PPlug also keeps the last 512); 0 = all."""
    max_train_examples: int = 0
    """Use only the first N training examples per task (0 = all); for quick runs."""
    max_eval_examples: int = 0
    """Evaluate on the first N examples per task (0 = all)."""

    # --- models
    model: str = "twin"
    """'twin' (Behavioral Twin), or a baseline on the same LLM (SPEC section 3): 'pplug' (pplug.py),
    'none' (frozen LLM, bare input), 'rag' (top-k profile items in the prompt), 'prompt_tuning'
    (shared soft prompts, no history), 'mean' (history embeddings averaged instead of the Q-Former)."""
    models: list[str] = field(default_factory=list)
    """Compare several models: each is trained and evaluated on the same tasks, data and settings,
    `seeds` times, and saved/<run>/comparison.{json,md,png} gather the results. Empty = one run of `model`."""
    seeds: int = 1
    """With `models`: runs per model, with seeds seed, seed+1, ...; the table gives mean and std."""
    rag_k: int = 4
    """Profile items the `rag` baseline writes into the prompt (LaMP's protocol: 4)."""
    retriever: str = "bm25"
    """How `rag` ranks profile items: 'bm25' or 'dense' (cosine of the history encoder's embeddings)."""
    pplug_augment: int = 0
    """PPlug's training augmentation: extra copies of each example with random history items dropped
    (its code uses 10; 0 = off, as each copy costs a full pass over the data)."""
    pplug_rescale: bool = True
    """Rescale PPlug's instruction and persona vectors to the LLM's token-embedding RMS."""
    encoder: str = "minilm"
    """History/input encoder: embedded alias ('minilm'), local folder, or hub name already in the local cache
    (e.g. BAAI/bge-base-en-v1.5)."""
    pooling: str = ""
    """History item pooling, 'cls' or 'mean'; empty = the encoder's own (cls for BGE, mean for MiniLM)."""
    llm: str = "smollm2-135m"
    """Frozen LLM: embedded alias ('smollm2-135m'), local folder, or cached hub name (google/flan-t5-xxl, Qwen/...)."""
    llm_dtype: str = "float32"
    """Dtype the frozen LLM is loaded in: float32, bfloat16 or float16."""
    trust_remote_code: bool = False
    """Allow model folders to run their own Python code. Off: a model folder never executes code."""
    cache_dir: str = ""
    """Converted embedded models and history-embedding caches; empty = $BEHAVIORAL_TWIN_CACHE or
    ~/.cache/behavioral_twin."""
    instruction: str = "Personalize the answer to the user whose history the first vectors encode."
    """System/instruction text placed before the soft prompts (decoder-only LLMs)."""

    # --- architecture
    prompt_position: str = "before_input"
    """Where soft prompts go in the LLM input: 'before_input' ([instruction; prompts; input], SPEC) or
    'after_input' ([instruction; input; prompts]: in a decoder-only LLM they then sit right before
    the answer, and the frozen LLM needs no gradient through the input positions)."""
    num_queries: int = 8
    """Learnable Q-Former queries = soft prompt tokens given to the LLM."""
    qformer_layers: int = 2
    """Q-Former layers (each: history cross-attn, input cross-attn, self-attn, feed-forward)."""
    qformer_heads: int = 8
    """Attention heads in the Q-Former; must divide the encoder width."""
    qformer_dropout: float = 0.1
    """Dropout inside the Q-Former."""
    qformer_norm_first: bool = False
    """Pre-norm Q-Former layers (False = post-norm, as BERT and BLIP-2)."""
    qformer_init: str = "aligned"
    """'aligned' starts each Q-Former layer as a similarity search of the input for the user's
    interests (see model.QFormer); 'random' is BLIP-2's init."""
    tune_layers: int = 4
    """Top layers of the input encoder that train (0 = frozen input encoder)."""
    input_output: str = "tokens"
    """Input encoder output the Q-Former attends to: 'tokens' (token states) or 'pooled' (one vector, as the seed)."""
    max_item_tokens: int = 128
    """Token budget of one history item in the history encoder."""
    max_query_tokens: int = 256
    """Token budget of the query in the input encoder."""
    max_input_tokens: int = 256
    """Token budget of the query text in the LLM (LaMP's protocol uses 256)."""
    max_target_tokens: int = 64
    """Token budget of a training target."""

    # --- optimization
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to norms and biases)."""
    warmup_ratio: float = 0.05
    """Fraction of the optimizer steps spent in linear warm-up, then linear decay to 0."""
    epochs: int = 1
    """Passes over the training data (per task in sequential mode)."""
    batch_size: int = 8
    """Examples per process per micro-batch."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    mixed_precision: str = "no"
    """accelerate mixed precision: 'no', 'bf16' or 'fp16'."""
    gradient_checkpointing: bool = False
    """Recompute the frozen LLM's activations in the backward pass (less memory, more time)."""

    # --- evaluation, logging, checkpoints
    eval_batch_size: int = 16
    """Examples per process per evaluation batch."""
    num_beams: int = 1
    """Beam search width at evaluation (LaMP's protocol uses 4)."""
    controls: bool = True
    """Also evaluate two history-blind controls: the frozen LLM on the bare input, and the trained
    model given another user's history."""
    log_every: int = 10
    """Optimizer steps between loss lines."""
    save_every: int = 100
    """Optimizer steps between checkpoints (0 = only at the end of each epoch)."""
    keep_checkpoints: int = 2
    """Checkpoints kept per run (older ones are deleted after a newer one is complete)."""

    # --- roadmap: long-term memory, numeric signals, adaptive queries
    memory_top_n: int = 0
    """Long-term memory: only the N history items most similar to the query (cosine, in a per-user FAISS
    index over the cached embeddings) reach the Q-Former; 0 = every item. The index holds the last
    `max_history` items (set max_history=0 to index them all)."""
    numeric_signals: bool = False
    """Give the Q-Former each history item's numeric fields (rating, date, count; the task's
    `numeric_fields`), normalized and projected, through a cross-attention of their own."""
    nested_queries: bool = False
    """Train so that any prefix of the queries works: causal self-attention among the queries, and each
    training example keeps a random number 1..num_queries of them (nested query dropout)."""
    inference_queries: str = "all"
    """Queries used outside training: 'all', a number K (the first K), or 'history' (per example
    ceil(log2(P + 1)) for the P items the Q-Former reads, at most num_queries; needs nested_queries)."""

    def resolved_cache_dir(self) -> Path:
        raw = self.cache_dir or os.environ.get("BEHAVIORAL_TWIN_CACHE") or "~/.cache/behavioral_twin"
        return Path(raw).expanduser()


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def field_docs() -> dict[str, str]:
    """Each field's docstring, read from this file's source (for --help)."""
    import ast
    import inspect
    body = ast.parse(inspect.getsource(TrainConfig)).body[0].body
    return {node.target.id: " ".join(nxt.value.value.split())
            for node, nxt in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)}


def _convert(name: str, value, problems: list[str], origin: str):
    """Coerce a YAML or command-line value to the field's type."""
    kind = typing.get_type_hints(TrainConfig)[name]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true/false, got {value!r}")
        if kind is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if kind is float:
            return float(value)
        if kind == list[str]:
            items = value if isinstance(value, list) else str(value).split(",")
            return [str(v).strip() for v in items if str(v).strip()]
        return "" if value is None else str(value)
    except (TypeError, ValueError) as e:
        problems.append(f"{origin}: {name}: {e}")
        return None


def parse_overrides(args: list[str]) -> tuple[str | None, dict[str, str]]:
    """['--config', 'x.yaml', '--lr=3e-4'] -> ('x.yaml', {'lr': '3e-4'})."""
    config_file, overrides, problems = None, {}, []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            config_file, i = args[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            config_file = arg.split("=", 1)[1]
        elif arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            overrides[key.replace("-", "_")] = value
        else:
            problems.append(f"argument {arg!r}: expected --key=value or --config FILE.yaml")
        i += 1
    if problems:
        raise ConfigError("\n".join(problems))
    return config_file, overrides


def resolve_config(defaults: dict | None = None, config_file: str | None = None,
                   overrides: dict | None = None) -> TrainConfig:
    """dataclass defaults <- `defaults` (train.py's editable block) <- YAML file <- overrides."""
    problems: list[str] = []
    values: dict = {}
    layers = [("train.py defaults", defaults or {})]
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {config_file} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must be a mapping of setting: value")
        layers.append((f"config file {config_file}", loaded))
    layers.append(("command line", overrides or {}))
    for origin, layer in layers:
        for key, value in layer.items():
            if key not in FIELDS:
                close = [n for n in FIELDS if n.startswith(key[:3])]
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                problems.append(f"{origin}: unknown setting {key!r}{hint}")
                continue
            converted = _convert(key, value, problems, origin)
            if converted is not None:
                values[key] = converted
    cfg = TrainConfig(**values)
    problems += find_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))
    return cfg


def validate(cfg: TrainConfig) -> None:
    """Raise one ConfigError listing every problem of `cfg`."""
    problems = find_problems(cfg)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def find_problems(cfg: TrainConfig) -> list[str]:
    p: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    need(cfg.mode in MODES, f"mode: {cfg.mode!r} is not one of {', '.join(MODES)}")
    need(cfg.model in MODELS, f"model: {cfg.model!r} is not one of {', '.join(MODELS)}")
    unknown_models = [m for m in cfg.models if m not in MODELS]
    need(not unknown_models, f"models: {unknown_models} are not among {', '.join(MODELS)}")
    need(cfg.prompt_position in ("before_input", "after_input"),
         f"prompt_position: {cfg.prompt_position!r} must be 'before_input' or 'after_input'")
    need(cfg.retriever in RETRIEVERS, f"retriever: {cfg.retriever!r} must be one of {', '.join(RETRIEVERS)}")
    need(not (cfg.models and cfg.mode == "eval_only"), "models: a comparison trains each model; use mode=sequential or joint")
    need(cfg.mode != "eval_only" or bool(cfg.resume_from), "resume_from: mode=eval_only needs a checkpoint to load")
    need(bool(cfg.tasks), "tasks: give at least one task, e.g. --tasks=LaMP-1")
    need(cfg.pooling in ("", "cls", "mean"), f"pooling: {cfg.pooling!r} must be '', 'cls' or 'mean'")
    need(cfg.input_output in ("tokens", "pooled"), f"input_output: {cfg.input_output!r} must be 'tokens' or 'pooled'")
    need(cfg.qformer_init in ("aligned", "random"), f"qformer_init: {cfg.qformer_init!r} must be 'aligned' or 'random'")
    need(cfg.llm_dtype in ("float32", "bfloat16", "float16"), f"llm_dtype: {cfg.llm_dtype!r} must be float32, bfloat16 or float16")
    need(cfg.mixed_precision in ("no", "bf16", "fp16"), f"mixed_precision: {cfg.mixed_precision!r} must be no, bf16 or fp16")
    for name in ("num_queries", "qformer_layers", "seeds", "rag_k", "qformer_heads", "epochs", "batch_size", "grad_accum",
                 "eval_batch_size", "num_beams", "max_item_tokens", "max_query_tokens", "max_input_tokens",
                 "max_target_tokens", "log_every", "keep_checkpoints"):
        need(getattr(cfg, name) >= 1, f"{name}: must be >= 1, got {getattr(cfg, name)}")
    for name in ("tune_layers", "pplug_augment", "max_history", "max_train_examples", "max_eval_examples", "save_every",
                 "weight_decay", "max_grad_norm"):
        need(getattr(cfg, name) >= 0, f"{name}: must be >= 0, got {getattr(cfg, name)}")
    need(cfg.lr > 0, f"lr: must be > 0, got {cfg.lr}")
    need(0 <= cfg.warmup_ratio < 1, f"warmup_ratio: must be in [0, 1), got {cfg.warmup_ratio}")
    need(0 <= cfg.qformer_dropout < 1, f"qformer_dropout: must be in [0, 1), got {cfg.qformer_dropout}")
    need(cfg.memory_top_n >= 0, f"memory_top_n: must be >= 0, got {cfg.memory_top_n}")
    rule = cfg.inference_queries
    need(rule in ("all", "history") or (rule.isdigit() and int(rule) >= 1),
         f"inference_queries: {rule!r} must be 'all', 'history' or a number >= 1")
    need(cfg.inference_queries != "history" or cfg.nested_queries,
         "inference_queries: 'history' picks a different prefix per example; train with nested_queries=true")
    if cfg.data_dir != "embedded":
        need(Path(cfg.data_dir).is_dir(), f"data_dir: {cfg.data_dir} is not a folder; download LaMP there or use 'embedded'")
    if cfg.resume_from:
        need(Path(cfg.resume_from).exists(), f"resume_from: {cfg.resume_from} does not exist")
    return p


def to_json(cfg: TrainConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2)


def from_json(text: str, source: str) -> TrainConfig:
    """Read a saved config.json (unknown keys are an error: the file is from another version)."""
    data = json.loads(text)
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ConfigError(f"{source}: unknown settings {unknown}; was it written by another version?")
    return TrainConfig(**data)
