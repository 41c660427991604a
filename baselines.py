"""History-blind baselines of SPEC section 3, on the same frozen LLM as Behavioral Twin.

    none           the frozen LLM on the bare input; nothing trains
    rag            the same frozen LLM, its input rewritten with the user's top-k profile
                   items by dataset/retrieval.py; nothing trains
    prompt_tuning  Q soft tokens shared by every user (Lester et al. 2021); no history

PPlug lives in pplug.py and the mean-of-history ablation in model.py (BehavioralTwin
with aggregator="mean").
"""

from __future__ import annotations

import torch
from torch import nn

from model import FrozenLLM, PersonalizedLLM, random_token_embeddings


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
