"""Long-term memory (per-user FAISS top-N) and adaptive queries (nested prefixes, the inference rule)."""

from __future__ import annotations

import json

import pytest
import torch

from trainers import config as config_lib
from dataset.embedded.lamp3 import generate_embedded_lamp3
from dataset.memory import HistoryMemory, UserIndex
from model import BehavioralEncoder, BehavioralTwin, FrozenLLM, InputEncoder, QFormer, queries_for
from tiny_models import HISTORY, INPUTS, batch, run_script, tiny_bert, tiny_llama


def build(queries=4, memory=None, nested=False, rule="all", seed=0):
    history_bert, tok = tiny_bert(seed=1)
    input_bert, input_tok = tiny_bert(seed=1)
    llm, llm_tok = tiny_llama()
    torch.manual_seed(seed)
    return BehavioralTwin(BehavioralEncoder(history_bert, tok, "mean", 32),
                          InputEncoder(input_bert, input_tok, tune_layers=2, max_length=64),
                          QFormer(32, queries, num_layers=2, heads=4, dropout=0.0, causal_queries=nested),
                          FrozenLLM(llm, llm_tok, "decoder", "Personalize."),
                          memory=memory, nested_queries=nested, inference_queries=rule)


# --- long-term memory ------------------------------------------------------------------------------------


def test_user_index_returns_the_most_similar_rows_unchanged_in_history_order():
    torch.manual_seed(0)
    rows = torch.randn(50, 16) * torch.rand(50, 1) * 5  # unequal norms: similarity must be cosine
    index = UserIndex(rows)
    query = (rows[31] / rows[31].norm() + rows[7] / rows[7].norm()).numpy()
    query /= (query ** 2).sum() ** 0.5
    assert index.top(query, 2).tolist() == [7, 31]
    assert torch.allclose(index.rows(index.top(query, 2)), rows[[7, 31]], atol=1e-5)
    assert index.top(query, 500).tolist() == list(range(50))  # n past P: every item
    assert index.nbytes == 50 * 16 * 4 + 50 * 4


def test_memory_builds_each_history_index_once_and_never_mixes_users():
    encoded = []

    def encode(texts):
        encoded.append(len(texts))
        return torch.stack([torch.full((4,), float(len(t))) + torch.arange(4.0) * (i % 3) for i, t in enumerate(texts)])
    memory = HistoryMemory(top_n=2)
    alice, bob = ["a", "bb", "ccc", "dddd"], ["x", "yy"]
    queries = torch.randn(2, 4)
    memory.select([alice, bob], queries, encode)
    memory.select([list(alice), bob], queries, encode)  # equal texts, new list: the same user
    assert memory.builds == 2 and encoded == [4, 2]
    ids, rows = memory.select([bob, []], queries, encode)
    assert len(ids[0]) == 2 and len(ids[1]) == 0 and rows[1].shape == (0, 4)


def test_twin_with_memory_reads_only_top_n_items_exactly_as_without_memory():
    seen = []
    with_memory, plain = build(memory=HistoryMemory(top_n=2)), build()
    with_memory.eval(), plain.eval()
    with_memory.qformer.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    long_history = [HISTORY[0] + HISTORY[2], HISTORY[1], []]
    prompts = with_memory.soft_prompts(batch(history=long_history))
    assert seen == [2], "with memory_top_n=2 the Q-Former must see at most 2 items"
    # The chosen items, given to the model without memory, give the same prompts.
    encoder = with_memory.behavioral_encoder
    queries = encoder.encode_texts(INPUTS)
    chosen = [[h[i] for i in ids] for h, ids in zip(long_history, with_memory.memory.select(
        long_history, queries, encoder.encode_texts)[0])]
    assert [len(c) for c in chosen] == [2, 1, 0]
    torch.testing.assert_close(prompts, plain.soft_prompts(batch(history=chosen)))
    # Generation and the loss run through the memory path too.
    assert len(with_memory.generate(batch(history=long_history), max_new_tokens=3)) == 3
    assert torch.isfinite(with_memory(batch(history=long_history)))


# --- adaptive queries ------------------------------------------------------------------------------------


def test_causal_queries_make_every_prefix_exact():
    torch.manual_seed(0)
    history, inputs = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    masks = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 7, dtype=torch.bool)
    causal = QFormer(32, num_queries=6, num_layers=2, heads=4, dropout=0.0, causal_queries=True).eval()
    full = causal(history, masks[0], inputs, masks[1])
    for k in (1, 3, 5):
        torch.testing.assert_close(causal(history, masks[0], inputs, masks[1], num_queries=k), full[:, :k])
    bidirectional = QFormer(32, num_queries=6, num_layers=2, heads=4, dropout=0.0).eval()
    assert not torch.allclose(bidirectional(history, masks[0], inputs, masks[1], num_queries=3),
                              bidirectional(history, masks[0], inputs, masks[1])[:, :3])


def test_inference_rule_gives_longer_histories_more_queries():
    assert queries_for("history", [0, 1, 2, 3, 4, 7, 8, 100, 10_000], 16) == [1, 1, 2, 2, 3, 3, 4, 7, 14]
    assert queries_for("history", [10_000], 8) == [8]
    assert queries_for("3", [1, 50], 8) == [3, 3] and queries_for("all", [1], 8) == [8]


def test_twin_uses_a_prefix_per_example_and_generates_as_one_at_a_time():
    twin = build(queries=8, nested=True, rule="history").eval()
    prompts = twin.soft_prompts(batch())
    assert [p.shape[0] for p in prompts] == [2, 1, 2]  # 3, 1 and 2 history items
    together = twin.generate(batch(), max_new_tokens=5)
    assert together == [twin.generate(batch([h], [x], None), max_new_tokens=5)[0] for h, x in zip(HISTORY, INPUTS)]
    # A fixed number of queries is the same prefix of what all queries give (causal queries).
    twin.inference_queries = "3"
    three = twin.soft_prompts(batch())
    twin.inference_queries = "all"
    torch.testing.assert_close(three, twin.soft_prompts(batch())[:, :3])


def test_nested_training_draws_a_prefix_per_example_and_trains():
    twin = build(queries=8, nested=True).train()
    torch.manual_seed(3)
    counts = [n for _ in range(20) for n in twin.query_counts(torch.ones(4, 3, dtype=torch.bool))]
    assert set(counts) == set(range(1, 9)), "nested dropout must reach every prefix length 1..Q"
    loss = twin(batch())
    loss.backward()
    assert twin.qformer.query_tokens.grad is not None and torch.isfinite(loss)


def test_config_checks_the_new_settings_all_at_once():
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.resolve_config(overrides={"memory_top_n": "-1", "inference_queries": "many"})
    assert "memory_top_n" in str(error.value) and "inference_queries" in str(error.value)
    with pytest.raises(config_lib.ConfigError, match="nested_queries"):
        config_lib.resolve_config(overrides={"inference_queries": "history"})
    cfg = config_lib.resolve_config(overrides={"inference_queries": "history", "nested_queries": "true",
                                               "memory_top_n": "16", "numeric_signals": "true"})
    assert (cfg.memory_top_n, cfg.numeric_signals, cfg.inference_queries) == (16, True, "history")



def test_whole_script_runs_with_every_roadmap_option(tmp_path, tiny_model_dirs):  # noqa: F811
    data = generate_embedded_lamp3(tmp_path / "data", seed=1, n_train=12, n_dev=6, n_test=2)
    assert run_script(tmp_path, tiny_model_dirs, data, "--run_name=roadmap", "--tasks=LaMP-3", "--numeric_signals=true",
                      "--memory_top_n=3", "--nested_queries=true", "--inference_queries=history") == 0
    run = tmp_path / "roadmap"
    assert set(json.loads((run / "metrics.json").read_text())["LaMP-3"]) == {"mae", "rmse"}
    assert set(json.loads((run / "controls.json").read_text())["LaMP-3"]) == {"no_personalization", "other_history"}
    saved = json.loads((run / "config.json").read_text())
    assert (saved["memory_top_n"], saved["numeric_signals"], saved["inference_queries"]) == (3, True, "history")
