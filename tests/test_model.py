"""The model on tiny BERT / Llama / Qwen / T5 built from configs: shapes, masks, freezing, fusion."""

import dataclasses
import math

import pytest
import torch

from dataset.history_store import HistoryStore
from model import (CANDIDATE_SCALE, LLM_FAMILIES, BehavioralEncoder, CrossAttention, FrozenLLM, InputEncoder, QFormer,
                   WordPrompts, count_parameters, history_word_counts, llm_family, pad_stack, relevance_rows)
from tiny_models import HISTORY, INPUTS, TARGETS, batch, build_twin, tiny_bert, tiny_llama, tiny_t5


def test_behavioral_encoder_shapes_mask_and_store(tmp_path):
    bert, tok = tiny_bert()
    calls = []
    bert.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape),
                               with_kwargs=True)
    encoder = BehavioralEncoder(bert, tok, "mean", 32, HistoryStore(tmp_path / "store"))
    emb, mask = encoder(HISTORY)
    assert emb.shape == (3, 3, 32) and mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    assert (emb[1, 1:] == 0).all()
    # Only the 6 real items are encoded (no padded slots), padded to the longest one, not to max_length.
    assert calls == [(6, calls[0][1])] and calls[0][1] < 32
    encoder(HISTORY)
    assert len(calls) == 1, "stored texts must not be encoded again"
    again = BehavioralEncoder(bert, tok, "mean", 32, HistoryStore(tmp_path / "store"))
    assert torch.equal(again(HISTORY)[0], emb) and len(calls) == 1, "the store must persist on disk"


def test_behavioral_encoder_without_store_encodes_every_call_and_agrees_with_the_store(tmp_path):
    bert, tok = tiny_bert()
    calls = []
    bert.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs["input_ids"].shape),
                               with_kwargs=True)
    stored = BehavioralEncoder(bert, tok, "mean", 32, HistoryStore(tmp_path / "store"))(HISTORY)
    repeated = [["galaxy surveys", "robots and climate"], ["galaxy surveys"]]  # the same text twice
    uncached = BehavioralEncoder(bert, tok, "mean", 32)
    for _ in range(2):
        emb, mask = uncached(HISTORY)
        torch.testing.assert_close(emb, stored[0])
        assert torch.equal(mask, stored[1])
    assert len(calls) == 3, "without a store every call encodes"
    emb, _ = uncached(repeated)
    assert calls[-1][0] == 2 and torch.equal(emb[0, 0], emb[1, 0]), "each distinct text once per call"
    seed_style = BehavioralEncoder(bert, tok, "mean", 32, pad_to_max_length=True)
    torch.testing.assert_close(seed_style(HISTORY)[0], stored[0], atol=1e-5, rtol=1e-4)
    assert calls[-1][1] == 32, "seed style pads every item to max_length"


def test_input_encoder_tokens_and_pooled_and_trainable_layers():
    bert, tok = tiny_bert(layers=4)
    enc = InputEncoder(bert, tok, tune_layers=2, max_length=64)
    states, mask = enc(INPUTS)
    assert states.shape[:2] == mask.shape and states.shape[0] == 3 and mask[1].sum() < mask[0].sum()
    trainable = {n.split(".")[2] for n, p in enc.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"2", "3"}  # encoder.layer.2 and .3 only
    pooled, pooled_mask = InputEncoder(*tiny_bert(), 2, 64, output="pooled")(INPUTS)
    assert pooled.shape == (3, 1, 32) and pooled_mask.all()


def test_input_dropout_replaces_every_dropout_of_the_trained_layers_attention_included():
    default = InputEncoder(*tiny_bert(layers=4), tune_layers=2, max_length=64).train()
    assert not torch.equal(default(INPUTS)[0], default(INPUTS)[0])  # the checkpoint's dropout draws masks
    off = InputEncoder(*tiny_bert(layers=4), tune_layers=2, max_length=64, dropout=0).train()
    assert {m.p for m in off.backbone.modules() if isinstance(m, torch.nn.Dropout)} == {0.0}
    assert torch.equal(off(INPUTS)[0], off(INPUTS)[0])


def test_frozen_input_encoder_encodes_each_text_once_within_its_cache_and_tuned_never_caches():
    bert, tok = tiny_bert(layers=4)
    uncached = InputEncoder(bert, tok, tune_layers=0, max_length=64)
    cached = InputEncoder(bert, tok, tune_layers=0, max_length=64, cache_mb=1)
    encoded: list[int] = []  # texts per backbone call
    bert.register_forward_pre_hook(lambda module, args, kwargs: encoded.append(len(kwargs["input_ids"])),
                                   with_kwargs=True)
    first = cached(INPUTS[:2])
    reordered = [INPUTS[2], INPUTS[0], INPUTS[2], INPUTS[1]]
    states, mask = cached(reordered)
    assert encoded == [2, 1], "only the one text not seen before is encoded, once"
    expected, expected_mask = uncached(reordered)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(states[mask], expected[expected_mask], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(first[0][0][first[1][0]], expected[1][expected_mask[1]], atol=1e-5, rtol=1e-4)

    room = cached.cached_states[INPUTS[2]].nbytes  # room for the shortest text's states: it keeps that one alone
    small = InputEncoder(bert, tok, tune_layers=0, max_length=64, cache_mb=room / 2**20)
    small(INPUTS[2:])
    states, _ = small(INPUTS)
    assert list(small.cached_states) == [INPUTS[2]] and small.cached_bytes == room
    torch.testing.assert_close(states, cached(INPUTS)[0], atol=1e-5, rtol=1e-4)

    tuned = InputEncoder(*tiny_bert(layers=4), tune_layers=2, max_length=64, cache_mb=1)
    states, _ = tuned(INPUTS)
    assert states.requires_grad and not tuned.cached_states, "an encoder whose weights train is never cached"


def test_qformer_ignores_padded_history_and_survives_empty_history():
    torch.manual_seed(0)
    qf = QFormer(32, num_queries=4, num_layers=2, heads=4, dropout=0.0).eval()
    history, inputs = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    history_mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    input_mask = torch.ones(2, 7, dtype=torch.bool)
    out = qf(history, history_mask, inputs, input_mask)
    assert out.shape == (2, 4, 32) and torch.isfinite(out).all()
    changed = history.clone()
    changed[0, 3:] = 100.0  # padded slots: must not matter
    assert torch.allclose(qf(changed, history_mask, inputs, input_mask), out, atol=1e-6)
    changed[0, 0] = 100.0  # a real item: must matter
    assert not torch.allclose(qf(changed, history_mask, inputs, input_mask)[0], out[0])


@pytest.mark.parametrize("queries", [2, 8])  # 4 heads x 2 queries < 32: carried into the keys' space; x 8: not
@pytest.mark.parametrize("training", [False, True])
def test_cross_attention_is_multihead_attention_with_its_weights_and_gradients(queries, training, monkeypatch):
    fell_back = []  # the modules that ran nn.MultiheadAttention's own forward
    multihead_forward = torch.nn.MultiheadAttention.forward
    monkeypatch.setattr(torch.nn.MultiheadAttention, "forward",
                        lambda self, *args, **kwargs: fell_back.append(self) or multihead_forward(self, *args, **kwargs))
    torch.manual_seed(0)
    fast = CrossAttention(32, 4, dropout=0.3).train(training)
    with torch.no_grad():
        fast.in_proj_bias.normal_()  # b_k included: softmax must drop it
    plain = torch.nn.MultiheadAttention(32, 4, dropout=0.3, batch_first=True).train(training)
    plain.load_state_dict(fast.state_dict())  # the same parameters, under the same names
    q, kv = torch.randn(3, queries, 32), torch.randn(3, 11, 32)
    padding = torch.rand(3, 11) > 0.6
    padding[:, 0] = False
    outputs = []
    for attn in (fast, plain):
        torch.manual_seed(1)  # the same dropout mask: both draw it for the attention weights [B, heads, Q, K]
        out = attn(q, kv, kv, key_padding_mask=padding, need_weights=False)[0]
        (out * torch.linspace(-1, 1, 32)).sum().backward()
        outputs.append((out, {name: p.grad for name, p in attn.named_parameters()}))
    (out, grads), (expected, expected_grads) = outputs
    assert (fast in fell_back) == (queries * 4 >= 32), "the fast way is taken exactly when heads * Q < H"
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, expected_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    if not training:
        kv[0, padding[0]] = 1e3  # a padded key changes nothing
        torch.testing.assert_close(fast(q, kv, kv, key_padding_mask=padding, need_weights=False)[0][0],
                                   out[0].detach(), atol=1e-5, rtol=1e-4)


def test_aligned_init_reads_history_as_is_and_searches_the_input_for_it():
    torch.manual_seed(0)
    layer = QFormer(32, num_queries=2, num_layers=1, heads=4, dropout=0.0).layers[0].eval()
    history = torch.randn(1, 6, 32)
    # A query with no preference attends to every item equally; identity values pass them through.
    passed = layer.history_attn(torch.zeros(1, 1, 32), history, history, need_weights=False)[0]
    torch.testing.assert_close(passed, history.mean(1, keepdim=True))
    interest = torch.randn(1, 1, 32)
    tokens = torch.cat([torch.randn(1, 5, 32), interest], dim=1)  # only the last token matches
    _, weights = layer.input_attn(interest, tokens, tokens, need_weights=True)
    assert weights[0, 0].argmax().item() == 5
    random_layer = QFormer(32, num_queries=2, num_layers=1, heads=4, init="random").layers[0]
    assert not torch.equal(random_layer.history_attn.out_proj.weight, torch.eye(32))


@pytest.mark.parametrize("llm", ["llama", "t5"])
def test_only_trainable_parameters_change_and_frozen_parts_stay_in_eval(llm):
    twin = build_twin(llm)
    frozen_before = {n: p.clone() for n, p in twin.named_parameters() if not p.requires_grad}
    trainable_before = {n: p.clone() for n, p in twin.trainable_parameters().items()}
    twin.train()
    assert not twin.llm.model.training and not twin.behavioral_encoder.backbone.training
    assert not twin.input_encoder.backbone.embeddings.training and twin.qformer.training
    loss = twin(batch())
    loss.backward()
    assert all(p.grad is None for p in twin.parameters() if not p.requires_grad)
    assert all(p.grad is not None for p in twin.trainable_parameters().values())
    torch.optim.AdamW(twin.trainable_parameters().values(), lr=1e-2).step()
    assert all(torch.equal(p, frozen_before[n]) for n, p in twin.named_parameters() if not p.requires_grad)
    assert any(not torch.equal(p, trainable_before[n]) for n, p in twin.trainable_parameters().items())
    trainable, frozen = count_parameters(twin)
    assert trainable == sum(p.numel() for p in trainable_before.values()) and frozen > 0


def test_soft_prompts_sit_at_the_llm_embedding_scale():
    twin = build_twin("llama").eval()
    prompts = twin.soft_prompts(batch())
    assert prompts.shape == (3, 4, twin.llm.hidden_size)
    rms = prompts.pow(2).mean().sqrt().item()
    assert rms == pytest.approx(twin.llm.embedding_rms, rel=0.2)


@pytest.mark.parametrize("family", ["llama", "qwen"])
def test_decoder_batched_generation_equals_one_at_a_time(family):
    twin = build_twin(family).eval()
    together = twin.generate(batch(), max_new_tokens=6)
    alone = [twin.generate(batch([h], [x], None), max_new_tokens=6)[0] for h, x in zip(HISTORY, INPUTS)]
    assert together == alone
    assert any(together), "tiny model generated only empty strings; the test would prove nothing"
    beams = twin.generate(batch(), max_new_tokens=6, num_beams=3)
    assert beams == [twin.generate(batch([h], [x], None), 6, num_beams=3)[0] for h, x in zip(HISTORY, INPUTS)]


def test_decoder_training_sequence_matches_generation_prompt():
    """The loss is computed on the same [prefix; prompts; input; suffix] the generator sees."""
    twin = build_twin("llama").eval()
    prompts = twin.soft_prompts(batch())
    rows = twin.llm._prompt_rows(prompts, INPUTS)
    embeds, mask = pad_stack(rows, pad_left=True)
    assert mask.sum(1).tolist() == [r.shape[0] for r in rows]
    assert torch.equal(embeds[1, -rows[1].shape[0]:], rows[1])


@pytest.mark.parametrize("family", ["llama", "qwen"])
@pytest.mark.parametrize("position", ["before_input", "after_input"])
def test_decoder_loss_with_the_cached_prefix_is_the_models_own_loss_on_whole_rows(family, position):
    lm, tok = tiny_llama(family=family)
    llm = FrozenLLM(lm, tok, "decoder", "Personalize.", prompt_position=position)
    prefix_runs = []
    lm.model.register_forward_pre_hook(lambda m, args, kwargs: prefix_runs.append(kwargs.get("input_ids") is not None),
                                       with_kwargs=True)
    torch.manual_seed(0)
    prompts = torch.randn(3, 4, 48, requires_grad=True)
    targets = ["[1] and a longer target", "[2]", "[1]"]
    # Reference: the LLM's own loss over whole, right-padded [prefix; prompts; input; suffix; target; eos] rows.
    target_ids = [ids + [tok.eos_token_id] for ids in llm._ids(targets, 64)]
    rows = [torch.cat([row, llm._embed(ids)]) for row, ids in zip(llm._prompt_rows(prompts, INPUTS), target_ids)]
    embeds, mask = pad_stack(rows)
    labels = torch.full(mask.shape, -100)
    for i, (row, ids) in enumerate(zip(rows, target_ids)):
        labels[i, row.shape[0] - len(ids):row.shape[0]] = torch.tensor(ids)
    reference = lm(inputs_embeds=embeds, attention_mask=mask.long(), labels=labels).loss
    reference_grad, = torch.autograd.grad(reference, prompts)
    assert llm.cache_prefix, "decoder-only LLMs cache their prefix by default"
    for cached in (True, True, False):
        llm.cache_prefix = cached
        loss = llm.loss(prompts, INPUTS, targets)
        grad, = torch.autograd.grad(loss, prompts)
        torch.testing.assert_close(loss, reference)
        torch.testing.assert_close(grad, reference_grad)
    assert prefix_runs.count(True) == 1, "the prefix's keys and values are computed once, then reused"


def test_prefix_cache_follows_autocast_and_is_off_with_gradient_checkpointing():
    lm, tok = tiny_llama()
    llm = FrozenLLM(lm, tok, "decoder", "Personalize.")
    prompts = torch.randn(3, 4, 48)
    losses = []
    for cached in (True, False):
        llm.cache_prefix = cached
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(llm.loss(prompts, INPUTS, TARGETS).item())
    assert losses[0] == pytest.approx(losses[1], rel=2e-2)
    assert [autocast for *_, autocast in llm._prefix_states] == [torch.bfloat16]
    lm.activation_checkpointing_enable()
    assert not FrozenLLM(lm, tok, "decoder", "Personalize.").cache_prefix
    assert not FrozenLLM(*tiny_t5(), "encoder-decoder", "Personalize.").cache_prefix


def test_lm_head_reads_generations_last_position_as_a_dense_matrix():
    lm, tok = tiny_llama()
    FrozenLLM(lm, tok, "decoder", "Personalize.")
    head, seen = lm.get_output_embeddings(), []
    head.register_forward_pre_hook(lambda m, args: seen.append(args[0].stride()))  # runs after FrozenLLM's hook
    hidden = torch.randn(2, 7, 48)
    logits = head(hidden[:, -1:, :])  # the slice generate() takes of the prefill: batch stride 7 * 48
    assert seen == [(48, 48, 1)]
    torch.testing.assert_close(logits, hidden[:, -1:, :] @ head.weight.T)


def test_gradient_checkpointing_recomputes_the_frozen_llm_layers_with_the_same_gradients():
    from model import PromptTuning
    grads = []
    for checkpointing in (False, True):
        lm, tok = tiny_llama()
        if checkpointing:
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        torch.manual_seed(0)
        model = PromptTuning(FrozenLLM(lm, tok, "decoder", "Personalize."), 4).train()
        checkpointed = []
        for layer in lm.model.layers:
            run = layer._gradient_checkpointing_func if checkpointing else None
            layer._gradient_checkpointing_func = lambda *args, run=run, **kw: checkpointed.append(1) or run(*args, **kw)
        loss = model(batch())
        grads.append(torch.autograd.grad(loss, model.prompts)[0])
        assert len(checkpointed) == (len(lm.model.layers) if checkpointing else 0)
        # Only the checkpointed layers' own flag follows train(): attention and dropout stay in eval.
        assert all(not m.training for m in lm.modules() if not getattr(m, "gradient_checkpointing", False))
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("llm", ["llama", "qwen", "t5"])
def test_training_lowers_the_loss(llm):
    twin = build_twin(llm)
    twin.train()
    opt = torch.optim.AdamW(twin.trainable_parameters().values(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = twin(batch())
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05, losses


def test_t5_generation_returns_text_per_example():
    twin = build_twin("t5").eval()
    out = twin.generate(batch(), max_new_tokens=4)
    assert len(out) == 3 and all(isinstance(o, str) for o in out)
    assert out == [twin.generate(batch([h], [x], None), 4)[0] for h, x in zip(HISTORY, INPUTS)]


def test_mean_aggregator_trains_only_the_projection_and_gives_one_prompt():
    twin = build_twin("llama", aggregator="mean")
    assert set(n.split(".")[0] for n in twin.trainable_parameters()) == {"projection"}
    assert twin.soft_prompts(batch()).shape == (3, 1, twin.llm.hidden_size)


def test_trainable_state_dict_round_trip_and_mismatch_error():
    source, target = build_twin("llama"), build_twin("llama")
    with torch.no_grad():
        source.qformer.query_tokens.add_(1.0)
    target.load_trainable_state_dict(source.trainable_state_dict())
    assert torch.equal(target.qformer.query_tokens, source.qformer.query_tokens)
    other = build_twin("llama", queries=6)
    with pytest.raises(ValueError, match="query_tokens"):
        other.load_trainable_state_dict(source.trainable_state_dict())


def test_label_loss_adds_a_head_per_classification_task_to_training_only():
    plain, twin = build_twin("llama").eval(), build_twin("llama", label_loss=0.5).eval()
    assert list(twin.label_heads) == ["LaMP-1"]  # LaMP-4 has no labels: no head
    assert not plain.label_heads
    # Heads are built last, so everything else starts the same; answers never use the heads.
    assert twin.generate(batch(), max_new_tokens=4) == plain.generate(batch(), max_new_tokens=4)

    summary, counts = twin.summarize(batch())
    gold = torch.tensor([0, 1, 0])  # TARGETS as label indices
    expected = torch.nn.functional.cross_entropy(twin.label_heads["LaMP-1"](summary.mean(1)), gold)
    assert twin.label_prediction_loss(summary, counts, batch()).item() == pytest.approx(expected.item(), rel=1e-5)
    assert twin(batch()).item() == pytest.approx(plain(batch()).item() + 0.5 * expected.item(), rel=1e-5)


def test_label_loss_skips_unlabelled_examples_and_still_reaches_every_head():
    twin = build_twin("llama", label_loss=1.0).train()
    summary, counts = twin.summarize(batch(tasks=["LaMP-4"] * 3))
    loss = twin.label_prediction_loss(summary, counts, batch(tasks=["LaMP-4"] * 3))
    assert loss.item() == 0.0
    loss.backward()  # DDP needs a gradient (here zero) for every trainable weight
    assert all(p.grad is not None and not p.grad.any() for p in twin.label_heads.parameters())
    # An answer outside the label list is not a label: only the two labelled examples count.
    odd = batch(targets=["[1]", "maybe", "[1]"])
    summary, counts = twin.summarize(odd)
    logits = twin.label_heads["LaMP-1"](summary.mean(1))
    expected = torch.nn.functional.cross_entropy(logits[[0, 2]], torch.tensor([0, 0]), reduction="sum") / 3
    assert twin.label_prediction_loss(summary, counts, odd).item() == pytest.approx(expected.item(), rel=1e-5)


def test_label_loss_reaches_the_qformer_and_input_encoder_but_not_the_projection():
    twin = build_twin("llama", label_loss=1.0).train()
    summary, counts = twin.summarize(batch())
    twin.label_prediction_loss(summary, counts, batch()).backward()
    reached = {name.split(".")[0] for name, p in twin.trainable_parameters().items()
               if p.grad is not None and p.grad.any()}
    assert reached == {"input_encoder", "qformer", "label_heads"}


def test_history_word_counts_are_how_many_items_hold_each_token_the_input_lacks():
    # 4 is in two items (twice in one), 9 and 5 in one; 2 is in the input, 0 is special.
    counts = history_word_counts(source=[1, 2, 3], items=[[4, 9], [5, 0], [4, 4, 2]], special={0}, vocab_size=10)
    assert counts.tolist() == [0, 0, 0, 0, 2, 1, 0, 0, 0, 1]
    assert history_word_counts(source=[1], items=[], special=set(), vocab_size=3).tolist() == [0, 0, 0]


def test_word_prompts_choose_among_the_history_words_and_favour_recurring_ones():
    words = WordPrompts(in_dim=4, embedding_table=torch.eye(6), count=2)
    x = torch.randn(2, 2, 4)
    # Example 0: tokens 1 and 3 are held by 1 and 4 items; example 1 holds none: any token.
    counts = torch.tensor([[0, 1, 0, 4, 0, 0], [0, 0, 0, 0, 0, 0.]])
    logits = words.logits(x, torch.eye(6), counts)  # [2, 2, 6]
    assert torch.isinf(logits[0][:, [0, 2, 4, 5]]).all() and torch.isfinite(logits[0][:, [1, 3]]).all()
    assert torch.isfinite(logits[1]).all()
    with torch.no_grad():
        words.habit_weight.fill_(0.0)
    flat = words.logits(x, torch.eye(6), counts)
    # a = 1 adds log 4 to the token four items hold, log 1 = 0 to the other.
    assert torch.allclose(logits[0][:, 3] - flat[0][:, 3], torch.full((2,), math.log(4)))
    assert torch.allclose(logits[0][:, 1], flat[0][:, 1])


def test_word_prompts_follow_the_soft_prompts_and_a_peaked_one_is_that_tokens_embedding():
    twin = build_twin("llama", queries=4, word_prompts=2).eval()
    table = twin.llm.model.get_input_embeddings().weight  # [V, D]
    summary, counts = twin.summarize(batch())
    prompts = twin.soft_prompts(batch())  # [3, 4 + 2, D]
    assert prompts.shape == (3, 6, table.shape[1])
    assert torch.allclose(prompts[:, :4], twin.projection(summary).to(prompts.dtype))
    word_logits = twin.words.logits(summary[:, :2], table, twin.word_counts(batch()))  # [3, 2, V]
    assert torch.allclose(prompts[:, 4:], WordPrompts.mix(word_logits, table).to(prompts.dtype))
    # Examples using fewer queries (inference_queries) keep at most as many word prompts as queries.
    rows = twin._prompts(summary, [4, 1, 3], word_logits)
    assert [len(row) for row in rows] == [6, 2, 5] and torch.equal(rows[1][1], prompts[1, 4])
    peaked = torch.full((1, 1, table.shape[0]), -1e4)
    peaked[0, 0, 7] = 0.0
    assert torch.allclose(WordPrompts.mix(peaked, table)[0, 0], table[7])
    with pytest.raises(ValueError, match="word_prompts: 5 word prompts"):
        build_twin("llama", queries=4, word_prompts=5)


def test_answer_words_loss_is_the_mixtures_negative_log_likelihood_of_the_history_words():
    twin = build_twin("llama", queries=4, word_prompts=2, word_loss=0.5).eval()  # eval: no dropout, same twice
    tok = twin.llm.tokenizer
    examples = batch(history=[["galaxy surveys"], ["robots and climate"], []],
                     inputs=["a position paper", "robots", "music"], targets=["galaxy", "robots climate", "music"],
                     tasks=["LaMP-4"] * 3)
    ids = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    summary, counts = twin.summarize(examples)
    word_counts = twin.word_counts(examples)
    word_logits = twin.words.logits(summary[:, :2], twin.llm.model.get_input_embeddings().weight, word_counts)
    # Example 1 keeps only "climate"'s tokens ("robots" is in its input); example 3 has no history.
    expected = 0.0
    for i, (words, source) in enumerate([(ids("galaxy"), ids("a position paper")),
                                         (ids(" climate"), ids("robots"))]):
        words = [w for w in dict.fromkeys(words) if w not in source]
        assert words
        mixture = word_logits[i].log_softmax(-1).exp().mean(0).log()  # [V]
        expected -= mixture[words].mean().item()
    assert twin.answer_words_loss(word_logits, word_counts, examples.targets).item() == pytest.approx(expected / 3, rel=1e-4)
    lm_loss = twin.llm.loss(twin._prompts(summary, counts, word_logits), examples.inputs, examples.targets)
    assert twin(examples).item() == pytest.approx(lm_loss.item() + 0.5 * expected / 3, rel=1e-4)
    # It teaches the word prompts and what feeds them, not the projection's soft prompts.
    twin.answer_words_loss(word_logits, word_counts, examples.targets).backward()
    reached = {name.split(".")[0] for name, p in twin.trainable_parameters().items()
               if p.grad is not None and p.grad.any()}
    assert reached == {"input_encoder", "qformer", "words"}
    # Tokens no word prompt may be are -inf logits; none of that may reach a gradient as NaN.
    assert all(torch.isfinite(p.grad).all() for p in twin.trainable_parameters().values() if p.grad is not None)


def test_llm_families_are_entries_that_frozen_llm_and_the_loader_read(monkeypatch):
    llama, llama_tok = tiny_llama()
    assert llm_family(llama.config).name == "decoder" and llm_family(tiny_t5()[0].config).name == "encoder-decoder"
    # A new family is one entry: here a decoder-only one framed "Q: <input> A:" whatever its chat template.
    plain = dataclasses.replace(LLM_FAMILIES["decoder"], name="plain-decoder", frame=lambda tok, instruction: (
        tok("Q:", add_special_tokens=False)["input_ids"], tok(" A:", add_special_tokens=False)["input_ids"]))
    monkeypatch.setitem(LLM_FAMILIES, "plain-decoder", plain)
    llm = FrozenLLM(llama, llama_tok, "plain-decoder", "not written out")
    assert llm.prefix_ids == llama_tok("Q:", add_special_tokens=False)["input_ids"] and llm.cache_prefix
    assert torch.isfinite(llm.loss(None, INPUTS, TARGETS))
    assert len(llm.generate(None, INPUTS, max_new_tokens=2)) == len(INPUTS)
    with pytest.raises(ValueError, match="LLM kind must be one of 'encoder-decoder', 'decoder', 'plain-decoder'"):
        FrozenLLM(llama, llama_tok, "diffusion", "Personalize.")


def test_relevance_rows_hold_each_items_cosine_to_the_query_and_to_each_spelled_out_option():
    twin = build_twin("llama", relevance=True).eval()
    question = 'For an author who has written the paper with the title "T", which reference is related? [1]: "{}" [2]: "{}"'
    history = [["graph neural networks", "galaxy surveys", "query optimization"], ["robots and climate"]]
    examples = batch(history=history, inputs=[question.format("graph learning", "star formation"), "a position paper"],
                     targets=["[1]", "[2]"])
    encoder = twin.behavioral_encoder
    embedded, mask = encoder(history)  # [2, 3, H], [2, 3]
    queries = encoder.encode_texts(examples.query)  # [2, H]
    rows = relevance_rows(encoder, embedded, mask, queries, examples.candidates)  # [2, 3, 6]

    def unit(texts):
        return torch.nn.functional.normalize(encoder.encode_texts(texts), dim=-1)
    items, options = unit(history[0]), unit(["graph learning", "star formation"])
    assert torch.allclose(rows[0, :, 0], items @ unit(["graph learning star formation"])[0], atol=1e-5)
    assert rows[0, :, 1].tolist() == [1.0, 1.0, 1.0]
    cosines = items @ options.T  # [3, 2]
    centred = (cosines - cosines.mean(1, keepdim=True)) * CANDIDATE_SCALE
    assert torch.allclose(rows[0, :, 2:4], cosines, atol=1e-5) and torch.allclose(rows[0, :, 4:], centred, atol=1e-5)
    # The second question spells out no options, and its padded slots stay zero.
    assert torch.allclose(rows[1, 0, 0], (unit(history[1]) @ unit(["a position paper"]).T)[0, 0], atol=1e-5)
    assert not rows[1, 0, 1:].any() and not rows[1, 1:].any()

    summary, _ = twin.summarize(examples)
    swapped = batch(history=history, inputs=[question.format("star formation", "graph learning"), "a position paper"],
                    targets=["[2]", "[2]"])
    assert not torch.allclose(twin.summarize(swapped)[0][0], summary[0])  # the Q-Former reads which option is which
    with pytest.raises(ValueError, match="relevance signals have 2 slots"):
        relevance_rows(encoder, embedded, mask, queries, [("a", "b", "c"), ()])
