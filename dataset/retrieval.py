"""The `rag` baseline's input: the user's top-k profile items written into the question.

Retrieval follows LaMP's setup: the query and each item's document come from the task
spec (`retrieval_query`, `retrieval_text`), ranked by BM25 (the `bm25s` package) or by
cosine similarity of the frozen history encoder's embeddings. The prompt follows LaMP's
prompt builders (`LaMP/prompts/prompts.py`): the question keeps at most 60% of the LLM's
input budget, the rest is split evenly among the k items, each item's long field is cut
to its share, and what one item leaves unused passes to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import bm25s
import torch
import torch.nn.functional as F

from dataset.tasks import ProfileItem, TaskSpec

QUESTION_SHARE = 0.6  # LaMP: the question may use at most this share of the budget
JOINER = ", and "  # LaMP joins items with this; it costs about 2 tokens


def bm25_ranking(query: str, documents: Sequence[str]) -> list[int]:
    """Indices of `documents`, best BM25 match first; ties keep profile order."""
    if not documents:
        return []
    corpus = bm25s.tokenize(list(documents), stopwords="en", show_progress=False)
    if not corpus.vocab:  # no document has a word BM25 can index: nothing to rank by
        return list(range(len(documents)))
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    query_tokens = bm25s.tokenize([query], stopwords="en", show_progress=False, return_ids=False)[0]
    scores = retriever.get_scores(query_tokens) if query_tokens else [0.0] * len(documents)
    return sorted(range(len(documents)), key=lambda i: -float(scores[i]))  # sorted() is stable


def dense_ranking(query: torch.Tensor, documents: torch.Tensor) -> list[int]:
    """query [H], documents [N, H] -> indices by cosine similarity, best first."""
    if len(documents) == 0:
        return []
    scores = F.cosine_similarity(documents, query.unsqueeze(0), dim=-1)  # [N]
    return sorted(range(len(documents)), key=lambda i: -float(scores[i]))


def rag_prompt(task: TaskSpec, question: str, items: Sequence[ProfileItem], count_tokens: Callable[[str], list[int]],
               decode: Callable[[list[int]], str], max_tokens: int) -> str:
    """Write `items` (best first) into `question` as LaMP does, within `max_tokens`.

    count_tokens: text -> token ids (no special tokens); decode: ids -> text. Items that
    would still overflow after their long field is cut to nothing are dropped from the
    end, so the prompt never exceeds max_tokens unless the bare question already does.
    """
    items = list(items)
    while items:
        prompt = _fill(task, question, items, count_tokens, decode, max_tokens)
        if len(count_tokens(prompt)) <= max_tokens:
            return prompt
        items.pop()
    return question


def _fill(task, question, items, count_tokens, decode, max_tokens) -> str:
    fmt = task.rag
    budget = max_tokens - min(len(count_tokens(question)), int(QUESTION_SHARE * max_tokens))
    after_title = fmt.placement == "after_title" and "title" in question
    frame_cost = len(count_tokens(JOINER if after_title else fmt.lead))
    per_item = (budget - frame_cost - 2 * (len(items) - 1)) // len(items)
    carry, parts = 0, []
    for item in items:
        fixed = len(count_tokens(fmt.item.format(**{**item, fmt.shorten: ""})))
        allowance = max(0, per_item + carry - fixed)
        ids = count_tokens(str(item[fmt.shorten]).strip())[:allowance]
        carry = per_item + carry - fixed - len(ids)
        parts.append(fmt.item.format(**{**item, fmt.shorten: decode(ids)}))
    written = JOINER.join(parts)
    if after_title:  # LaMP-1: '... with the title, and "A", and "B" "T", which ...'
        cut = question.find("title") + len("title")
        return question[:cut] + JOINER + written + question[cut:]
    return written + fmt.lead + question

