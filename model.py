"""Behavioral Twin: a frozen LLM personalized by soft prompts distilled from history.

    history texts --BehavioralEncoder (frozen, cached)--> [B, P, H] + mask [B, P]
    query text    --InputEncoder (top layers tuned)-----> [B, T, H] + mask [B, T]
    QFormer: Q learnable queries attend to both ---------> [B, Q, H]
    PromptProjection H -> D at the LLM's embedding scale -> [B, Q, D]
    FrozenLLM: [instruction; prompts; input] -> loss or generated text

Shapes: B batch, P history items, T input tokens, H encoder width, D LLM width,
Q queries. Which parameters train is decided in one place, `requires_grad`, set by
`freeze` when the model is built; the optimizer and the checkpoint both read it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, DynamicCache

from dataset.numeric import NUM_FEATURES
from dataset.history_store import HistoryStore, micro_batches
from dataset.memory import HistoryMemory
from trainers.config import InputOutput, Pooling, PromptPosition, QFormerInit, Answer, check_choice
from dataset.tasks import lamp1_paper_title


# ----------------------------------------------------------------------------- helpers

def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in module.parameters() if not p.requires_grad)
    return trainable, frozen


def pool(states: torch.Tensor, mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """states [N, T, H], mask [N, T] -> [N, H]."""
    check_choice("pooling", pooling, Pooling)
    if pooling == "cls":
        return states[:, 0]
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def transformer_layers(backbone: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks of an encoder (BERT: encoder.layer; others: layers)."""
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers", "block"):
            return module
    raise ValueError(f"cannot find the transformer layers of {type(backbone).__name__}")


def random_token_embeddings(embedding_table: torch.Tensor, count: int) -> torch.Tensor:
    """[1, count, D] copies of random rows of an LLM's token-embedding table: soft prompts
    that start at the LLM's own scale and among real tokens (Lester et al. 2021)."""
    rows = torch.randint(0, embedding_table.shape[0], (count,))
    return embedding_table[rows].detach().float().clone().unsqueeze(0)


def pad_stack(rows: list[torch.Tensor], pad_left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad variable-length [L_i, D] tensors to [N, L, D] with a bool mask [N, L]."""
    length = max(r.shape[0] for r in rows)
    out = rows[0].new_zeros(len(rows), length, *rows[0].shape[1:])
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
    for i, r in enumerate(rows):
        span = slice(length - r.shape[0], length) if pad_left else slice(0, r.shape[0])
        out[i, span] = r
        mask[i, span] = True
    return out, mask


# ----------------------------------------------------------------------------- encoders

class BehavioralEncoder(nn.Module):
    """Frozen text encoder: one vector per history item.

    With a `store`, each distinct text is encoded once (`precompute` is the pass before
    training) and read back from the store ever after. Without one, every call encodes
    every item it is given: the cost the store removes (bench/train_throughput.py).
    Padded history slots are never encoded: only the batch's real items go through the
    backbone, each padded to the longest item of its encoding micro-batch.
    `pad_to_max_length=True` pads every item to `max_length` instead; it
    exists to measure that cost and changes no result (padding is masked in the pooling).
    The store's fill cuts micro-batches of at most `batch_size` items and, with
    `batch_tokens`, at most that many padded tokens (long items in small batches).
    """

    def __init__(self, backbone: nn.Module, tokenizer, pooling: str, max_length: int,
                 store: HistoryStore | None = None, batch_size: int = 64, pad_to_max_length: bool = False,
                 batch_tokens: int = 0):
        super().__init__()
        self.backbone = freeze(backbone)
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.max_length = max_length
        self.store = store
        self.batch_size = batch_size
        self.pad_to_max_length = pad_to_max_length
        self.batch_tokens = batch_tokens
        self.hidden_size = backbone.config.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @torch.no_grad()
    def _encode_batch(self, texts: list[str]) -> torch.Tensor:
        """One micro-batch through the backbone: texts (n) -> [n, H] float32 on its device."""
        tokens = self.tokenizer(texts, padding="max_length" if self.pad_to_max_length else True, truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(self.device)
        states = self.backbone(**tokens).last_hidden_state  # [n, t, H]
        return pool(states, tokens["attention_mask"], self.pooling).float()

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Tokens of each text as the backbone reads it (truncated to max_length)."""
        return [len(ids) for ids in self.tokenizer(texts, truncation=True, max_length=self.max_length)["input_ids"]]

    def precompute(self, texts: list[str], progress: bool = False, rank: int = 0, world: int = 1) -> None:
        """Encode into the store every text it does not hold yet, or with world > 1 this rank's
        share of them (see dataset/history_store.py); no-op without a store."""
        if self.store is not None:
            self.store.fill(texts, lambda chunk: self._encode_batch(chunk).cpu().numpy(), self.batch_size, progress,
                            self.batch_tokens, self.token_lengths if self.batch_tokens else None, rank, world)

    @torch.no_grad()
    def encode_texts(self, texts: list[str], progress: bool = False) -> torch.Tensor:
        """texts (N) -> [N, H] float32 on the backbone's device."""
        if not texts:
            return torch.zeros(0, self.hidden_size, device=self.device)
        if self.store is not None:
            self.precompute(texts, progress)
            return torch.from_numpy(self.store.rows(texts)).to(self.device)
        chunks = micro_batches(texts, self.batch_size)
        rows = torch.cat([self._encode_batch(chunk) for chunk in chunks])  # [N_distinct, H]
        row_of = {text: i for i, text in enumerate(t for chunk in chunks for t in chunk)}
        return rows[torch.tensor([row_of[t] for t in texts], device=rows.device)]

    def forward(self, history: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """history: B lists of item texts -> embeddings [B, P, H], mask [B, P] (True = item)."""
        rows = self.encode_texts([t for items in history for t in items])  # [N_items, H]
        per_example, start = [], 0
        for items in history:
            per_example.append(rows[start:start + len(items)] if items else rows.new_zeros(1, self.hidden_size))
            start += len(items)
        embeddings, mask = pad_stack(per_example)
        for i, items in enumerate(history):  # an empty history has one zero slot, masked out
            if not items:
                mask[i] = False
        return embeddings, mask


class InputEncoder(nn.Module):
    """Encodes the current query; only its top `tune_layers` blocks (and a final norm) train,
    with the checkpoint's dropout or `dropout` (>= 0) in place of it.

    Returns token-level states so the Q-Former's cross-attention has real keys to choose
    from; `output="pooled"` gives a single vector (a softmax over one key is
    always 1, which reduces that cross-attention to a linear add; kept for the ablation).

    While none of its weights train (tune_layers=0) its states are a pure function of the
    text, so each distinct text's token states [T_i, H] are kept, up to `cache_mb` MiB per
    process (on the encoder's device), and a text seen before is not encoded again: from
    a run's second epoch on, and in every evaluation after the first, it costs nothing.
    """

    def __init__(self, backbone: nn.Module, tokenizer, tune_layers: int, max_length: int,
                 pooling: Pooling = "mean", output: InputOutput = "tokens", cache_mb: float = 0, dropout: float = -1):
        super().__init__()
        if dropout >= 0:  # BERT-style encoders read every dropout probability, attention's too, from an nn.Dropout
            for module in backbone.modules():
                if isinstance(module, nn.Dropout):
                    module.p = dropout
        check_choice("input_output", output, InputOutput)
        self.backbone = freeze(backbone)
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pooling = pooling
        self.output = output
        self.cache_bytes = int(cache_mb * 2**20)
        self.cached_states: dict[str, torch.Tensor] = {}  # text -> [T_i, H]
        self.cached_bytes = 0
        layers = transformer_layers(backbone)
        for layer in list(layers)[len(layers) - tune_layers:] if tune_layers > 0 else []:
            for p in layer.parameters():
                p.requires_grad_(True)
        for name, module in backbone.named_modules():  # pre-norm models end with a final norm
            if tune_layers > 0 and name.split(".")[-1] in ("final_layer_norm", "norm", "ln_f"):
                for p in module.parameters():
                    p.requires_grad_(True)

    @property
    def keeps_states(self) -> bool:
        """Whether it keeps the texts' states: it has room for them and none of its weights train."""
        return bool(self.cache_bytes) and not any(p.requires_grad for p in self.backbone.parameters())

    def forward(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts (B) -> states [B, T, H] and mask [B, T]; pooled: [B, 1, H] and [B, 1]."""
        keeps = self.keeps_states
        if not keeps and self.cached_states:  # states from before its weights trained are not its states now
            self.cached_states, self.cached_bytes = {}, 0
        states, mask = self._cached(texts) if keeps else self._encode(texts)
        if self.output == "pooled":
            return pool(states, mask, self.pooling).unsqueeze(1), mask.new_ones(len(texts), 1)
        return states, mask

    def _encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(self.backbone.parameters()).device
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt").to(device)
        return self.backbone(**tokens).last_hidden_state, tokens["attention_mask"].bool()

    @torch.no_grad()
    def _cached(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """As _encode, encoding only the texts not kept yet (and keeping them while there is room)."""
        rows = {text: self.cached_states[text] for text in texts if text in self.cached_states}
        missing = [text for text in dict.fromkeys(texts) if text not in rows]
        if missing:
            states, mask = self._encode(missing)
            for text, row in zip(missing, (s[m] for s, m in zip(states, mask))):  # [T_i, H], its own copy
                rows[text] = row
                if self.cached_bytes + row.nbytes <= self.cache_bytes:
                    self.cached_states[text] = row
                    self.cached_bytes += row.nbytes
        return pad_stack([rows[text] for text in texts])


# ----------------------------------------------------------------------------- Q-Former

class CrossAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention (batch_first; same weights, same checkpoints) with a faster way for
    few queries to read many keys: instead of projecting every key and value, each head's
    query is carried into the keys' own space.

        logits_h = (q W_q,h + b_q,h) W_k,h kv^T / sqrt(d)                  [B, heads, Q, K]
        a_h      = dropout(softmax(logits_h))
        out      = concat_h(a_h kv W_v,h^T + sum(a_h) b_v,h) W_o^T + b_o          [B, Q, H]

    The same function: b_k adds one constant to all of a query's logits, which softmax drops.
    It costs heads * Q * H multiply-adds per key instead of 2 * H * H, so it is taken when
    heads * Q < H: the Q-Former's few queries reading up to max_history items and the input's
    tokens. Any other call (attention weights asked for, a mask over queries, key is not
    value) is nn.MultiheadAttention's own.
    """

    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__(hidden, heads, dropout=dropout, batch_first=True)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None, **kwargs):
        if key is not value or need_weights or attn_mask is not None or kwargs or \
                self.num_heads * query.shape[1] >= self.embed_dim:
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, **kwargs)
        batch, count, hidden = query.shape
        heads, width = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)  # [H, H] each, (out, in)
        b_q, _, b_v = self.in_proj_bias.chunk(3)
        queries = F.linear(query, w_q, b_q).view(batch, count, heads, width)
        probes = torch.einsum("bqhd,hdk->bhqk", queries, w_k.view(heads, width, hidden)) / math.sqrt(width)
        logits = torch.einsum("bhqk,btk->bhqt", probes, key)  # [B, heads, Q, K]
        if key_padding_mask is not None:  # True = not a key (nn.MultiheadAttention's convention)
            logits = logits.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
        weights = F.dropout(logits.softmax(-1), self.dropout, self.training)
        mixed = torch.einsum("bhqt,btk->bhqk", weights, key)  # each head's weighted mean of the raw keys
        kept = weights.sum(-1).transpose(1, 2).unsqueeze(-1)  # [B, Q, heads, 1]: 1 but for dropout
        values = torch.einsum("bhqk,hdk->bqhd", mixed, w_v.view(heads, width, hidden)) + kept * b_v.view(heads, width)
        return self.out_proj(values.reshape(batch, count, hidden)), None


class QFormerLayer(nn.Module):
    """Queries read the history, then the input, then each other.

    history cross-attn -> add & norm -> input cross-attn -> add & norm -> self-attn ->
    add & norm -> feed-forward -> add & norm. Post-norm by default (as BERT and BLIP-2's
    Q-Former); `norm_first=True` gives the pre-norm variant, which is steadier when deep.
    """

    def __init__(self, hidden: int, heads: int, dropout: float, norm_first: bool = False, item_features: bool = False):
        super().__init__()
        self.norm_first = norm_first
        self.history_attn = CrossAttention(hidden, heads, dropout)
        if item_features:  # the items' feature rows get their own cross-attention, right after the history's
            self.item_attn = CrossAttention(hidden, heads, dropout)
            self.item_norm = nn.LayerNorm(hidden)
        self.input_attn = CrossAttention(hidden, heads, dropout)
        self.self_attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * hidden, hidden))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    @torch.no_grad()
    def align_(self, input_scale: float = 2.0) -> None:
        """History attention: values pass through (W_v = W_o = I). Input attention:
        W_q = W_k = input_scale * I, so its logits start as scaled dot products between
        the queries and the input tokens. See QFormer for why.

        The scale sets how sharp that first search is. Queries and keys arrive
        layer-normed (RMS 1 per dimension), so a head of width d starts with logits of
        about input_scale**2 * sqrt(d) * cos(query, token): with d = 48 (MiniLM, 8 heads)
        a scale of 0.5 gives logits within +-1.7, nearly uniform attention over the whole
        input, while 2.0 gives +-28, which singles out the few most similar tokens.
        """
        hidden = self.history_attn.embed_dim
        eye = torch.eye(hidden)
        self.history_attn.in_proj_weight[2 * hidden:] = eye
        self.history_attn.out_proj.weight.copy_(eye)
        self.input_attn.in_proj_weight[:hidden] = input_scale * eye
        self.input_attn.in_proj_weight[hidden:2 * hidden] = input_scale * eye

    def _residual(self, x: torch.Tensor, norm: nn.LayerNorm, sublayer) -> torch.Tensor:
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    @staticmethod
    def _cross(attn: CrossAttention, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor):
        """q [B, Q, H] attends to kv [B, K, H] where kv_mask [B, K] is True; rows with no key give 0."""
        empty = ~kv_mask.any(dim=1)  # [B]
        # A fully masked row would softmax over nothing (NaN, also in the backward pass):
        # let it see slot 0 and zero its output instead.
        kv_mask = kv_mask.clone()
        kv_mask[empty, 0] = True
        out = attn(q, kv, kv, key_padding_mask=~kv_mask, need_weights=False)[0]
        return out * (~empty).to(out.dtype)[:, None, None]

    def forward(self, queries, history, history_mask, inputs, input_mask, items=None, self_mask=None):
        """items [B, P, H]: one featured token per history item (same mask as the history), or None.
        self_mask [Q, Q] bool, True = may not attend (causal queries), or None."""
        x = self._residual(queries, self.norms[0], lambda h: self._cross(self.history_attn, h, history, history_mask))
        if items is not None:
            x = self._residual(x, self.item_norm, lambda h: self._cross(self.item_attn, h, items, history_mask))
        x = self._residual(x, self.norms[1], lambda h: self._cross(self.input_attn, h, inputs, input_mask))
        x = self._residual(x, self.norms[2],
                           lambda h: self.self_attn(h, h, h, attn_mask=self_mask, need_weights=False)[0])
        return self._residual(x, self.norms[3], self.ffn)


class QFormer(nn.Module):
    """Q learnable queries compress any number of history items into [B, Q, H].

    init="aligned" (default) starts every layer as a similarity search: the history
    attention passes the history through unchanged (value and output projections =
    identity), so the queries begin as the user's average interest, and the input
    attention's query and key projections start as the same scaled identity, so the
    queries first look at the input tokens most similar to that interest. History and
    input live in one space (the input encoder starts from the history encoder's
    weights). From random init (init="random", as BLIP-2) the two halves of the job wait
    on each other: attention cannot learn where to look until the values say what is
    there, and vice versa. bench/qformer_probe.py compares the two inits (RESULTS.md).
    """

    def __init__(self, hidden: int, num_queries: int = 8, num_layers: int = 2, heads: int = 8,
                 dropout: float = 0.1, norm_first: bool = False, init: QFormerInit = "aligned",
                 item_features: int = 0, causal_queries: bool = False):
        super().__init__()
        check_choice("qformer_init", init, QFormerInit)
        self.query_tokens = nn.Parameter(torch.randn(1, num_queries, hidden) * 0.02)  # BLIP-2 init
        self._num_queries = num_queries  # not read from the weights: ZeRO-3 partitions them outside forward()
        # History embeddings and encoder states come at their encoder's own scale; a norm
        # on the way in makes the attention logits independent of it.
        self.history_norm = nn.LayerNorm(hidden)
        self.input_norm = nn.LayerNorm(hidden)
        # Item features (relevance and numeric signals, F per item): a small MLP lifts each
        # item's row to the encoder width, added to the item's own embedding so the queries
        # can ask "the rating of which review?" and not only "which ratings".
        self.item_features = item_features
        self.item_proj = (nn.Sequential(nn.Linear(item_features, hidden), nn.GELU(), nn.Linear(hidden, hidden))
                          if item_features else None)
        self.item_norm = nn.LayerNorm(hidden) if item_features else None
        # Causal self-attention among the queries makes query k depend on queries 1..k only,
        # so the first K outputs are the same whether K or all queries run: any prefix is a
        # complete summary (with nested query dropout in training, a good one).
        self.causal_queries = causal_queries
        self.layers = nn.ModuleList(QFormerLayer(hidden, heads, dropout, norm_first, item_features=bool(item_features))
                                    for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(hidden) if norm_first else nn.Identity()
        if init == "aligned":
            for layer in self.layers:
                layer.align_()

    @property
    def num_queries(self) -> int:
        return self._num_queries

    def forward(self, history, history_mask, inputs, input_mask, features=None, num_queries=None) -> torch.Tensor:
        """history [B, P, H] + mask [B, P], inputs [B, T, H] + mask [B, T] -> [B, Q, H].

        features [B, P, F]: each item's feature row (needed iff built with item_features = F).
        num_queries: run only the first K queries -> [B, K, H] (None = all).
        """
        k = num_queries or self.num_queries
        x = self.query_tokens[:, :k].expand(history.shape[0], -1, -1)
        history, inputs = self.history_norm(history), self.input_norm(inputs)
        items = None
        if self.item_proj is not None:
            if features is None or features.shape[-1] != self.item_features:
                raise ValueError(f"this Q-Former reads {self.item_features} features per history item: pass "
                                 f"features [B, P, {self.item_features}] (relevance and numeric signals)")
            items = self.item_norm(history + self.item_proj(features.to(history.dtype)))  # [B, P, H]
        self_mask = None
        if self.causal_queries:
            self_mask = torch.ones(k, k, dtype=torch.bool, device=x.device).triu(1)  # True = masked
        for layer in self.layers:
            x = layer(x, history, history_mask, inputs, input_mask, items, self_mask)
        return self.final_norm(x)


RESIDUAL_INIT = 0.1  # the user residual starts at ~10% of the prompts' RMS


class PromptProjection(nn.Module):
    """H -> D soft prompts: a learned base prompt plus a user-dependent residual.

        prompts = base + target_rms * W_out(LayerNorm(GELU(W_in h)))        [B, Q, D]

    `base` [1, Q, D] starts as Q random rows of the LLM's own token-embedding table, so the
    prompts start at the LLM's scale and in the region of real tokens; W_out starts at
    zero. So at step 0 every user gets the same well-formed prompt, which the LLM learns to
    use as fast as in prompt tuning, and the user-dependent part grows only along the
    directions the loss rewards. Why not a Linear-GELU-LayerNorm alone: its LayerNorm gives
    every prompt full norm, so whatever in h does not matter (most of it, at first) reaches
    the frozen LLM as loud per-user noise, which it must first learn to ignore before it can
    even learn the answer format.
    `target_rms` (the RMS of the LLM's token embeddings) keeps the residual's learning
    speed the same for LLMs whose embeddings live at very different scales (T5's are large).
    """

    def __init__(self, in_dim: int, embedding_table: torch.Tensor, num_prompts: int):
        super().__init__()
        out_dim = embedding_table.shape[1]
        self.base = nn.Parameter(random_token_embeddings(embedding_table, num_prompts))  # [1, Q, D]
        self.fc = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)
        self.out = nn.Linear(out_dim, out_dim)
        nn.init.normal_(self.out.weight, std=RESIDUAL_INIT / out_dim ** 0.5)
        nn.init.zeros_(self.out.bias)
        rms = embedding_table.detach().float().pow(2).mean().sqrt()
        self.register_buffer("target_rms", rms, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, K, H] -> [B, K, D]; K <= Q (a prefix of the queries gets the same prefix of `base`)."""
        return self.base[:, :x.shape[1]] + self.target_rms * self.out(self.norm(F.gelu(self.fc(x))))


WORD_SCALE = 16.0  # cosine -> logit: a word prompt aligned with one token puts ~all its weight there


class WordPrompts(nn.Module):
    """K soft prompts that are words: each a mixture of the frozen LLM's own token embeddings,
    over the tokens the user's history holds.

        logit_k(v) = WORD_SCALE * cos(W h_k, E_v) + a * log n_v   where n_v >= 1, else -inf   [B, K, V]
        word prompt k = softmax(logit_k) @ E                                                 [B, K, D]

    n_v is how many of the user's history items hold token v (0 for the input's tokens and
    special ones), a a learned weight. Why: a free-text answer often needs exact words that
    only the history holds (a user's sign-off, hashtag, name of a thing). A projected soft
    prompt carries such a word only as a direction the frozen LLM has to learn to spell out;
    a word prompt near the word's own embedding is text the LLM can copy. Choosing among
    the history's words, not the whole vocabulary, makes that a copy: what a user writes
    again and again (large n_v) is a habit, what one item holds is its topic.
    `BehavioralTwin.answer_words_loss` trains the choice towards the answer's words that the
    history has and the input lacks. A user whose history holds no such word gets a mixture
    over the whole vocabulary. E is the LLM's frozen input embedding table, passed in, never copied.
    """

    def __init__(self, in_dim: int, embedding_table: torch.Tensor, count: int):
        super().__init__()
        self.count = count
        self.fc = nn.Linear(in_dim, embedding_table.shape[1])
        self.habit_weight = nn.Parameter(torch.tensor(1.0))  # a: how much a word's recurrence raises it
        inverse_norms = embedding_table.detach().float().norm(dim=-1).clamp(min=1e-6).reciprocal()
        self.register_buffer("inverse_norms", inverse_norms, persistent=False)  # [V]

    def logits(self, x: torch.Tensor, embedding_table: torch.Tensor, word_counts: torch.Tensor) -> torch.Tensor:
        """x [B, K, H] (the first K Q-Former outputs), word_counts [B, V] (`history_word_counts`)
        -> [B, K, V], float32."""
        unit = F.normalize(self.fc(x).float(), dim=-1)
        similarity = WORD_SCALE * (unit @ embedding_table.float().T) * self.inverse_norms  # [B, K, V]
        allowed = word_counts > 0
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # no word to copy: any token
        habit = self.habit_weight * word_counts.clamp(min=1).log()  # [B, V]
        return torch.where(allowed.unsqueeze(1), similarity + habit.unsqueeze(1), float("-inf"))

    @staticmethod
    def mix(logits: torch.Tensor, embedding_table: torch.Tensor) -> torch.Tensor:
        """[B, K, V] -> the word prompts [B, K, D], at the table's scale and dtype."""
        return logits.softmax(-1).to(embedding_table.dtype) @ embedding_table


# ----------------------------------------------------------------------------- frozen LLM

CHOICE_ROWS = 64  # (example, allowed answer) rows per forward pass of FrozenLLM.score_choices


def _dense_rows(head: nn.Module, args: tuple) -> tuple | None:
    """LM-head pre-hook. Generation gives the head the last prefill position as a [B, 1, D]
    slice whose batch stride is still the whole sequence's; for such an input torch's matmul
    (CPU) copies the head's entire [V, D] weight before a batched product, in every answer.
    A copy of the B rows with ordinary strides keeps it a plain matrix product. Same numbers
    either way."""
    x = args[0]
    if x.dim() == 3 and x.shape[1] == 1 and x.stride(0) != x.shape[2]:
        return (x.clone(memory_format=torch.contiguous_format), *args[1:])
    return None


# LLM families, as data: each entry says what differs between decoder-only and
# encoder-decoder LLMs (how the input and the target are laid out and scored, padding, how
# a model is loaded). FrozenLLM and trainers.model_registry.load_llm read the entry of the
# model's family and never branch on it, so adding a family is one more entry.

@dataclass(frozen=True)
class LLMFamily:
    name: str
    """What load_llm returns and FrozenLLM takes as `kind`."""
    auto_model: type
    """The transformers auto class that loads a model of the family."""
    matches: Callable[[object], bool]
    """Whether a model's transformers config belongs to the family."""
    pad_with_eos: bool
    """A tokenizer without a pad token pads with EOS (no new embedding row in a frozen LLM)."""
    generation_pads_left: bool
    """Generation batches are left-padded, so every row's answer starts at the same position."""
    caches_prefix: bool
    """The instruction prefix comes first in a causal stack: its keys and values can be reused."""
    frame: Callable[[object, str], tuple[list[int], list[int]]]
    """(tokenizer, instruction) -> the token ids before the soft prompts and after the input."""
    target_logits: Callable[..., torch.Tensor]
    """(llm, prompts, inputs, target ids ending in EOS) -> the logits that predict each target token,
    [N_target, V], example after example: the training loss and label scoring both read them."""


def _decoder_frame(tok, instruction: str) -> tuple[list[int], list[int]]:
    """[prefix; prompts; input; suffix]: the chat template's system turn and user turn around the
    input when there is one, else the instruction (after BOS) and "Answer:"."""
    if getattr(tok, "chat_template", None):
        marker = "\u0000"  # split the rendered chat around a placeholder user message
        text = tok.apply_chat_template(
            [{"role": "system", "content": instruction}, {"role": "user", "content": marker}],
            tokenize=False, add_generation_prompt=True)
        before, after = text.split(marker)
        return tok(before, add_special_tokens=False)["input_ids"], tok(after, add_special_tokens=False)["input_ids"]
    before = tok(instruction + "\n", add_special_tokens=True)["input_ids"]  # BOS if the model uses one
    return before, tok("\nAnswer:", add_special_tokens=False)["input_ids"]


def _encoder_decoder_frame(tok, instruction: str) -> tuple[list[int], list[int]]:
    """The encoder reads [prompts; input; eos]; the instruction is not written out."""
    return [], [tok.eos_token_id]


def _decoder_target_logits(llm: "FrozenLLM", prompts, inputs: list[str], target_ids: list[list[int]]) -> torch.Tensor:
    """[prefix; prompts; input; suffix; target; eos], right-padded: the logits of the positions
    that predict a target token."""
    rows = [torch.cat([row, llm._embed(ids)])
            for row, ids in zip(llm._prompt_rows(prompts, inputs, prefix=not llm.cache_prefix), target_ids)]
    embeds, mask = pad_stack(rows)  # right padding: positions 0..L_i-1 (after the prefix), as in generation
    cache = None
    if llm.cache_prefix:  # rows start after the prefix; the mask covers prefix + rows
        cache = llm._prefix_cache(len(rows))
        mask = torch.cat([mask.new_ones(len(rows), len(llm.prefix_ids)), mask], dim=1)
    hidden = llm.model.get_decoder()(inputs_embeds=embeds, attention_mask=mask.long(), cache=cache,
                                     use_cache=llm.cache_prefix).last_hidden_state
    # The state at position p predicts token p+1: keep only states that predict a target
    # token, so the vocabulary projection runs on a handful of positions, not all.
    predicts_target = torch.zeros(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    for i, (row, ids) in enumerate(zip(rows, target_ids)):
        predicts_target[i, row.shape[0] - len(ids) - 1: row.shape[0] - 1] = True
    return llm.model.get_output_embeddings()(hidden[predicts_target])  # [N_target, V]


def _encoder_decoder_target_logits(llm: "FrozenLLM", prompts, inputs: list[str],
                                   target_ids: list[list[int]]) -> torch.Tensor:
    """The encoder reads [prompts; input; eos] (right-padded); the decoder's logits at each target token."""
    embeds, mask = pad_stack(llm._prompt_rows(prompts, inputs))
    labels = torch.full((len(inputs), max(map(len, target_ids))), -100, dtype=torch.long, device=llm.device)
    for i, ids in enumerate(target_ids):
        labels[i, :len(ids)] = torch.tensor(ids)
    logits = llm.model(inputs_embeds=embeds, attention_mask=mask.long(), labels=labels).logits  # [B, T, V]
    return logits[labels != -100]


def _is_encoder_decoder(config) -> bool:
    return bool(getattr(config, "is_encoder_decoder", False))


ENCODER_DECODER = LLMFamily("encoder-decoder", AutoModelForSeq2SeqLM, _is_encoder_decoder, pad_with_eos=False,
                            generation_pads_left=False, caches_prefix=False, frame=_encoder_decoder_frame,
                            target_logits=_encoder_decoder_target_logits)
DECODER = LLMFamily("decoder", AutoModelForCausalLM, lambda config: not _is_encoder_decoder(config),
                    pad_with_eos=True, generation_pads_left=True, caches_prefix=True, frame=_decoder_frame,
                    target_logits=_decoder_target_logits)
# Tried in this order by llm_family: a more specific family goes before the one it refines.
LLM_FAMILIES: dict[str, LLMFamily] = {family.name: family for family in (ENCODER_DECODER, DECODER)}


def llm_family(config) -> LLMFamily:
    """The family of a model's transformers config (the first entry that matches)."""
    for family in LLM_FAMILIES.values():
        if family.matches(config):
            return family
    raise ValueError(f"no LLM family matches {type(config).__name__}; add one to model.LLM_FAMILIES")


class FrozenLLM(nn.Module):
    """A frozen LLM of any family in LLM_FAMILIES that takes soft prompts before its input.

    decoder-only:    [prefix; prompts; input; suffix; target; eos], right-padded for
                     training (loss on the target only), left-padded for generation.
                     prefix/suffix come from the chat template when there is one.
    encoder-decoder: encoder gets [prompts; input; eos], decoder predicts the target.

    prompt_position="after_input" puts the prompts between the input and the suffix
    instead (decoder-only: right before the answer, where they can attend to the input).

    answer_mode="choices" answers a classification example by rank classification
    (`score_choices`: each allowed label's likelihood after the same prompt) instead of
    generating; `answer` picks per example.

    Prefix cache (decoder-only training loss): the prefix is the same for every example,
    comes first, and the LLM is frozen, so its keys and values never change. They are
    computed once (per device and dtype) and each batch starts from them instead of running
    the prefix again: the same loss and gradients, fewer positions per step (timed by
    bench/train_throughput.py). Off with gradient checkpointing, whose layers drop a passed
    cache.
    """

    def __init__(self, model: nn.Module, tokenizer, kind: str, instruction: str,
                 max_input_tokens: int = 256, max_target_tokens: int = 64,
                 prompt_position: PromptPosition = "before_input", answer_mode: Answer = "generate"):
        super().__init__()
        check_choice("answer", answer_mode, Answer)
        self.answer_mode = answer_mode
        if kind not in LLM_FAMILIES:
            raise ValueError(f"LLM kind must be one of {', '.join(map(repr, LLM_FAMILIES))}, got {kind!r}")
        check_choice("prompt_position", prompt_position, PromptPosition)
        self.prompt_position = prompt_position
        self.model = freeze(model)
        self.tokenizer = tokenizer
        self.kind = kind
        self.family = LLM_FAMILIES[kind]
        self.max_input_tokens = max_input_tokens
        self.max_target_tokens = max_target_tokens
        self.hidden_size = model.get_input_embeddings().weight.shape[1]
        embeddings = model.get_input_embeddings().weight.detach().float()
        self.embedding_rms = embeddings.pow(2).mean().sqrt().item()
        self.prefix_ids, self.suffix_ids = self.family.frame(tokenizer, instruction)
        self.cache_prefix = self.family.caches_prefix and bool(self.prefix_ids) \
            and not getattr(model, "is_activation_checkpointing", False)
        self._prefix_states: dict[tuple, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        head = model.get_output_embeddings()
        if head is not None:
            head.register_forward_pre_hook(_dense_rows)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def input_length(self, num_prompts: int, text: str) -> int:
        """Tokens the LLM reads for `text` with `num_prompts` soft prompts (target excluded)."""
        return len(self.prefix_ids) + num_prompts + len(self._ids([text], self.max_input_tokens)[0]) \
            + len(self.suffix_ids)

    def _ids(self, texts: list[str], max_length: int) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False, truncation=True,
                              max_length=max_length)["input_ids"]

    def _embed(self, ids: list[int]) -> torch.Tensor:
        return self.model.get_input_embeddings()(torch.tensor(ids, dtype=torch.long, device=self.device))

    def _prompt_rows(self, prompts: torch.Tensor | None, inputs: list[str], prefix: bool = True) -> list[torch.Tensor]:
        """Per example [prefix; prompts; input; suffix] (or [prefix; input; prompts; suffix])
        embeddings, [L_i, D]; without the prefix when `prefix` is False. prompts: [B, Q, D],
        or a list of [Q_i, D] when examples use different numbers of soft prompts (adaptive queries)."""
        dtype = self.model.get_input_embeddings().weight.dtype
        start = [self._embed(self.prefix_ids)] if prefix else []
        suffix = self._embed(self.suffix_ids)
        rows = []
        for i, ids in enumerate(self._ids(inputs, self.max_input_tokens)):
            parts = [self._embed(ids)]
            if prompts is not None:
                where = 0 if self.prompt_position == "before_input" else 1
                parts.insert(where, prompts[i].to(dtype))
            rows.append(torch.cat([*start, *parts, suffix]))
        return rows

    @torch.no_grad()
    def _prefix_cache(self, batch_size: int):
        """-> a fresh cache holding the prefix's keys and values for `batch_size` rows (a
        forward appends the batch's own to it, so each call needs a new one)."""
        device = self.device
        autocast = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
        key = (device, self.model.dtype, autocast)  # the states must have the dtype this forward's own will have
        if key not in self._prefix_states:
            ids = torch.tensor([self.prefix_ids], device=device)
            cache = self.model.get_decoder()(input_ids=ids, use_cache=True).cache
            self._prefix_states[key] = [(layer.keys, layer.values) for layer in cache.layers]  # [1, heads, P, d]
        return DynamicCache(config=self.model.config, ddp_cache_data=[
            (k.expand(batch_size, -1, -1, -1), v.expand(batch_size, -1, -1, -1)) for k, v in self._prefix_states[key]])

    def _target_ids(self, targets: list[str]) -> list[list[int]]:
        """Each target's token ids as the LLM learns and scores them: truncated, then EOS."""
        return [ids + [self.tokenizer.eos_token_id] for ids in self._ids(targets, self.max_target_tokens)]

    def loss(self, prompts: torch.Tensor | None, inputs: list[str], targets: list[str]) -> torch.Tensor:
        """prompts [B, Q, D] (or None) -> mean cross-entropy over target tokens."""
        target_ids = self._target_ids(targets)
        logits = self.family.target_logits(self, prompts, inputs, target_ids)  # [N_target, V]
        labels = torch.tensor([t for ids in target_ids for t in ids], device=logits.device)
        return F.cross_entropy(logits.float(), labels)

    @torch.no_grad()
    def score_choices(self, prompts, inputs: list[str], choices: list[tuple[str, ...]]) -> list[list[float]]:
        """Rank classification: per example, the log-likelihood of each of its allowed answers,
        the sum of the answer's token log-probabilities (EOS included, as it is trained: the
        answer and nothing more), given the prompt the answer would be generated from.

        prompts: [B, Q, D], a list of [Q_i, D], or None; every (example, answer) pair is one
        row, CHOICE_ROWS rows per forward pass.
        """
        owner = [i for i, options in enumerate(choices) for _ in options]  # row -> example
        target_ids = self._target_ids([answer for options in choices for answer in options])
        target_logits = self.family.target_logits
        sums: list[float] = []
        for start in range(0, len(owner), CHOICE_ROWS):
            rows = owner[start:start + CHOICE_ROWS]
            ids = target_ids[start:start + CHOICE_ROWS]
            logits = target_logits(self, None if prompts is None else [prompts[i] for i in rows],
                                   [inputs[i] for i in rows], ids)  # [N_target, V]
            labels = torch.tensor([t for row in ids for t in row], device=logits.device)
            token_logp = logits.float().log_softmax(-1).gather(1, labels[:, None])[:, 0]  # [N_target]
            sums += [float(part.sum()) for part in token_logp.split([len(row) for row in ids])]
        scores: list[list[float]] = [[] for _ in choices]
        for i, score in zip(owner, sums):
            scores[i].append(score)
        return scores

    @torch.no_grad()
    def answer(self, prompts, inputs: list[str], choices: list[tuple[str, ...] | None] | None,
               max_new_tokens: int, num_beams: int = 1) -> list[str]:
        """A batch's answers. answer_mode="generate": generated. "choices": each example whose task
        allows a closed set of answers (choices[i]) gets its best-scored one (`score_choices`;
        a tie goes to the first); the others (free text) are generated."""
        scored = [i for i, options in enumerate(choices or []) if options] if self.answer_mode == "choices" else []
        if not scored:
            return self.generate(prompts, inputs, max_new_tokens, num_beams)

        def pick(rows: list[int]):
            return None if prompts is None else [prompts[i] for i in rows]
        out: list[str] = [""] * len(inputs)
        for i, scores in zip(scored, self.score_choices(pick(scored), [inputs[i] for i in scored],
                                                        [choices[i] for i in scored])):
            out[i] = choices[i][max(range(len(scores)), key=scores.__getitem__)]
        rest = [i for i in range(len(inputs)) if i not in set(scored)]
        if rest:
            for i, text in zip(rest, self.generate(pick(rest), [inputs[i] for i in rest], max_new_tokens, num_beams)):
                out[i] = text
        return out

    @torch.no_grad()
    def generate(self, prompts: torch.Tensor | None, inputs: list[str], max_new_tokens: int,
                 num_beams: int = 1) -> list[str]:
        rows = self._prompt_rows(prompts, inputs)
        embeds, mask = pad_stack(rows, pad_left=self.family.generation_pads_left)
        out = self.model.generate(inputs_embeds=embeds, attention_mask=mask.long(),
                                  max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                                  pad_token_id=self.tokenizer.pad_token_id)
        # With only inputs_embeds, decoder-only generate returns the new tokens alone.
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]


# ----------------------------------------------------------------------------- the model

class PersonalizedLLM(nn.Module):
    """What every compared method shares: a frozen LLM, optionally fed soft prompts.

    Behavioral Twin, PPlug and the baselines differ only in `soft_prompts` (and in what
    they train). One predicate says which parameters train, `requires_grad`; the
    optimizer and the checkpoint both read it through `trainable_parameters`.
    `reads_history` says whether the method looks at batch.history, i.e. whether the
    history-swapping control means anything for it.
    """

    reads_history = True

    def __init__(self, llm: FrozenLLM):
        super().__init__()
        self.llm = llm

    def soft_prompts(self, batch) -> torch.Tensor | None:
        """-> [B, N, D] vectors placed before the input, or None for the bare input."""
        raise NotImplementedError

    def forward(self, batch) -> torch.Tensor:
        return self.llm.loss(self.soft_prompts(batch), batch.inputs, batch.targets)

    @torch.no_grad()
    def generate(self, batch, max_new_tokens: int, num_beams: int = 1) -> list[str]:
        """The batch's answers, generated or scored among its tasks' labels (the LLM's answer_mode)."""
        return self.llm.answer(self.soft_prompts(batch), batch.inputs, batch.choices, max_new_tokens, num_beams)

    def train(self, mode: bool = True):
        """Frozen parts stay in eval mode (no dropout) whatever mode the rest is in, except the
        flag of the LLM's checkpointed layers: transformers checkpoints a layer only while it
        trains, so with gradient checkpointing on they follow `mode` (their dropouts do not)."""
        super().train(mode)
        for module in list(self.modules())[1:]:  # not self: eval() would call back into train()
            params = list(module.parameters())
            if params and not any(p.requires_grad for p in params):
                module.eval()
        for module in self.llm.model.modules():
            if getattr(module, "gradient_checkpointing", False):
                module.training = mode
        return self

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {name: p for name, p in self.named_parameters() if p.requires_grad}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach().cpu().contiguous() for name, p in self.trainable_parameters().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        params = self.trainable_parameters()
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        wrong_shape = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(params[k].shape)}"
                       for k in sorted(set(params) & set(state)) if state[k].shape != params[k].shape]
        if missing or unexpected or wrong_shape:
            raise ValueError(
                "checkpoint does not match this model's configuration "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]}, shape mismatches {wrong_shape[:5]}); "
                "load it with the config it was saved with (its config.json)")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(state[name].to(p.device, p.dtype))


def queries_for(rule: str, history_sizes: list[int], num_queries: int) -> list[int]:
    """How many queries each example uses outside training (`inference_queries`).

    'all' -> Q; a number K -> min(K, Q); 'history' -> min(Q, ceil(log2(P + 1))) for the P
    items the Q-Former reads: 1 query for one item, 2 for up to 3, 3 for up to 7, 4 for up
    to 15 ... 8 from 128 items on. A longer history has more to summarize; a short one gets
    a short prompt. With nested query training every prefix is a complete summary.
    """
    if rule == "all":
        return [num_queries] * len(history_sizes)
    if rule == "history":
        return [min(num_queries, max(1, int(p).bit_length())) for p in history_sizes]  # bit_length = ceil(log2(p+1))
    return [min(int(rule), num_queries)] * len(history_sizes)


def pad_history(rows: list[torch.Tensor], hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example [P_i, H] (P_i may be 0) -> [B, P, H] and mask [B, P]; an empty history
    gets one zero slot, masked out."""
    embeddings, mask = pad_stack([r if len(r) else r.new_zeros(1, hidden) for r in rows])
    for i, r in enumerate(rows):
        if not len(r):
            mask[i] = False
    return embeddings, mask


def history_numbers(batch, chosen: list | None, slots: int) -> torch.Tensor:
    """batch.history_numbers (per example, per item, a feature row) -> [B, slots, F], row j of
    example i for its j-th history slot; `chosen` per example the item ids memory kept (None: all)."""
    if getattr(batch, "history_numbers", None) is None:
        raise ValueError("numeric_signals is on but the batch carries no history_numbers; "
                         "build the dataset with numeric=True (the builder does when numeric_signals is set)")
    width = next((len(r[0]) for r in batch.history_numbers if r), NUM_FEATURES)
    out = torch.zeros(len(batch.history_numbers), slots, width)
    for i, rows in enumerate(batch.history_numbers):
        picked = rows if chosen is None else [rows[j] for j in chosen[i]]
        if picked:
            out[i, :len(picked)] = torch.tensor(picked)
    return out


# Relevance signals: per history item, how it relates to this question. Column 0 is its
# cosine to the retrieval query; where the question spells out its answer options
# (TaskSpec.candidates, LaMP-1's references), column 1 flags that, the next CANDIDATE_SLOTS
# hold the item's cosine to each option (which items bear on the question at all), and the
# last CANDIDATE_SLOTS the same minus its mean over the options (which option an item
# favours), scaled up because two options' cosines differ little. The Q-Former could not compute
# these itself: it never sees the options as embeddings in the history's space, only as
# tokens inside the question.
CANDIDATE_SLOTS = 2
RELEVANCE_FEATURES = 2 + 2 * CANDIDATE_SLOTS
CANDIDATE_SCALE = 10.0


def relevance_rows(encoder: BehavioralEncoder, history: torch.Tensor, history_mask: torch.Tensor,
                   queries: torch.Tensor, candidates: list[tuple[str, ...]] | None) -> torch.Tensor:
    """history [B, P, H] + mask [B, P], the queries' embeddings [B, H] -> [B, P, RELEVANCE_FEATURES]
    (0 on padding); the options are embedded here, by the same frozen encoder."""
    unit = F.normalize(history.float(), dim=-1)
    rows = unit.new_zeros(*history.shape[:2], RELEVANCE_FEATURES)
    rows[..., 0] = torch.einsum("bph,bh->bp", unit, F.normalize(queries.to(unit), dim=-1))
    candidates = candidates or [()] * len(queries)
    too_many = [c for c in candidates if len(c) > CANDIDATE_SLOTS]
    if too_many:
        raise ValueError(f"a question spells out {len(too_many[0])} answer options; relevance signals have "
                         f"{CANDIDATE_SLOTS} slots (model.CANDIDATE_SLOTS)")
    options = F.normalize(encoder.encode_texts([t for c in candidates for t in c]).to(unit), dim=-1)  # [N, H]
    start = 0
    for i, count in enumerate(len(c) for c in candidates):
        if count:
            similarity = unit[i] @ options[start:start + count].T  # [P, C]
            rows[i, :, 1] = 1.0
            rows[i, :, 2:2 + count] = similarity
            centred = 2 + CANDIDATE_SLOTS
            rows[i, :, centred:centred + count] = (similarity - similarity.mean(1, keepdim=True)) * CANDIDATE_SCALE
            start += count
    return rows * history_mask.unsqueeze(-1).to(rows.dtype)


def history_word_counts(source: list[int], items: list[list[int]], special: set[int], vocab_size: int) -> torch.Tensor:
    """-> [V]: how many history items hold each token, 0 for the input's tokens and special ones:
    the words a word prompt may be (`WordPrompts`), and those of the answer it learns
    (`BehavioralTwin.answer_words_loss`)."""
    held = [token for ids in items for token in set(ids)]  # each item's distinct tokens
    counts = torch.bincount(torch.tensor(held, dtype=torch.long), minlength=vocab_size).float()
    counts[sorted(set(source) | special)] = 0
    return counts


class BehavioralTwin(PersonalizedLLM):
    """history + query -> soft prompts -> frozen LLM.

    `aggregator="mean"` replaces the Q-Former by the mean of the history embeddings (the
    ablation of the Q-Former); its single vector is projected to one soft prompt.

    `relevance` (config: relevance_signals) gives the Q-Former each item's `relevance_rows`.
    Roadmap options (config: memory_top_n, numeric_signals, nested_queries, inference_queries):
    `memory` keeps each example's top-N history items by similarity to its query
    (dataset/memory.py); `numeric` gives the Q-Former batch.history_numbers too;
    `nested_queries` trains each example on a random prefix of the queries (nested query
    dropout: the queries past it get no say in that example's answer, so the early ones
    learn to carry the most), and `inference_queries` picks the prefix outside training.
    """

    def __init__(self, behavioral_encoder: BehavioralEncoder, input_encoder: InputEncoder,
                 qformer: QFormer, llm: FrozenLLM, aggregator: str = "qformer", memory: HistoryMemory | None = None,
                 relevance: bool = False, numeric: bool = False, nested_queries: bool = False, inference_queries: str = "all",
                 label_loss: float = 0.0, task_labels: dict[str, tuple[str, ...]] | None = None,
                 word_prompts: int = 0, word_loss: float = 0.0):
        super().__init__(llm)
        if aggregator not in ("qformer", "mean"):
            raise ValueError(f"aggregator must be 'qformer' or 'mean', got {aggregator!r}")
        self.behavioral_encoder = behavioral_encoder
        self.input_encoder = input_encoder
        self.qformer = qformer
        self.aggregator = aggregator
        self.memory = memory
        self.relevance, self.numeric = relevance, numeric
        width = RELEVANCE_FEATURES * relevance + NUM_FEATURES * numeric
        if aggregator == "qformer" and width != qformer.item_features:
            raise ValueError(f"the Q-Former reads {qformer.item_features} features per history item, but relevance="
                             f"{relevance} and numeric={numeric} give {width}")
        self.nested_queries = nested_queries
        self.inference_queries = inference_queries
        queries_for(inference_queries, [], qformer.num_queries)  # a bad rule fails here, not mid-run
        if aggregator == "mean":  # the mean path never calls them: nothing of theirs may train
            freeze(self.input_encoder)
            freeze(self.qformer)
        self.projection = PromptProjection(behavioral_encoder.hidden_size, llm.model.get_input_embeddings().weight,
                                           1 if aggregator == "mean" else qformer.num_queries)
        # Label loss (training only): per classification task, a linear head reads the label
        # from the mean summary; see `label_prediction_loss` for why.
        self.label_loss = label_loss
        self.task_labels = {task: labels for task, labels in (task_labels or {}).items() if labels}
        self.label_heads = nn.ModuleDict(
            {task: nn.Linear(behavioral_encoder.hidden_size, len(labels)) for task, labels in self.task_labels.items()}
            if label_loss > 0 else {})
        if word_prompts and (aggregator == "mean" or word_prompts > qformer.num_queries):
            raise ValueError(f"word_prompts: {word_prompts} word prompts are read from as many Q-Former outputs; "
                             f"use at most num_queries ({qformer.num_queries}), and the qformer aggregator")
        self.words = (WordPrompts(behavioral_encoder.hidden_size, llm.model.get_input_embeddings().weight, word_prompts)
                      if word_prompts else None)
        self.word_loss = word_loss

    def read_history(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """-> history [B, P, H], mask [B, P], and item features [B, P, F] when the Q-Former reads them.
        With long-term memory P <= memory.top_n: only the items most similar to each query."""
        encoder = self.behavioral_encoder
        chosen = None
        # [B, H], frozen and cached: what memory selects by and relevance compares with
        queries = encoder.encode_texts(batch.query) if self.memory is not None or self.relevance else None
        if self.memory is None:
            history, history_mask = encoder(batch.history)
        else:
            chosen, rows = self.memory.select(batch.history, queries, encoder.encode_texts)
            history, history_mask = pad_history(rows, encoder.hidden_size)
            device = next(encoder.backbone.parameters()).device
            history, history_mask = history.to(device), history_mask.to(device)
        features = []
        if self.aggregator == "qformer" and self.relevance:
            features.append(relevance_rows(encoder, history, history_mask, queries, batch.candidates))
        if self.aggregator == "qformer" and self.numeric:
            features.append(history_numbers(batch, chosen, history.shape[1]).to(history.device))
        return history, history_mask, torch.cat(features, -1) if features else None

    def query_counts(self, history_mask: torch.Tensor) -> list[int]:
        """Queries each example uses: a random prefix in nested training, else the inference rule."""
        total = self.qformer.num_queries
        if self.training:
            if self.nested_queries:  # nested query dropout: uniform over 1..Q, per example
                return torch.randint(1, total + 1, (history_mask.shape[0],)).tolist()
            return [total] * history_mask.shape[0]
        return queries_for(self.inference_queries, history_mask.sum(1).tolist(), total)

    def summarize(self, batch) -> tuple[torch.Tensor, list[int]]:
        """-> Q-Former outputs [B, K, H] (mean aggregator: [B, 1, H]) and how many of them each
        example uses (K = the largest; causal queries make a shorter prefix exact)."""
        history, history_mask, features = self.read_history(batch)  # [B, P, H], [B, P], [B, P, F] | None
        if self.aggregator == "mean":
            weights = history_mask.unsqueeze(-1).to(history.dtype)
            summary = (history * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
            return summary, [1] * len(summary)
        counts = self.query_counts(history_mask)
        inputs, input_mask = self.input_encoder(batch.inputs)  # [B, T, H], [B, T]
        summary = self.qformer(history, history_mask, inputs, input_mask, features, num_queries=max(counts))
        return summary, counts

    def forward(self, batch) -> torch.Tensor:
        summary, counts = self.summarize(batch)
        word_counts = self.word_counts(batch)
        word_logits = self._word_logits(summary, word_counts)
        loss = self.llm.loss(self._prompts(summary, counts, word_logits), batch.inputs, batch.targets)
        if self.label_heads:
            loss = loss + self.label_loss * self.label_prediction_loss(summary, counts, batch)
        if word_logits is not None and self.word_loss > 0:
            loss = loss + self.word_loss * self.answer_words_loss(word_logits, word_counts, batch.targets)
        return loss

    def word_counts(self, batch) -> torch.Tensor | None:
        """-> [B, V]: `history_word_counts` of each example in LLM tokens, or None without word prompts."""
        if self.words is None:
            return None
        llm = self.llm
        special = set(llm.tokenizer.all_special_ids)
        vocab_size = llm.model.get_input_embeddings().weight.shape[0]
        rows = [history_word_counts(source, llm._ids(list(items), llm.max_input_tokens) if items else [],
                                    special, vocab_size)
                for source, items in zip(llm._ids(batch.inputs, llm.max_input_tokens), batch.history)]
        return torch.stack(rows).to(llm.device)

    def answer_words_loss(self, word_logits: torch.Tensor, word_counts: torch.Tensor, targets: list[str]) -> torch.Tensor:
        """word_logits [B, K, V], word_counts [B, V] -> the mean over examples of -log p(w), averaged
        over the answer's words w (LLM tokens) that the user's history holds and the input does
        not, p being the word prompts' mixture (1/K) sum_k softmax(logits_k). Examples without
        such a word add nothing.

        Why these words: they are what only reading the history can give the answer. The
        LLM's own loss reaches the word prompts' weights only through the frozen LLM; this
        direct signal, like the label loss for classification, teaches them from the first step.
        """
        llm = self.llm
        total = word_logits.new_zeros(())
        for logits, held, target in zip(word_logits, word_counts, llm._ids(targets, llm.max_target_tokens)):
            tokens = torch.tensor(sorted(set(target)), dtype=torch.long, device=held.device)
            words = tokens[held[tokens] > 0]  # [n]
            if len(words):
                # only the words' columns: a token no prompt may be is -inf in every prompt, NaN in logsumexp's gradient
                chosen = logits.log_softmax(-1)[:, words]  # [K, n]
                total = total - (torch.logsumexp(chosen, dim=0) - math.log(len(logits))).mean()
        return total / len(word_logits)  # no such word: zero (the LLM's loss still reaches the word prompts)

    def label_prediction_loss(self, summary: torch.Tensor, counts: list[int], batch) -> torch.Tensor:
        """Cross-entropy of each task's label head on the mean of the queries an example uses,
        summed over the batch's labelled examples and divided by the batch size.

        Why: the only other signal the Q-Former gets comes back through the frozen LLM and a
        projection that starts near zero, so at first almost no gradient reaches it, although
        a linear probe shows the Q-Former can carry the answer (bench/qformer_probe.py). This
        direct signal teaches the Q-Former to carry the answer from the first step, as BLIP-2's
        first, LLM-free training stage does; the projection and the LLM then learn to read it.
        The heads never answer: answers are always generated by the LLM.
        """
        pooled = self.pooled_summary(summary, counts)  # [B, H]
        total = summary.new_zeros(())
        for task, head in self.label_heads.items():
            labels = self.task_labels[task]
            rows, gold = [], []
            for i, (t, y) in enumerate(zip(batch.task, batch.targets)):
                if t == task and y.strip() in labels:
                    rows.append(i)
                    gold.append(labels.index(y.strip()))
            if not rows:  # keep the head in the graph: DDP expects a gradient for every trainable weight
                total = total + 0 * sum(p.sum() for p in head.parameters())
                continue
            gold = torch.tensor(gold, device=summary.device)
            total = total + F.cross_entropy(head(pooled[rows]), gold, reduction="sum")
        return total / len(counts)

    @staticmethod
    def pooled_summary(summary: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """summary [B, K, H] -> [B, H]: the mean of the first counts[i] queries of example i."""
        keep = torch.zeros(summary.shape[:2], dtype=summary.dtype, device=summary.device)  # [B, K]
        for i, count in enumerate(counts):
            keep[i, :count] = 1 / count
        return torch.einsum("bk,bkh->bh", keep, summary)

    def soft_prompts(self, batch) -> torch.Tensor | list[torch.Tensor]:
        """batch.history / batch.inputs -> [B, Q + W, D] with W word prompts (mean aggregator: [B, 1, D]);
        when examples use different numbers of queries, a list of [Q_i (+ W_i), D] (the LLM takes either)."""
        summary, counts = self.summarize(batch)
        return self._prompts(summary, counts, self._word_logits(summary, self.word_counts(batch)))

    def _word_logits(self, summary: torch.Tensor, word_counts: torch.Tensor | None) -> torch.Tensor | None:
        """summary [B, K, H], word_counts [B, V] -> the word prompts' logits [B, W, V] from the
        summary's first W rows, or None without word prompts."""
        if self.words is None:
            return None
        return self.words.logits(summary[:, :self.words.count], self.llm.model.get_input_embeddings().weight,
                                 word_counts)

    def _prompts(self, summary: torch.Tensor, counts: list[int],
                 word_logits: torch.Tensor | None = None) -> torch.Tensor | list[torch.Tensor]:
        """-> [B, K, D] soft prompts, then the word prompts [B, W, D] when there are any."""
        prompts = self.projection(summary)  # [B, K, D]
        words = None if word_logits is None else \
            self.words.mix(word_logits, self.llm.model.get_input_embeddings().weight).to(prompts.dtype)  # [B, W, D]
        if all(count == prompts.shape[1] for count in counts):
            return prompts if words is None else torch.cat([prompts, words], dim=1)
        rows = [p[:count] for p, count in zip(prompts, counts)]
        # An example using fewer queries than there are word prompts keeps as many of them as queries.
        return rows if words is None else [torch.cat([row, w[:count]]) for row, w, count in zip(rows, words, counts)]


# ----------------------------------------------------------------------------- history-blind baselines
# none: the frozen LLM on the bare input; rag: the same model on inputs rewritten with the
# user's top-k profile items (dataset/retrieval/); prompt_tuning: Q soft tokens shared by
# every user (Lester et al. 2021). PPlug lives in pplug.py; the mean-of-history ablation is
# BehavioralTwin with aggregator="mean".


class NoPersonalization(PersonalizedLLM):
    """The frozen LLM alone. With retrieval-augmented inputs it is the `rag` baseline."""

    reads_history = False

    def soft_prompts(self, batch) -> None:
        return None


class PromptTuning(PersonalizedLLM):
    """Q learnable vectors before every input, the same for every user.

    Initialised from the embeddings of Q random vocabulary tokens, which Lester et al.
    found to train faster than random vectors: the prompts start at the scale and in
    the region of real tokens.
    """

    reads_history = False

    def __init__(self, llm: FrozenLLM, num_prompts: int):
        super().__init__(llm)
        self.prompts = nn.Parameter(random_token_embeddings(llm.model.get_input_embeddings().weight,
                                                            num_prompts))  # [1, Q, D]

    def soft_prompts(self, batch) -> torch.Tensor:
        return self.prompts.expand(len(batch.inputs), -1, -1)  # [B, Q, D]


# ----------------------------------------------------------------------------- untrained rule baselines
# Floors that any learned method must clear: a fixed rule per task over the frozen history
# encoder's embeddings (cosine similarity), no LLM, nothing trained. `profile_rule` reads
# only the history, `input_rule` only the question. Their per-task rules are the tables
# PROFILE_RULES and INPUT_RULES below; each rule sees one example and its embedder.

def lead_sentence(text: str) -> str:
    """The first sentence of `text` (lead-1, the classic headline baseline)."""
    text = text.strip()
    return re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0] if text else text


def nearest_label(value: float, labels: tuple[str, ...]) -> str:
    """The numeric label closest to `value`; a tie goes to the larger (round half up)."""
    return min(labels, key=lambda label: (abs(float(label) - value), -float(label)))


@dataclass
class RuleExample:
    """One example as a rule sees it (the batch's fields at one index)."""

    id: str
    task: str
    input: str
    query: str  # the task's retrieval query (batch.query)
    choices: tuple[str, ...] | None
    candidates: tuple[str, ...]  # the options the question spells out (batch.candidates; LaMP-1's references)
    history: list[str]
    outputs: list[str] | None  # each history item's own answer (TaskSpec.profile_output)


class RuleBaseline(nn.Module):
    """Answers by a fixed rule per task (`rules`: task name -> rule); no LLM, nothing trains.

    The frozen history encoder embeds every text a batch's rules compare, in one pass
    through the history store; rows are L2-normalised, so a dot product is a cosine.
    """

    reads_history = False
    rules: dict = {}
    llm = None  # no LLM: the frozen-LLM control does not apply

    def __init__(self, behavioral_encoder: BehavioralEncoder):
        super().__init__()
        self.behavioral_encoder = behavioral_encoder

    def texts(self, example: RuleExample) -> list[str]:
        """What the rules may embed for `example`: its query, its labels and options, LaMP-1's own title."""
        title = lamp1_paper_title(example.input) if example.candidates else None
        return [example.query, *(example.choices or ()), *example.candidates, *([title] if title else [])]

    def trainable_parameters(self) -> dict[str, nn.Parameter]:
        return {}

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def forward(self, batch) -> torch.Tensor:
        raise RuntimeError(f"{type(self).__name__} is an untrained rule: it has no loss to train")

    @torch.no_grad()
    def generate(self, batch, max_new_tokens: int = 0, num_beams: int = 1) -> list[str]:
        """One answer per example (the LLM's generation budget and beams do not apply)."""
        outputs = getattr(batch, "history_outputs", None) or [None] * len(batch.ids)
        candidates = batch.candidates or [()] * len(batch.ids)
        examples = [RuleExample(*fields) for fields in zip(batch.ids, batch.task, batch.inputs, batch.query,
                                                           batch.choices, candidates, batch.history, outputs)]
        texts = [t for e in examples for t in self.texts(e)]
        distinct = list(dict.fromkeys(texts))
        rows = F.normalize(self.behavioral_encoder.encode_texts(distinct), dim=-1)  # [N, H]
        row_of = {text: i for i, text in enumerate(distinct)}

        def embed(items: list[str]) -> torch.Tensor:  # texts (n) -> unit rows [n, H]
            return rows[[row_of[t] for t in items]] if items else rows.new_zeros(0, rows.shape[1])
        answers = []
        for example in examples:
            rule = self.rules.get(example.task)
            if rule is None:
                raise ValueError(f"{type(self).__name__} has no rule for {example.task} "
                                 f"(rules for {', '.join(self.rules)})")
            answers.append(rule(self, example, embed))
        return answers


def _candidates(example: RuleExample) -> list[str]:
    """LaMP-1's two references, in the order of the labels [1] and [2]."""
    if len(example.candidates) != 2:
        raise ValueError(f"example {example.id}: a LaMP-1 question must end '[1]: \"...\" [2]: \"...\"'")
    return list(example.candidates)


def _similarities(example: RuleExample, embed) -> torch.Tensor:
    """[P]: cosine of each history item to the example's query."""
    return embed(example.history) @ embed([example.query])[0]


def _outputs(example: RuleExample) -> list[str]:
    if example.outputs is None:
        raise ValueError(f"example {example.id}: {example.task} history items carry no answers (profile_output)")
    return example.outputs


class ProfileRule(RuleBaseline):
    """`profile_rule`: answers from the user's history alone (the question only ranks it).

    LaMP-1    the candidate closest to the profile: to the mean of the profile papers'
              unit embeddings (a cosine to each paper, averaged);
    LaMP-2    the tag most of the `k` items most similar to the input carry (a tie: the
              tag whose voters are more similar in sum);
    LaMP-3    the ratings of the `k` most similar reviews, weighted by their cosine (floored
              at 0; all 0: plain mean), rounded to the nearest valid rating;
    LaMP-4..6 the title of the most similar item; LaMP-7 the most similar past tweet.
    An empty history answers the first label (free text: the empty string).
    """

    reads_history = True

    def __init__(self, behavioral_encoder: BehavioralEncoder, k: int = 4):
        super().__init__(behavioral_encoder)
        if k < 1:
            raise ValueError(f"rule_k must be >= 1, got {k}")
        self.k = k

    def texts(self, example: RuleExample) -> list[str]:
        return [*example.history, *super().texts(example)]

    def closest_to_profile(self, example: RuleExample, embed) -> str:
        if not example.history:
            return example.choices[0]
        profile = embed(example.history).mean(0)  # [H]
        return example.choices[int((embed(_candidates(example)) @ profile).argmax())]

    def tag_vote(self, example: RuleExample, embed) -> str:
        if not example.history:
            return example.choices[0]
        similarity = _similarities(example, embed)
        top = similarity.topk(min(self.k, len(similarity))).indices.tolist()
        votes: dict[str, tuple[int, float]] = {}
        for i in top:
            count, total = votes.get(_outputs(example)[i], (0, 0.0))
            votes[_outputs(example)[i]] = (count + 1, total + float(similarity[i]))
        return max(votes, key=votes.get)

    def weighted_rating(self, example: RuleExample, embed) -> str:
        if not example.history:
            return example.choices[0]
        similarity = _similarities(example, embed)
        top = similarity.topk(min(self.k, len(similarity))).indices
        weights = similarity[top].clamp(min=0)
        if float(weights.sum()) == 0:
            weights = torch.ones_like(weights)
        ratings = torch.tensor([float(_outputs(example)[i]) for i in top.tolist()])
        return nearest_label(float((weights.cpu() * ratings).sum() / weights.sum().cpu()), example.choices)

    def most_similar_output(self, example: RuleExample, embed) -> str:
        if not example.history:
            return ""
        return _outputs(example)[int(_similarities(example, embed).argmax())]

    rules = {"LaMP-1": closest_to_profile, "LaMP-2": tag_vote, "LaMP-3": weighted_rating,
             "LaMP-4": most_similar_output, "LaMP-5": most_similar_output, "LaMP-6": most_similar_output,
             "LaMP-7": most_similar_output}


class InputRule(RuleBaseline):
    """`input_rule`: answers from the question alone (no history).

    LaMP-1    the candidate closest to the user's own paper title;
    LaMP-2    the tag whose own embedding is closest to the movie description;
    LaMP-3    the most common rating of the training split (a review's words alone give a
              frozen sentence encoder no scale to read a rating on; a tie: the lower rating);
    LaMP-4..6 the first sentence of the article, abstract or email (lead-1);
    LaMP-7    the tweet itself, copied.
    """

    def __init__(self, behavioral_encoder: BehavioralEncoder):
        super().__init__(behavioral_encoder)
        self.most_common: dict[str, str] = {}  # task -> the training split's most common answer

    def learn_most_common(self, task: str, answers: list[str], labels: tuple[str, ...]) -> None:
        """Count a task's training answers (no optimizer: the one statistic LaMP-3's rule needs)."""
        counts = {label: 0 for label in labels}
        for answer in answers:
            if answer.strip() in counts:
                counts[answer.strip()] += 1
        self.most_common[task] = max(labels, key=counts.get)  # max keeps the first of a tie

    def closest_to_title(self, example: RuleExample, embed) -> str:
        title = lamp1_paper_title(example.input)
        if title is None:
            raise ValueError(f"example {example.id}: a LaMP-1 question names the paper 'title \"...\",'")
        return example.choices[int((embed(_candidates(example)) @ embed([title])[0]).argmax())]

    def label_closest_to_input(self, example: RuleExample, embed) -> str:
        return example.choices[int((embed(list(example.choices)) @ embed([example.query])[0]).argmax())]

    def training_majority(self, example: RuleExample, embed) -> str:
        if example.task not in self.most_common:
            raise ValueError(f"input_rule answers {example.task} with the training split's most common answer, "
                             "but saw no training data; run it with mode=sequential or joint")
        return self.most_common[example.task]

    def lead(self, example: RuleExample, embed) -> str:
        return lead_sentence(example.query)

    def copy(self, example: RuleExample, embed) -> str:
        return example.query

    rules = {"LaMP-1": closest_to_title, "LaMP-2": label_closest_to_input, "LaMP-3": training_majority,
             "LaMP-4": lead, "LaMP-5": lead, "LaMP-6": lead, "LaMP-7": copy}
