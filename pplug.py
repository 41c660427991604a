"""PPlug: "LLMs + Persona-Plug = Personalized LLMs" (Liu et al. 2024), on this framework.

    history texts --BehavioralEncoder (frozen, cached)--> e_h [B, P, H], L2-normalised
    query text    --InputEncoder (pooled, tuned)--------> e_x [B, H],    L2-normalised
    w_i = softmax_i(e_x . e_hi) over the real items             [B, P]
    P_u = sum_i w_i MLP(e_hi)                                   [B, D]
    I   = MLP_inst(instruction token)                           [D]
    LLM input: [I; P_u; embed(x)]                               [B, 2 + T, D]

Faithful to the authors' code (github rucliujn/PPlug, code/ModelForPer.py):
* the projector is applied to each history embedding before the weighted sum (the
  paper writes Proj(sum w_i e_i); the code computes sum w_i Proj(e_i));
* the instruction is one trainable vector in encoder space through its own 2-layer MLP;
* the input encoder sees only the part of the question that names the new content: for
  LaMP-1 the user's paper title, for the others the text after the task's instruction.
Code-level details that are options here (README, "PPlug"):
* `pplug_augment` (code: 10, default here 0): extra copies of every training example
  whose history has more than 2 items, each dropping a random 1 to 50% of the items;
* keeping the last 512 items is the framework-wide `max_history` (default 512);
* `pplug_rescale` (default on): the code multiplies both vectors by a constant fitted to
  Flan-T5-XXL's embedding scale; here each is rescaled to the RMS of the LLM's own token
  embeddings, which is that intent for any LLM.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from dataset.collate import LaMPItem
from dataset.tasks import get_task
from model import BehavioralEncoder, FrozenLLM, InputEncoder, PersonalizedLLM


def pplug_query(task_name: str, input_text: str) -> str:
    """The part of a question PPlug's input encoder reads."""
    if get_task(task_name).name == "LaMP-1":
        # '... the paper with the title "T", which reference ...': the user's own paper.
        start = input_text.find('title "')
        end = input_text.find('",', start + 7)
        if start >= 0 and end >= 0:
            return input_text[start + 7:end]
    return get_task(task_name).retrieval_query(input_text)


def projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """PPlug's 2-layer MLP: Linear, GELU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def rms_rescale(x: torch.Tensor, target_rms: float) -> torch.Tensor:
    """Scale each vector (last dim) to root-mean-square `target_rms`."""
    return x * (target_rms / x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt())


class PPlug(PersonalizedLLM):
    def __init__(self, behavioral_encoder: BehavioralEncoder, input_encoder: InputEncoder, llm: FrozenLLM,
                 rescale: bool = True):
        super().__init__(llm)
        if input_encoder.output != "pooled":
            raise ValueError("PPlug's input encoder must return one pooled vector (output='pooled')")
        self.behavioral_encoder = behavioral_encoder
        self.input_encoder = input_encoder
        hidden = behavioral_encoder.hidden_size
        self.instruction_token = nn.Parameter(torch.rand(hidden))  # the code's init: U(0, 1)
        self.instruction_mlp = projector(hidden, llm.hidden_size)
        self.persona_mlp = projector(hidden, llm.hidden_size)
        self.rescale = rescale

    def aggregation_weights(self, history: torch.Tensor, history_mask: torch.Tensor,
                            query: torch.Tensor) -> torch.Tensor:
        """history [B, P, H], mask [B, P], query [B, H] (all normalised) -> w [B, P].

        Each row sums to one over its real items; padded slots get exactly 0. A user with
        no history gets all-zero weights (so a zero persona) rather than NaN.
        """
        scores = torch.einsum("bph,bh->bp", history, query).masked_fill(~history_mask, float("-inf"))
        has_items = history_mask.any(dim=1, keepdim=True)
        weights = torch.softmax(scores.masked_fill(~has_items, 0.0), dim=1)
        return weights * has_items

    def soft_prompts(self, batch) -> torch.Tensor:
        history, history_mask = self.behavioral_encoder(batch.history)  # [B, P, H], [B, P]
        history = F.normalize(history, dim=-1)
        queries = [pplug_query(task, text) for task, text in zip(batch.task, batch.inputs)]
        query = F.normalize(self.input_encoder(queries)[0][:, 0], dim=-1)  # [B, H]
        weights = self.aggregation_weights(history, history_mask, query)  # [B, P]
        persona = torch.einsum("bp,bpd->bd", weights, self.persona_mlp(history))  # [B, D]
        instruction = self.instruction_mlp(self.instruction_token).expand_as(persona)  # [B, D]
        prompts = torch.stack([instruction, persona], dim=1)  # [B, 2, D]
        if self.rescale:
            prompts = rms_rescale(prompts, self.llm.embedding_rms)
        return prompts


class HistoryDropAugmented(Dataset):
    """PPlug's training augmentation: `copies` extra versions of each example whose
    history has more than 2 items, each keeping a random subset (1 to 50% dropped, order
    kept). Deterministic in (seed, index), so an epoch's data is the same on resume."""

    def __init__(self, dataset: Dataset, copies: int, seed: int):
        self.dataset = dataset
        self.copies = copies
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset) * (self.copies + 1)

    def __getitem__(self, index: int) -> LaMPItem:
        item = self.dataset[index // (self.copies + 1)]
        if index % (self.copies + 1) == 0 or len(item.history) <= 2:
            return item
        rng = random.Random(self.seed * 1_000_003 + index)
        n = len(item.history)
        drop = int(n * rng.uniform(0, 0.5)) + 1
        kept = sorted(rng.sample(range(n), n - drop))
        return LaMPItem(item.id, item.task, [item.history[i] for i in kept], item.input, item.target)

    @property
    def task(self):
        return self.dataset.task

    def all_history_texts(self) -> list[str]:
        return self.dataset.all_history_texts()
