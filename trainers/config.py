"""The run configuration: one typed dataclass, layered defaults <- YAML <- --key=value.

Every field carries a docstring (litgpt style). `resolve_config` merges the layers and
`validate` reports every problem at once, so a researcher fixes a config in one go.
Settings are checked on their own here; what needs the disk (data, checkpoint, run folder,
model widths) is checked by trainers.preflight. The resolved config is saved with every
run as config.json.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from trainers.tracking import log_with_problems

# The allowed values of the choice settings, in one place: the TrainConfig fields below are
# typed with them (so validation reads them) and the model's components check their
# arguments against the same types (`check_choice`).
Mode = Literal["sequential", "joint", "eval_only"]
Retriever = Literal["bm25", "dense"]
Pooling = Literal["cls", "mean"]
LLMDtype = Literal["float32", "bfloat16", "float16"]
LLMAttention = Literal["", "sdpa", "eager", "flash_attention_2"]  # transformers' attn_implementation
MixedPrecision = Literal["no", "bf16", "fp16"]  # accelerate's
PromptPosition = Literal["before_input", "after_input"]
QFormerInit = Literal["aligned", "random"]
InputOutput = Literal["tokens", "pooled"]
PPlugRescale = Literal["auto", "constants", "rms", "none"]
PPlugHistoryText = Literal["pplug", "twin"]
LogWith = Literal["none", "tensorboard", "wandb"]  # trainers/tracking.py
Answer = Literal["generate", "choices"]  # how LLM-based methods answer classification tasks


def choices(kind) -> tuple:
    """The values a Literal type allows (nested Literals flattened)."""
    return typing.get_args(kind)


def choice_problem(setting: str, value, kind) -> str | None:
    """None when `value` is one of `kind`'s values, else the message naming the setting and the choices."""
    if value in choices(kind):
        return None
    return f"{setting}: {value!r} is not one of {', '.join(map(repr, choices(kind)))}"


def check_choice(setting: str, value, kind) -> None:
    """Raise ValueError unless `value` is one of the Literal `kind`'s values."""
    problem = choice_problem(setting, value, kind)
    if problem:
        raise ValueError(problem)


class ConfigError(ValueError):
    """A bad setting; the message lists every problem found."""


@dataclass
class TrainConfig:
    # --- what to run
    mode: Mode = "sequential"
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
    """Folder of LaMP's files, in the downloader's layout (DATA_DIR/LaMP_<i>/{split}_questions.json ...) or
    LaMP's own (DATA_DIR/LaMP_<i>/{split}/..., LaMP_2/new/...; see dataset/layout.py), e.g. data/lamp/time
    for the time-based split; or 'embedded' for the generated offline task (written once under `cache_dir`)."""
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
    """The method (trainers/methods.py's registry): 'twin' (Behavioral Twin), or a baseline on the same
    LLM: 'pplug' (pplug.py), 'none' (frozen LLM, bare input), 'rag' (top-k profile items in the
    prompt), 'prompt_tuning' (shared soft prompts, no history), 'mean' (history embeddings averaged
    instead of the Q-Former); or an untrained rule that never calls the LLM: 'profile_rule' (reads only
    the history through the frozen history encoder) or 'input_rule' (reads only the question); each
    task's rule is documented in model.ProfileRule and model.InputRule."""
    models: list[str] = field(default_factory=list)
    """Compare several models: each is trained and evaluated on the same tasks, data and settings,
    `seeds` times, and saved/<run>/comparison.{json,md,png} gather the results. Empty = one run of `model`."""
    seeds: int = 1
    """With `models`: runs per model, with seeds seed, seed+1, ...; the table gives mean and std."""
    rag_k: int = 4
    """Profile items the `rag` baseline writes into the prompt (LaMP's protocol: 4)."""
    retriever: Retriever = "bm25"
    """How `rag` ranks profile items: 'bm25' or 'dense' (cosine of the history encoder's embeddings)."""
    rule_k: int = 4
    """History items profile_rule's LaMP-2 tag vote and LaMP-3 weighted rating read (the most similar)."""
    answer: Answer = "generate"
    """How LLM-based methods answer classification tasks (tasks with labels: LaMP-1, 2, 3): 'generate'
    (LaMP's protocol: greedy or beam decoding, scored as written) or 'choices' (rank classification:
    every allowed label is scored by its log-likelihood under the frozen LLM, with the same prompt and
    soft prompts, and the best is the answer). Free-text tasks always generate; rules ignore it."""
    pplug_augment: int = 0
    """PPlug's training augmentation: extra copies of each example with random history items dropped
    (its code uses 10; 0 = off, as each copy costs a full pass over the data)."""
    pplug_rescale: PPlugRescale = "auto"
    """Scale of PPlug's instruction and persona vectors: 'constants' multiplies them by its code's
    539.9738 / 7 and 539.9738 (fitted to Flan-T5-XXL's embeddings), 'rms' rescales each to the RMS
    of the LLM's token embeddings (the same intent for an LLM of another scale), 'none' leaves
    them; 'auto' = constants for an encoder-decoder LLM, rms for a decoder-only one."""
    pplug_history_text: PPlugHistoryText = "pplug"
    """What PPlug embeds of a profile item: 'pplug' = its code's text per task (LaMP-1/5 title and
    abstract, LaMP-2 the description, LaMP-3 the review, LaMP-4 text and title, LaMP-7 the tweet);
    'twin' = Behavioral Twin's rendering, which also shows the user's past label (tag, rating),
    to compare the two aggregators on the same input."""
    pplug_query_instruction: bool = True
    """Put BGE's query instruction ("Represent this sentence for searching relevant passages:")
    before PPlug's query when the encoder is a BGE model, as its code does (other encoders: never)."""
    pplug_tune_layers: int = -1
    """What of PPlug's input encoder trains: -1 = all of it, embeddings included (its code); N = only
    the top N blocks, as `tune_layers` for Twin (less memory and optimizer state)."""
    pplug_max_item_tokens: int = 0
    """Token budget of one history item in PPlug's history encoder: 0 = the encoder's own limit (its
    code: 512 for BGE); N = cut at N, as `max_item_tokens` for Twin (faster encoding of long items)."""
    encoder: str = "minilm"
    """History/input encoder: embedded alias ('minilm'), local folder, or hub name already in the local cache
    (e.g. BAAI/bge-base-en-v1.5)."""
    pooling: Literal["", Pooling] = ""
    """History item pooling, 'cls' or 'mean'; empty = the encoder's own (cls for BGE, mean for MiniLM)."""
    llm: str = "smollm2-135m"
    """Frozen LLM: embedded alias ('smollm2-135m'), local folder, or cached hub name (google/flan-t5-xxl, Qwen/...)."""
    llm_dtype: LLMDtype = "float32"
    """Dtype the frozen LLM is loaded in: float32, bfloat16 or float16."""
    llm_attention: LLMAttention = ""
    """Attention kernel of the frozen LLM (transformers' attn_implementation): '' = transformers' default
    (sdpa), 'sdpa', 'eager', or 'flash_attention_2' (GPU, needs the flash-attn package). Time a choice
    with `python -m bench.train_throughput --llm_attention=...`."""
    trust_remote_code: bool = False
    """Allow model folders to run their own Python code. Off: a model folder never executes code."""
    cache_dir: str = ""
    """Converted embedded models and history-embedding caches; empty = $BEHAVIORAL_TWIN_CACHE or
    ~/.cache/behavioral_twin."""
    instruction: str = "Personalize the answer to the user whose history the first vectors encode."
    """System/instruction text placed before the soft prompts (decoder-only LLMs)."""

    # --- architecture
    prompt_position: PromptPosition = "before_input"
    """Where soft prompts go in the LLM input: 'before_input' ([instruction; prompts; input]) or
    'after_input' ([instruction; input; prompts]: in a decoder-only LLM they then sit right before
    the answer, and the frozen LLM needs no gradient through the input positions)."""
    num_queries: int = 8
    """Learnable Q-Former queries = soft prompt tokens given to the LLM."""
    label_loss: float = 1.0
    """Weight of an extra training loss for classification tasks (twin and mean): a linear head per
    task predicts the label from the mean Q-Former output. 0 = off. Answers are still generated by
    the LLM; the heads are only trained (see model.BehavioralTwin.label_prediction_loss)."""
    word_prompts: int = 0
    """Behavioral Twin: extra soft prompts that are words, each a mixture of the LLM's embeddings of
    the tokens the user's history holds, picked by one of the first Q-Former outputs and favouring
    tokens many items hold, placed after the other soft prompts (model.WordPrompts): for free-text
    answers that need the user's exact words. 0 = none; at most num_queries."""
    word_loss: float = 1.0
    """With word_prompts: weight of an extra training loss that teaches the word prompts the answer's
    words the history holds and the input lacks (model.BehavioralTwin.answer_words_loss). 0 = off."""
    qformer_layers: int = 2
    """Q-Former layers (each: history cross-attn, input cross-attn, self-attn, feed-forward)."""
    qformer_heads: int = 8
    """Attention heads in the Q-Former; must divide the encoder width."""
    qformer_dropout: float = 0.1
    """Dropout inside the Q-Former."""
    qformer_norm_first: bool = False
    """Pre-norm Q-Former layers (False = post-norm, as BERT and BLIP-2)."""
    relevance_signals: bool = True
    """Give the Q-Former each history item's relevance to the question: its cosine to the retrieval
    query and, where the question spells out its answer options (LaMP-1's references), to each option
    (model.relevance_rows). False = the Q-Former compares the history with the question on its own."""
    qformer_init: QFormerInit = "aligned"
    """'aligned' starts each Q-Former layer as a similarity search of the input for the user's
    interests (see model.QFormer); 'random' is BLIP-2's init."""
    tune_layers: int = 4
    """Top layers of the input encoder that train (0 = frozen input encoder)."""
    input_dropout: float = -1
    """Dropout probability of every dropout in Twin's input encoder while its top layers train
    (hidden states and attention weights alike); -1 = the checkpoint's own (0.1 for BERT-style
    encoders). 0 also lets the CPU attention take its fused kernel."""
    input_cache_mb: float = 1024
    """With a frozen input encoder (tune_layers=0): MiB of token states it keeps per process (on its
    device), so that a question seen before is not encoded again (model.InputEncoder); 0 = off."""
    input_output: InputOutput = "tokens"
    """Input encoder output the Q-Former attends to: 'tokens' (token states) or 'pooled' (one vector)."""
    max_item_tokens: int = 128
    """Token budget of one history item in the history encoder."""
    history_batch_tokens: int = 16384
    """Padded tokens of one micro-batch when the history store is filled (items x the longest item's
    tokens; at most 64 items): long items go in small batches, short ones in large. 0 = 64 items always."""
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
    group_by_length: bool = False
    """Batch training examples of similar LLM input length together (less padding). The order stays
    random, depends only on the seed, and resumes exactly."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 = off)."""
    mixed_precision: Literal["", MixedPrecision] = ""
    """accelerate mixed precision: 'no', 'bf16' or 'fp16'; '' = what the launcher says (the accelerate
    config's mixed_precision, e.g. bf16 in config/ds_config.yaml; 'no' without one)."""
    gradient_checkpointing: bool = False
    """Recompute the frozen LLM's activations in the backward pass (less memory, more time)."""

    # --- evaluation, logging, checkpoints
    eval_batch_size: int = 16
    """Examples per process per evaluation batch."""
    num_beams: int = 4
    """Beam search width when an answer is generated, as LaMP's protocol (1 = greedy, faster)."""
    controls: bool = True
    """Also evaluate two history-blind controls: the frozen LLM on the bare input, and the trained
    model given another user's history."""
    references: bool = True
    """Also score the untrained rules (profile_rule, input_rule: seconds, no LLM) on the same evaluation
    data and show them in results.md beside the method: the floor it must clear. Not with mode=eval_only
    (input_rule's LaMP-3 rule counts the training split's answers)."""
    log_every: int = 10
    """Optimizer steps between loss lines (and tracker points)."""
    log_with: LogWith = "none"
    """Experiment tracker, written by the main process only: 'tensorboard' (event files in
    <run>/tensorboard/), 'wandb' (offline into <run>/wandb/ unless WANDB_MODE is set; needs
    `pip install wandb`) or 'none'. It gets the loss, learning rate, gradient norm (when
    max_grad_norm > 0) and examples per second every `log_every` steps and every dev metric;
    <run>/learning_curve.png is drawn whatever the choice."""
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
# Field name -> its Literal type, for the settings that take one of a few values.
CHOICE_FIELDS = {name: kind for name, kind in typing.get_type_hints(TrainConfig).items()
                 if typing.get_origin(kind) is Literal}


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


# Where an invocation writes and what it runs around one run (a comparison's methods and
# seeds): never taken from the checkpoint it resumes or evaluates.
WHERE_FIELDS = frozenset({"resume_from", "run_name", "out_dir", "cache_dir", "models", "seeds"})
# Settings a run's answers do not depend on: the above, and how it logs and saves.
PLACE_FIELDS = WHERE_FIELDS | {"log_every", "log_with", "save_every", "keep_checkpoints"}


def resumed_settings(resume_from: str) -> dict:
    """The settings the run folder or checkpoint `resume_from` was saved with (its config.json),
    but for WHERE_FIELDS; {} when it has none to read (loading the checkpoint then says why)."""
    path = Path(resume_from) / "config.json"
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {key: value for key, value in saved.items() if key in FIELDS and key not in WHERE_FIELDS}


def resolve_config(defaults: dict | None = None, config_file: str | None = None,
                   overrides: dict | None = None, environ: typing.Mapping[str, str] | None = None) -> TrainConfig:
    """dataclass defaults <- `defaults` (train.py's editable block) <- the resumed checkpoint's
    settings (with resume_from) <- YAML file <- overrides.

    So `--resume_from=saved/<run>` continues or evaluates that run as it was configured (its
    tasks, model and data), whatever train.py's defaults are now; a file or --key=value
    still changes any setting (checkpoint.check_compatible refuses what the weights cannot take).

    The launch settings in `environ` (os.environ: what `accelerate launch` or torchrun set) are
    checked against the result too, so a bad DeepSpeed setup fails before any model loads.
    """
    problems: list[str] = []
    values: dict = {}
    layers = [("train.py defaults", defaults or {})]
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {config_file} is not UTF-8 text (byte offset {e.start}); "
                              "save it as UTF-8") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {config_file} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {config_file} must be a mapping of setting: value")
        layers.append((f"config file {config_file}", loaded))
    layers.append(("command line", overrides or {}))
    resume_from = next((str(layer["resume_from"]) for _, layer in reversed(layers) if layer.get("resume_from")), "")
    if resume_from:
        layers.insert(1, (f"{Path(resume_from) / 'config.json'}", resumed_settings(resume_from)))
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
    problems += launch_problems(cfg, os.environ if environ is None else environ)
    if problems:
        raise ConfigError(problem_report(problems))
    return cfg


def problem_report(problems: list[str]) -> str:
    return "invalid configuration:\n  - " + "\n  - ".join(problems)


def validate(cfg: TrainConfig) -> None:
    """Raise one ConfigError listing every problem of `cfg`."""
    problems = find_problems(cfg)
    if problems:
        raise ConfigError(problem_report(problems))


def find_problems(cfg: TrainConfig) -> list[str]:
    """What is wrong with the settings themselves; what needs the disk is trainers.preflight's."""
    p: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            p.append(message)

    p += [problem for name, kind in CHOICE_FIELDS.items()
          if (problem := choice_problem(name, getattr(cfg, name), kind))]
    need(not (cfg.models and cfg.mode == "eval_only"), "models: a comparison trains each model; use mode=sequential or joint")
    need(cfg.mode != "eval_only" or bool(cfg.resume_from), "resume_from: mode=eval_only needs a checkpoint to load")
    need(bool(cfg.tasks), "tasks: give at least one task, e.g. --tasks=LaMP-1")
    p += task_problems(cfg.tasks)
    for name in ("num_queries", "qformer_layers", "seeds", "rag_k", "qformer_heads", "epochs", "batch_size", "grad_accum",
                 "eval_batch_size", "num_beams", "max_item_tokens", "max_query_tokens", "max_input_tokens",
                 "max_target_tokens", "log_every", "keep_checkpoints", "rule_k"):
        need(getattr(cfg, name) >= 1, f"{name}: must be >= 1, got {getattr(cfg, name)}")
    need(cfg.pplug_tune_layers >= -1, f"pplug_tune_layers: must be -1 (all) or >= 0, got {cfg.pplug_tune_layers}")
    for name in ("tune_layers", "pplug_augment", "pplug_max_item_tokens", "max_history", "max_train_examples",
                 "max_eval_examples", "save_every",
                 "weight_decay", "max_grad_norm", "label_loss", "history_batch_tokens", "word_prompts", "word_loss",
                 "input_cache_mb"):
        need(getattr(cfg, name) >= 0, f"{name}: must be >= 0, got {getattr(cfg, name)}")
    need(cfg.lr > 0, f"lr: must be > 0, got {cfg.lr}")
    need(0 <= cfg.warmup_ratio < 1, f"warmup_ratio: must be in [0, 1), got {cfg.warmup_ratio}")
    need(cfg.input_dropout == -1 or 0 <= cfg.input_dropout < 1,
         f"input_dropout: must be -1 (the checkpoint's own) or in [0, 1), got {cfg.input_dropout}")
    need(0 <= cfg.qformer_dropout < 1, f"qformer_dropout: must be in [0, 1), got {cfg.qformer_dropout}")
    need(cfg.memory_top_n >= 0, f"memory_top_n: must be >= 0, got {cfg.memory_top_n}")
    need(cfg.word_prompts <= cfg.num_queries,
         f"word_prompts: {cfg.word_prompts} is more than num_queries ({cfg.num_queries}); each word prompt is read "
         "from one Q-Former output")
    rule = cfg.inference_queries
    need(rule in ("all", "history") or (rule.isdigit() and int(rule) >= 1),
         f"inference_queries: {rule!r} must be 'all', 'history' or a number >= 1")
    need(cfg.inference_queries != "history" or cfg.nested_queries,
         "inference_queries: 'history' picks a different prefix per example; train with nested_queries=true")
    p += log_with_problems(cfg.log_with)
    return p


def task_problems(tasks: list[str]) -> list[str]:
    from dataset.tasks import TASKS, get_task
    unknown = []
    for name in tasks:
        try:
            get_task(name)
        except ValueError:
            unknown.append(name)
    if not unknown:
        return []
    return [f"tasks: unknown task(s) {', '.join(map(repr, unknown))}; known tasks: {', '.join(sorted(TASKS))} "
            "(e.g. --tasks=LaMP-1,LaMP-3)"]


# Accelerate passes a DeepSpeed setup to each process in these variables (accelerate launch
# sets them from the accelerate config file), keyed here by that file's own names.
DEEPSPEED_ENV = {"zero_stage": "ACCELERATE_DEEPSPEED_ZERO_STAGE",
                 "gradient_accumulation_steps": "ACCELERATE_GRADIENT_ACCUMULATION_STEPS",
                 "gradient_clipping": "ACCELERATE_GRADIENT_CLIPPING",
                 "offload_optimizer_device": "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE",
                 "offload_param_device": "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE"}
_OFFLOAD_DEVICES = ("none", "cpu", "nvme")


def deepspeed_settings(environ: typing.Mapping[str, str]) -> tuple[dict | None, str, list[str]]:
    """-> (DeepSpeed settings or None when DeepSpeed is off, where they came from, problems reading them).

    Settings come from the DeepSpeed JSON file when the accelerate config names one
    (`deepspeed_config_file`), else from the accelerate config's `deepspeed_config` keys.
    """
    if environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() not in ("1", "true", "yes"):
        return None, "", []
    config_file = environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "none")
    if config_file == "none":
        settings = {key: environ[name] for key, name in DEEPSPEED_ENV.items() if name in environ}
        settings.setdefault("zero_stage", "2")  # accelerate's default
        return settings, "the accelerate config's deepspeed_config", []
    try:
        data = json.loads(Path(config_file).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, config_file, [f"deepspeed_config_file: cannot read {config_file} as JSON ({e})"]
    if not isinstance(data, dict) or not isinstance(data.get("zero_optimization", {}), dict):
        return None, config_file, [f"deepspeed_config_file: {config_file} must be a JSON object with a "
                                   '"zero_optimization" object']
    zero = data.get("zero_optimization", {})
    settings = {"zero_stage": zero.get("stage", 0),
                "gradient_accumulation_steps": data.get("gradient_accumulation_steps", 1),
                "gradient_clipping": data.get("gradient_clipping"),
                "train_micro_batch_size_per_gpu": data.get("train_micro_batch_size_per_gpu"),
                "train_batch_size": data.get("train_batch_size"),
                "offload_optimizer_device": zero.get("offload_optimizer", {}).get("device", "none"),
                "offload_param_device": zero.get("offload_param", {}).get("device", "none")}
    return {k: v for k, v in settings.items() if v is not None}, config_file, []


def _fixed(value) -> float | None:
    """A DeepSpeed number, or None for 'auto' (accelerate fills it in from the run)."""
    if value is None or str(value).lower() == "auto":
        return None
    return float(value)


def launch_problems(cfg: TrainConfig, environ: typing.Mapping[str, str]) -> list[str]:
    """DeepSpeed settings that contradict themselves or the run's settings.

    DeepSpeed itself would only fail (or silently train differently) after the models have
    loaded: it steps the optimizer every `gradient_accumulation_steps` micro-batches and clips
    with its own `gradient_clipping`, ignoring grad_accum and max_grad_norm.
    """
    ds, source, problems = deepspeed_settings(environ)
    if ds is None:
        return problems
    p: list[str] = []
    where = f"DeepSpeed ({source})"
    try:
        stage = int(ds["zero_stage"])
        accum, micro, total, clip = (_fixed(ds.get(k)) for k in ("gradient_accumulation_steps",
                                     "train_micro_batch_size_per_gpu", "train_batch_size", "gradient_clipping"))
    except (TypeError, ValueError) as e:
        return [f"{where}: a setting is not a number ({e})"]
    offload_optimizer = str(ds.get("offload_optimizer_device", "none")).lower()
    offload_param = str(ds.get("offload_param_device", "none")).lower()
    world = int(environ.get("WORLD_SIZE", "1"))

    if stage not in (0, 1, 2, 3):
        p.append(f"{where}: zero_stage {stage} does not exist; use 0, 1, 2 or 3")
    for name, device in (("offload_optimizer_device", offload_optimizer), ("offload_param_device", offload_param)):
        if device not in _OFFLOAD_DEVICES:
            p.append(f"{where}: {name} {device!r} must be one of {', '.join(_OFFLOAD_DEVICES)}")
    if offload_param != "none" and stage != 3:
        p.append(f"{where}: offload_param_device={offload_param} needs zero_stage 3 (only ZeRO-3 partitions "
                 f"parameters), got zero_stage {stage}; set zero_stage: 3 or offload_param_device: none")
    if offload_optimizer != "none" and stage == 0:
        p.append(f"{where}: offload_optimizer_device={offload_optimizer} needs zero_stage 1, 2 or 3, got 0")
    if accum is not None and accum != cfg.grad_accum:
        p.append(f"{where}: gradient_accumulation_steps is {accum:g} but grad_accum is {cfg.grad_accum}; "
                 "DeepSpeed steps the optimizer on its own count, so set both to the same value")
    if micro is not None and micro != cfg.batch_size:
        p.append(f"{where}: train_micro_batch_size_per_gpu is {micro:g} but batch_size is {cfg.batch_size}; "
                 "set both to the same value (or the DeepSpeed one to \"auto\")")
    if total is not None and total != cfg.batch_size * cfg.grad_accum * world:
        p.append(f"{where}: train_batch_size is {total:g} but batch_size {cfg.batch_size} x grad_accum "
                 f"{cfg.grad_accum} x {world} processes = {cfg.batch_size * cfg.grad_accum * world}; "
                 "fix one of them (or set train_batch_size to \"auto\")")
    if clip is not None and clip != cfg.max_grad_norm:
        p.append(f"{where}: gradient_clipping is {clip:g} but max_grad_norm is {cfg.max_grad_norm:g}; DeepSpeed "
                 "clips with its own value, so set both to the same value")
    if stage == 3 and cfg.word_prompts:
        p.append(f"{where}: word_prompts={cfg.word_prompts} reads the LLM's whole embedding table, which ZeRO-3 "
                 "partitions; use zero_stage 2 (or DDP), or word_prompts=0")
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
