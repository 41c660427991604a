"""The `rag` baseline's input: the user's top-k profile items written into the question, at LaMP's protocol.

Everything follows LaMP's own code (`LaMP/prompts/prompts.py`, `create_prompt_generator`):
* query and documents: the task spec's `retrieval_query` and `retrieval_text`
  (LaMP's `*_query_corpus_maker`), over the user's WHOLE profile;
* ranking (`retriever=bm25`): `rank_bm25.BM25Okapi` over `str.split()` tokens (case,
  punctuation and every word kept), best first as `np.argsort(scores)[::-1]` orders them
  under the numpy LaMP pins (see `lamp_argsort`: ties are not in profile order);
  `retriever=dense` ranks by cosine similarity of the history encoder's embeddings instead;
* prompt (`rag_prompt`): the items share `max_length - min(len(question), int(0.6 * max_length))`
  tokens, each item's long field is cut to its share (what one item leaves unused passes
  to the next), the WHOLE question is appended, and when the items do not fit even with
  their fields cut to nothing the question's share drops by 0.1 and LaMP tries again;
* final cut: the joined prompt is cut to `max_length` tokens the way LaMP's training code
  tokenizes it (`tokenizer(prompt, max_length=..., truncation=True)`), so the items
  survive and the end of the question is what is lost.

Token counts are those of LaMP's calls: the LLM tokenizer WITH its special tokens (T5's
`</s>` counts one), and a cut field is decoded with tokenization spaces cleaned up, as the
transformers version LaMP pins does by default.

`python -m dataset.retrieval` (__main__.py) writes these inputs to a file for inspection.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from rank_bm25 import BM25Okapi

from dataset.tasks import ProfileItem, RagFormat, TaskSpec

QUESTION_SHARE = 0.6  # LaMP: the question may take at most this share of the budget
SHARE_STEP = 0.1  # LaMP lowers the question's share by this much when the items do not fit
JOINER = ", and "  # LaMP joins items with this


# --- ranking ----------------------------------------------------------------------------------------------

def bm25_ranking(query: str, documents: Sequence[str]) -> list[int]:
    """Indices of `documents`, best first, exactly as LaMP's BM25 retrieval orders them."""
    if not documents:
        return []
    corpus = [document.split() for document in documents]
    if not any(corpus):
        # BM25Okapi divides by the vocabulary size; with no word anywhere every score is 0.
        scores = np.zeros(len(documents))
    else:
        scores = BM25Okapi(corpus).get_scores(query.split())
    return lamp_argsort(scores)[::-1]


# numpy's introsort (numpy/core/src/npysort/quicksort.cpp and npysort_heapsort.h, numpy
# 1.24, the version LaMP pins): below this many items a range is insertion-sorted.
_SMALL_RANGE = 15


def lamp_argsort(values: Sequence[float]) -> list[int]:
    """`np.argsort(values)` as numpy 1.24 computes it, on any machine and numpy version.

    LaMP orders profile items by `np.argsort(scores)[::-1]`, so items with equal scores come
    out in the order numpy's default (quicksort) argsort leaves them in: reversed profile
    order on profiles of up to 16 items, a partition-dependent order on longer ones. Newer
    numpy versions sort with SIMD code on some CPUs and order ties differently again, so the
    1.24 algorithm is rebuilt here: introsort (median-of-three quicksort, insertion sort
    on short ranges, heapsort past a depth of 2 * floor(log2(n))).
    """
    v = [float(x) for x in values]
    order = list(range(len(v)))

    def less(a: float, b: float) -> bool:  # numpy's float order: NaN sorts last
        return a < b or (b != b and a == a)

    stack: list[tuple[int, int, int]] = []
    low, high, depth = 0, len(v) - 1, 2 * (max(len(v), 1).bit_length() - 1)
    while True:
        if depth < 0:
            _heapsort_range(v, order, low, high, less)
        else:
            while high - low > _SMALL_RANGE:
                mid = low + ((high - low) >> 1)
                if less(v[order[mid]], v[order[low]]):
                    order[mid], order[low] = order[low], order[mid]
                if less(v[order[high]], v[order[mid]]):
                    order[high], order[mid] = order[mid], order[high]
                if less(v[order[mid]], v[order[low]]):
                    order[mid], order[low] = order[low], order[mid]
                pivot = v[order[mid]]
                i, j = low, high - 1
                order[mid], order[j] = order[j], order[mid]
                while True:
                    i += 1
                    while less(v[order[i]], pivot):
                        i += 1
                    j -= 1
                    while less(pivot, v[order[j]]):
                        j -= 1
                    if i >= j:
                        break
                    order[i], order[j] = order[j], order[i]
                order[i], order[high - 1] = order[high - 1], order[i]
                depth -= 1
                if i - low < high - i:  # keep sorting the smaller side, the larger waits
                    stack.append((i + 1, high, depth))
                    high = i - 1
                else:
                    stack.append((low, i - 1, depth))
                    low = i + 1
            for i in range(low + 1, high + 1):  # insertion sort of the short range
                moving, j = order[i], i
                while j > low and less(v[moving], v[order[j - 1]]):
                    order[j] = order[j - 1]
                    j -= 1
                order[j] = moving
        if not stack:
            return order
        low, high, depth = stack.pop()


def _heapsort_range(v: list[float], order: list[int], low: int, high: int, less) -> None:
    """numpy's argsort heapsort of order[low..high] in place (1-based heap over the range)."""
    n = high - low + 1

    def sift(top: int, size: int, moving: int) -> None:
        i, j = top, top * 2
        while j <= size:
            if j < size and less(v[order[low + j - 1]], v[order[low + j]]):
                j += 1
            if not less(v[moving], v[order[low + j - 1]]):
                break
            order[low + i - 1] = order[low + j - 1]
            i, j = j, j * 2
        order[low + i - 1] = moving

    for top in range(n >> 1, 0, -1):
        sift(top, n, order[low + top - 1])
    while n > 1:
        moving = order[low + n - 1]
        order[low + n - 1] = order[low]
        n -= 1
        sift(1, n, moving)


def dense_ranking(query: torch.Tensor, documents: torch.Tensor) -> list[int]:
    """query [H], documents [N, H] -> indices by cosine similarity, best first (ties: profile order)."""
    if len(documents) == 0:
        return []
    scores = F.cosine_similarity(documents, query.unsqueeze(0), dim=-1)  # [N]
    return sorted(range(len(documents)), key=lambda i: -float(scores[i]))


# --- the prompt -------------------------------------------------------------------------------------------

def rag_prompt(task: TaskSpec, question: str, items: Sequence[ProfileItem], tokenizer, max_length: int) -> str:
    """`items` (best first) written into `question` with LaMP's template for the task, then
    cut to the `max_length` tokens LaMP's LLM reads. With no items, or items that fit at no
    share of the question, the prompt is the question alone (cut the same way)."""
    question_length = _length(tokenizer, question)
    share = QUESTION_SHARE
    while share >= 0:  # 0.6, 0.5, ... in float steps, as LaMP's loop (its last try is ~0)
        budget = max_length - min(question_length, int(share * max_length))
        prompt = _written(task.rag, question, list(items), tokenizer, budget)
        if prompt is not None:
            return lamp_truncate(prompt, tokenizer, max_length)
        share -= SHARE_STEP
    return lamp_truncate(question, tokenizer, max_length)


def _written(fmt: RagFormat, question: str, items: list[ProfileItem], tokenizer, budget: int) -> str | None:
    """The items written into the question within `budget` tokens, or None when one of them
    would need a negative share (where LaMP's tokenizer call fails and it retries)."""
    if not items:
        return None  # LaMP divides the budget by the item count and falls back to the question
    reserved = _length(tokenizer, fmt.reserve) if fmt.reserve else 0
    per_item = (budget - fmt.spare - 2 * (len(items) - 1) - reserved) // len(items)
    saved, parts = 0, []
    for item in items:
        fixed = fmt.frame if isinstance(fmt.frame, int) else _length(tokenizer, fmt.frame.format(**item))
        allowance = per_item + saved - fixed
        if allowance < 0:
            return None
        # An allowance of 0 goes to the tokenizer as LaMP passes it; what it keeps then is its own.
        ids = tokenizer(str(item[fmt.shorten]), max_length=allowance, truncation=True)["input_ids"]
        saved += per_item - len(ids) - fixed
        parts.append(fmt.item.format(**{**item, fmt.shorten: _decode(tokenizer, ids)}))
    written = JOINER.join(parts)
    if fmt.placement == "after_title":  # LaMP-1: '... with the title, and "A", and "B" "T", which ...'
        cut = question.find("title")
        if cut < 0:
            return question  # LaMP inserts nothing when the question has no "title"
        cut += len("title")
        return question[:cut] + JOINER + written + question[cut:]
    return written + fmt.lead + question


def _length(tokenizer, text: str) -> int:
    """Tokens of `text` as LaMP counts them: with the tokenizer's special tokens."""
    return len(tokenizer(text)["input_ids"])


def _decode(tokenizer, ids: list[int]) -> str:
    # transformers 4.27 (LaMP's) cleaned up tokenization spaces (" ," -> ",") by default.
    text = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return tokenizer.clean_up_tokenization(text)


def lamp_truncate(text: str, tokenizer, max_length: int) -> str:
    """`text` as far as `tokenizer(text, max_length=max_length, truncation=True)` keeps it.

    The kept part is cut from `text` at its last kept token's end (a prefix of the prompt),
    or decoded when the tokenizer gives no character offsets (a slow tokenizer).
    """
    if _length(tokenizer, text) <= max_length:
        return text
    if not tokenizer.is_fast:
        kept = tokenizer(text, max_length=max_length, truncation=True)["input_ids"]
        return tokenizer.decode(kept, skip_special_tokens=True)
    kept = tokenizer(text, max_length=max_length, truncation=True, return_offsets_mapping=True,
                     return_special_tokens_mask=True)
    ends = [end for (_, end), special in zip(kept["offset_mapping"], kept["special_tokens_mask"]) if not special]
    return text[:max(ends, default=0)]


# --- the rag baseline's inputs ----------------------------------------------------------------------------

class RagPrompter:
    """question -> the `rag` baseline's input: its user's top `k` items written in, LaMP's way.

    tokenizer: the LLM's; encoder: a history encoder (model.BehavioralEncoder) for the
    dense retriever, None for BM25.
    """

    def __init__(self, tokenizer, k: int, max_length: int, encoder=None):
        self.tokenizer = tokenizer
        self.k = k
        self.max_length = max_length
        self.encoder = encoder

    def ranking(self, task: TaskSpec, example) -> list[int]:
        """Indices of the example's whole profile, best first."""
        query = task.retrieval_query(example.input)
        documents = [task.retrieval_text(item) for item in example.profile]
        if self.encoder is None:
            return bm25_ranking(query, documents)
        vectors = self.encoder.encode_texts([query] + documents)  # [1 + N, H]
        return dense_ranking(vectors[0], vectors[1:])

    def __call__(self, task: TaskSpec, example) -> str:
        top = [example.profile[i] for i in self.ranking(task, example)[:self.k]]
        return rag_prompt(task, example.input, top, self.tokenizer, self.max_length)
