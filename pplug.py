"""PPlug: "LLMs + Persona-Plug = Personalized LLMs" (Liu et al. 2024), on this framework.

    history texts --BehavioralEncoder (frozen, cached)--> e_h [B, P, H], L2-normalised
    query text    --InputEncoder (pooled, tuned)--------> e_x [B, H],    L2-normalised
    w_i = softmax_i(e_x . e_hi) over the real items             [B, P]
    P_u = sum_i w_i MLP(e_hi)                                   [B, D]
    I   = MLP_inst(instruction token)                           [D]
    LLM input: [I; P_u; embed(x)]                               [B, 2 + T, D]

Faithful to the authors' code (github rucliujn/PPlug: embedding.py, code/ModelForPer.py,
code/PersonalDataset_profile.py, code/run_all_t5.sh) by default:
* the history text is PPlug's own per task (`history_text`), not Behavioral Twin's
  rendering, which shows the user's past labels;
* the projector is applied to each history embedding before the weighted sum (the
  paper writes Proj(sum w_i e_i); the code computes sum w_i Proj(e_i));
* the instruction is one trainable vector in encoder space through its own 2-layer MLP;
* the input encoder sees only the part of the question that names the new content (for
  LaMP-1 the user's paper title, for the others the text after the task's instruction),
  after BGE's query instruction when the encoder is a BGE model, and all of it trains;
* history items are cut at the encoder's own limit, not at `max_item_tokens`;
* for an encoder-decoder LLM (the code's Flan-T5-XXL) the persona is multiplied by
  539.9738 and the instruction by 539.9738 / 7, the code's constants.
Each has an option (trainers/config.py, `pplug_*`) where the project has
a reason to differ; training settings (epochs, batch, weight decay, beams, augmentation
`pplug_augment`) are run settings, not model code.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from dataset.collate import LaMPItem
from dataset.tasks import ProfileItem, get_task, lamp1_paper_title
from model import BehavioralEncoder, FrozenLLM, InputEncoder, PersonalizedLLM
from trainers.config import PPlugRescale, check_choice


# The profile fields PPlug's embedding.py embeds per task, joined by one space. LaMP-6 is
# not in PPlug's code (its data is not public); its email body + subject mirrors LaMP-4.
HISTORY_FIELDS: dict[str, tuple[str, ...]] = {
    "LaMP-1": ("title", "abstract"), "LaMP-2": ("description",), "LaMP-3": ("text",),
    "LaMP-4": ("text", "title"), "LaMP-5": ("title", "abstract"), "LaMP-6": ("text", "title"), "LaMP-7": ("text",),
}
# BGE's instruction for retrieval queries; PPlug's dataset code prepends it with no space
# (a BERT tokenizer splits at the colon either way).
BGE_QUERY_INSTRUCTION = "Represent this sentence for searching relevant passages:"
# PPlug's code scales the persona by this and the instruction by it / 7 (fitted to Flan-T5-XXL).
T5_SCALE = 539.9738
T5_INSTRUCTION_DIVISOR = 7.0


def query_instruction(encoder: str) -> str:
    """The text PPlug's code puts before every query: BGE's instruction for a BGE encoder
    (named so, as default_pooling recognises it), nothing for others."""
    return BGE_QUERY_INSTRUCTION if "bge" in encoder.lower() else ""


def history_text(task_name: str, item: ProfileItem) -> str:
    """One profile item as PPlug embeds it: LaMP-1/5 'title abstract', LaMP-2 the description,
    LaMP-3 the review, LaMP-4 'text title', LaMP-7 the tweet (no label of the user's)."""
    return " ".join(str(item[name]) for name in HISTORY_FIELDS[get_task(task_name).name])


def pplug_query(task_name: str, input_text: str, retrieval_query: str) -> str:
    """The part of a question PPlug's input encoder reads (batch.task, .inputs, .query)."""
    title = lamp1_paper_title(input_text) if task_name == "LaMP-1" else None  # the user's own paper
    return retrieval_query if title is None else title


def projector(in_dim: int, out_dim: int) -> nn.Sequential:
    """PPlug's 2-layer MLP: Linear, GELU, Linear."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


def train_whole(encoder: InputEncoder) -> InputEncoder:
    """Make every weight of the input encoder trainable, embeddings included (PPlug's code
    freezes only the LLM)."""
    for p in encoder.backbone.parameters():
        p.requires_grad_(True)
    return encoder


def rms_rescale(x: torch.Tensor, target_rms: float) -> torch.Tensor:
    """Scale each vector (last dim) to root-mean-square `target_rms`."""
    return x * (target_rms / x.pow(2).mean(-1, keepdim=True).add(1e-12).sqrt())


class PPlug(PersonalizedLLM):
    """rescale: 'constants' (the code's, for Flan-T5), 'rms' (each vector to the RMS of the
    LLM's token embeddings), 'none', or 'auto' = constants for an encoder-decoder LLM, rms
    for the others. query_instruction: text put before every query (BGE's, or '')."""

    def __init__(self, behavioral_encoder: BehavioralEncoder, input_encoder: InputEncoder, llm: FrozenLLM,
                 rescale: PPlugRescale = "auto", query_instruction: str = ""):
        super().__init__(llm)
        if input_encoder.output != "pooled":
            raise ValueError("PPlug's input encoder must return one pooled vector (output='pooled')")
        check_choice("pplug_rescale", rescale, PPlugRescale)
        self.behavioral_encoder = behavioral_encoder
        self.input_encoder = input_encoder
        hidden = behavioral_encoder.hidden_size
        self.instruction_token = nn.Parameter(torch.rand(hidden))  # the code's init: U(0, 1)
        self.instruction_mlp = projector(hidden, llm.hidden_size)
        self.persona_mlp = projector(hidden, llm.hidden_size)
        self.rescale = rescale if rescale != "auto" else ("constants" if llm.kind == "encoder-decoder" else "rms")
        self.query_instruction = query_instruction

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
        queries = [self.query_instruction + pplug_query(*example)
                   for example in zip(batch.task, batch.inputs, batch.query)]
        query = F.normalize(self.input_encoder(queries)[0][:, 0], dim=-1)  # [B, H]
        weights = self.aggregation_weights(history, history_mask, query)  # [B, P]
        persona = torch.einsum("bp,bpd->bd", weights, self.persona_mlp(history))  # [B, D]
        instruction = self.instruction_mlp(self.instruction_token).expand_as(persona)  # [B, D]
        if self.rescale == "constants":
            persona = persona * T5_SCALE
            instruction = instruction * (T5_SCALE / T5_INSTRUCTION_DIVISOR)
        prompts = torch.stack([instruction, persona], dim=1)  # [B, 2, D]
        if self.rescale == "rms":
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

    def encoder_texts(self) -> list[str]:
        return self.dataset.encoder_texts()
