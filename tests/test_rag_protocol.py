"""The `rag` baseline at LaMP's protocol: BM25 rankings, the budget arithmetic and templates
of LaMP's prompt builders, the final cut, and the wiring over the whole profile."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from dataset.lamp import LaMPSplit
from dataset.retrieval import _heapsort_range, bm25_ranking, dense_ranking, lamp_argsort, rag_prompt
from dataset.tasks import get_task
from tiny_models import tiny_tokenizer
from trainers.builder import rag_prompter
from trainers.config import TrainConfig


def word_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """One token per whitespace-separated word, plus T5's "</s>" at the end of every text:
    token counts in these tests are word counts + 1, checkable by hand. Words outside
    `texts` are <unk> (still one token each)."""
    words = sorted({w for text in texts for w in text.split()})
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")


# --- BM25 -------------------------------------------------------------------------------------------------

def okapi_scores(query: list[str], corpus: list[list[str]], k1=1.5, b=0.75, epsilon=0.25) -> list[float]:
    """BM25Okapi written out from its definition (rank_bm25 0.2.2's variant): idf =
    ln(N - df + 0.5) - ln(df + 0.5), negative idfs floored to epsilon * the mean idf."""
    n, avgdl = len(corpus), sum(map(len, corpus)) / len(corpus)
    df = {w: sum(w in doc for doc in corpus) for w in {w for doc in corpus for w in doc}}
    idf = {w: math.log(n - f + 0.5) - math.log(f + 0.5) for w, f in df.items()}
    floor = epsilon * sum(idf.values()) / len(idf)
    idf = {w: (floor if v < 0 else v) for w, v in idf.items()}
    return [sum(idf.get(q, 0.0) * doc.count(q) * (k1 + 1) / (doc.count(q) + k1 * (1 - b + b * len(doc) / avgdl))
                for q in query) for doc in corpus]


def test_bm25_is_lamps_okapi_over_whitespace_tokens_ties_later_first():
    documents = ["Graph neural networks.",    # 0: the query's exact tokens
                 "graph neural networks",     # 1: lower case and no period: no match at all
                 "Graph neural networks.",    # 2: ties with 0, and comes first (later item)
                 "protein folding in cells",  # 3: no match, ties with 1
                 "Graph cuts, and networks"]  # 4: only "Graph" matches
    query = "Graph networks."
    scores = okapi_scores(query.split(), [d.split() for d in documents])
    assert scores[0] == scores[2] > scores[4] > scores[1] == scores[3] == 0
    assert bm25_ranking(query, documents) == [2, 0, 4, 3, 1]
    # Stop words and case count: "the" is a word like any other.
    assert bm25_ranking("the The", ["a the b", "The c d", "x y z"])[:2] == [1, 0]
    assert bm25_ranking("zebra", ["", ""]) == [1, 0], "nothing indexable: every score 0, later first"
    assert bm25_ranking("zebra", []) == []


def test_lamp_argsort_is_numpy_1_24s_order():
    # Reference orders printed by np.argsort (kind="heapsort" for the last) under numpy 1.24.2.
    assert lamp_argsort([float(i % 3) for i in range(40)]) == [
        0, 36, 33, 30, 27, 24, 21, 18, 15, 12, 39, 9, 3, 6, 25, 37, 1, 34, 31, 28, 4, 10, 19, 16, 13, 7, 22, 14,
        35, 8, 2, 32, 23, 29, 38, 26, 20, 5, 17, 11]
    ties = [0.0] * 100
    ties[3] = ties[50] = 1.0
    assert lamp_argsort(ties)[::-1][:6] == [50, 3, 37, 27, 28, 29]  # ties past 16 items are not "later first"
    values = [float((i * 7) % 5) for i in range(23)]
    order = list(range(23))
    _heapsort_range(values, order, 0, 22, lambda a, b: a < b)
    assert order == [10, 20, 5, 0, 15, 18, 13, 3, 8, 6, 11, 21, 1, 16, 14, 4, 19, 9, 12, 2, 22, 17, 7]
    for n in range(17):  # short ranges are insertion-sorted: a stable sort
        values = [float((i * 5) % 3) for i in range(n)]
        assert lamp_argsort(values) == sorted(range(n), key=lambda i: values[i])
    assert lamp_argsort([]) == []


def test_lamp1_retrieval_finds_the_papers_that_share_the_candidates_words():
    profile = [{"title": "Galaxy cluster lensing maps", "abstract": "We map dark matter with weak lensing."},
               {"title": "Query optimization with learned cost models", "abstract": "Databases need plans."},
               {"title": "Robot grasping from tactile sensing", "abstract": "Robots pick objects."},
               {"title": "Learned indexes for database query engines", "abstract": "Query engines and indexes."}]
    question = ('For an author who has written the paper with the title "A survey", which reference is related? '
                'Just answer with [1] or [2] without explanation. [1]: "Cardinality estimation for database '
                'query plans" [2]: "Protein folding kinetics"')
    task = get_task("LaMP-1")
    ranking = bm25_ranking(task.retrieval_query(question), [task.retrieval_text(p) for p in profile])
    # Only the last paper has the query's "for", "database" and "query"; the second's "Query"
    # is another word (case kept), so the other three score 0 and come later first.
    assert ranking == [3, 2, 1, 0]
    assert dense_ranking(torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 1.0], [2.0, 0.1]])) == [1, 0]


# --- the prompt: hand-computed cases ----------------------------------------------------------------------

LAMP3_INSTRUCTION = ("What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, "
                     "or 5 without further explanation. review:")  # 28 words
REVIEW = " ".join(f"r{i}" for i in range(22))


def test_lamp3_prompt_arithmetic_by_hand():
    question = f"{LAMP3_INSTRUCTION} {REVIEW}"  # 50 words + </s> = 51 tokens
    items = [{"score": "5", "text": "Alpha beta gamma"}, {"score": "3", "text": "Delta epsilon"}]
    tok = word_tokenizer([question] + [item["text"] for item in items])
    # question share min(51, int(0.6 * 60)) = 36, items get 24; each (24 - 1 - 2) // 2 = 10;
    # frame '5 is the score for " " ' = 7 words + </s> = 8, so each text keeps 10 - 8 = 2
    # tokens: one word and </s>. The joined prompt (15 + 50 words + </s>) is cut to 60
    # tokens: 15 + 44 question words + </s>, so the last 6 words of the review are lost.
    prompt = rag_prompt(get_task("LaMP-3"), question, items, tok, 60)
    kept = " ".join(question.split()[:44])
    assert prompt == '5 is the score for "Alpha" , and 3 is the score for "Delta" . ' + kept


def test_unused_share_passes_to_the_next_item_and_the_question_share_drops_when_items_do_not_fit():
    question = f"{LAMP3_INSTRUCTION} {REVIEW}"
    items = [{"score": "5", "text": "Alpha"}, {"score": "3", "text": "Delta epsilon zeta eta theta"}]
    tok = word_tokenizer([question] + [item["text"] for item in items])
    # max_length 64: share int(38.4) = 38 leaves 26, each item (26 - 3) // 2 = 11; the first
    # text may have 11 - 8 = 3 tokens and uses 2 ("Alpha" and </s>), so the second may
    # have 3 + 1 = 4: three words and </s>.
    prompt = rag_prompt(get_task("LaMP-3"), question, items, tok, 64)
    assert prompt.startswith('5 is the score for "Alpha" , and 3 is the score for "Delta epsilon zeta" . What is')
    # A frame longer than an item's share: the frame '5 5 is the score for " " ' is 9 tokens;
    # at max_length 50 the share 0.6 leaves 20, each (20 - 3) // 2 = 8 < 9, so LaMP retries
    # with the share 0.5: 25 left, each 11, 2 tokens per text, one word.
    long_frames = [{"score": "5 5", "text": "Alpha"}, {"score": "3 3", "text": "Delta epsilon"}]
    prompt = rag_prompt(get_task("LaMP-3"), question, long_frames, tok, 50)
    assert prompt.startswith('5 5 is the score for "Alpha" , and 3 3 is the score for "Delta" . What')


def test_lamp1_items_go_after_the_word_title_with_two_tokens_per_title_for_quotes():
    question = ('For an author who has written the paper with the title "Deep nets", which reference is related? '
                'Just answer with [1] or [2] without explanation. [1]: "Graph cuts" [2]: "Sparse codes"')  # 30 words
    items = [{"title": "One two three four", "abstract": "x"}, {"title": "Five six seven", "abstract": "y"}]
    tok = word_tokenizer([question] + [item["title"] for item in items])
    # share min(31, int(0.6 * 50)) = 30 -> items 20; LaMP-1 keeps no spare token: each
    # (20 - 2) // 2 = 9, less 2 for the quotes: 7 tokens = the whole 4-word title + </s>
    # (5 used, 2 saved); the second then has 9 + 2 - 2 = 9.
    prompt = rag_prompt(get_task("LaMP-1"), question, items, tok, 50)
    assert prompt.startswith('For an author who has written the paper with the title, and "One two three four", and '
                             '"Five six seven" "Deep nets", which')
    assert rag_prompt(get_task("LaMP-1"), "no such word here", items, tok, 50) == "no such word here"


def test_lamp5_and_lamp7_reserve_their_leads_tokens():
    abstract = " ".join(f"a{i}" for i in range(30))
    question = f"Generate a title for the following abstract of a paper: {abstract}"  # 40 words
    items = [{"title": "T1", "abstract": "b0 b1 b2 b3 b4 b5 b6 b7 b8 b9"}]
    tok = word_tokenizer([question, items[0]["abstract"]])
    # share min(41, int(0.6 * 50)) = 30 -> 20; "Following the given patterns" = 5 tokens, so
    # the item has 20 - 1 - 5 = 14; LaMP's frame '"T1" is a title " " ' = 6 words + </s> = 7:
    # 7 tokens for the abstract, 6 words and </s>.
    prompt = rag_prompt(get_task("LaMP-5"), question, items, tok, 50)
    assert prompt.startswith('"T1" is a title for "b0 b1 b2 b3 b4 b5" . Following the given patterns Generate')
    tweet = "Paraphrase the following tweet without any explanation before or after it: " + abstract  # 42 words
    items = [{"text": "b0 b1 b2 b3 b4 b5 b6 b7 b8 b9"}]
    tok = word_tokenizer([tweet, items[0]["text"]])
    # 50 - 30 = 20, less 1, less 9 for "are written by user. Following the given patterns":
    # 10, less 2 for the frame '"" ': 8 tokens, 7 words. The item's own trailing space and
    # the lead's make two, as in LaMP.
    prompt = rag_prompt(get_task("LaMP-7"), tweet, items, tok, 50)
    assert prompt.startswith('"b0 b1 b2 b3 b4 b5 b6"  are written by a person. Following the given patterns Paraphrase')


def test_no_items_or_no_room_leaves_the_question_cut_to_the_budget():
    question = f"{LAMP3_INSTRUCTION} {REVIEW}"
    tok = word_tokenizer([question])
    # 51 tokens cut to 45: 44 words and </s>, the review up to r15.
    assert rag_prompt(get_task("LaMP-3"), question, [], tok, 45) == question[:question.index(" r16")]
    huge = [{"score": " ".join(["9"] * 80), "text": "x"}]  # the frame alone exceeds any share
    assert rag_prompt(get_task("LaMP-3"), question, huge, tok, 45) == question[:question.index(" r16")]


# --- the prompt: long questions keep every item -----------------------------------------------------------

LONG = ("learning graph neural networks for protein folding and galaxy surveys query optimization in distributed "
        "databases with learned cost models ") * 6


@pytest.mark.parametrize("name,question,item,marker", [
    ("LaMP-2", "Which tag does this movie relate to among the following tags? Just answer with the tag name without "
               "further explanation. tags: [sci-fi, based on a book, comedy, action, twist ending, dystopia, dark "
               "comedy, classic, psychology, fantasy, romance, thought-provoking, social commentary, violence, true "
               "story] description: " + LONG,
     {"description": LONG, "tag": "comedy"}, 'the tag for the movie: "'),
    ("LaMP-3", "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, 3, 4, or 5 "
               "without further explanation. review: " + LONG,
     {"text": LONG, "score": "4"}, '4 is the score for "'),
    ("LaMP-4", "Generate a headline for the following article: " + LONG,
     {"text": LONG, "title": "Robots"}, '"Robots" is the title for "'),
    ("LaMP-5", "Generate a title for the following abstract of a paper: " + LONG,
     {"abstract": LONG, "title": "Robots"}, '"Robots" is a title for "'),
])
def test_a_long_question_keeps_all_k_items_and_loses_its_end(name, question, item, marker):
    tok = tiny_tokenizer()
    assert len(tok(question)["input_ids"]) > 256, "the question alone must overflow the budget"
    prompt = rag_prompt(get_task(name), question, [item] * 4, tok, 256)
    assert prompt.count(marker) == 4
    assert len(tok(prompt)["input_ids"]) <= 256
    opening = question[:60]
    assert opening in prompt and not prompt.endswith(question[-40:]), "the question is cut at its end"
    assert question.startswith(prompt[prompt.index(opening):]), "what is left of the question is its beginning"


def test_rag_ranks_the_whole_profile_not_only_the_last_max_history_items():
    question = "Generate a headline for the following article: zebra migration"
    profile = [{"title": "Zebras", "text": "zebra migration"}] + [{"title": f"T{i}", "text": "other news"}
                                                                  for i in range(9)]
    cfg = TrainConfig(max_history=3, rag_k=1, max_input_tokens=256)
    prompter = rag_prompter(cfg, tiny_tokenizer())
    example = SimpleNamespace(input=question, profile=profile)
    assert prompter.ranking(get_task("LaMP-4"), example)[0] == 0
    assert prompter(get_task("LaMP-4"), example).startswith('"Zebras" is the title for "zebra migration"')



def test_dense_retriever_ranks_the_item_that_reads_like_the_query_first(tiny_model_dirs, tmp_path):
    question = "Generate a headline for the following article: galaxy surveys and protein folding"
    profile = [{"title": f"T{i}", "text": text} for i, text in enumerate(
        ["query optimization in distributed databases", "galaxy surveys and protein folding", "robots and music"])]
    cfg = TrainConfig(retriever="dense", rag_k=1, encoder=str(tiny_model_dirs / "bert"), cache_dir=str(tmp_path))
    prompter = rag_prompter(cfg, tiny_tokenizer())
    example = SimpleNamespace(input=question, profile=profile)
    assert prompter.ranking(get_task("LaMP-4"), example)[0] == 1  # "T1 <the query's words>"
    assert prompter(get_task("LaMP-4"), example).startswith('"T1" is the title for "galaxy surveys')

# --- python -m dataset.retrieval --------------------------------------------------------------------------

LAMP2_INSTRUCTION = ("Which tag does this movie relate to among the following tags? Just answer with the tag name "
                     "without further explanation. tags: [sci-fi, based on a book, comedy, action, twist ending, "
                     "dystopia, dark comedy, classic, psychology, fantasy, romance, thought-provoking, social "
                     "commentary, violence, true story] description: ")


def server_layout_lamp2(root) -> dict:
    """LaMP-2 as LaMP's server lays it out (LaMP_2/new/dev/...): two users, long plots."""
    import json
    profile = [{"id": f"p{i}", "description": f"{topic} {LONG}", "tag": tag}
               for i, (topic, tag) in enumerate([("robots", "sci-fi"), ("wedding", "romance"), ("heist", "action"),
                                                 ("robots", "dystopia"), ("court", "true story")])]
    questions = [{"id": "q1", "input": LAMP2_INSTRUCTION + "robots " + LONG, "profile": profile},
                 {"id": "q2", "input": LAMP2_INSTRUCTION + "a wedding in court", "profile": profile[:3]}]
    folder = root / "LaMP_2" / "new" / "dev"
    folder.mkdir(parents=True)
    (folder / "dev_questions.json").write_text(json.dumps(questions))
    (folder / "dev_outputs.json").write_text(json.dumps({"task": "LaMP_2", "golds": [
        {"id": "q1", "output": "sci-fi"}, {"id": "q2", "output": "romance"}]}))
    return {q["id"]: q for q in questions}


def test_cli_writes_the_rag_inputs_of_a_server_layout_folder(tmp_path, tiny_model_dirs):
    import json
    from dataset.retrieval.__main__ import main
    questions = server_layout_lamp2(tmp_path / "lamp")
    out = tmp_path / "inputs.json"
    llm = tiny_model_dirs / "llama"
    assert main([f"--data_dir={tmp_path / 'lamp'}", "--tasks=LaMP-2", "--split=dev", "--out", str(out),
                 f"--llm={llm}", f"--encoder={tiny_model_dirs / 'bert'}", "--rag_k=3", "--max_input_tokens=200",
                 f"--cache_dir={tmp_path / 'cache'}"]) == 0
    written = json.loads(out.read_text())
    assert list(written) == ["LaMP-2"] and sorted(written["LaMP-2"]) == ["q1", "q2"]
    tok = PreTrainedTokenizerFast.from_pretrained(llm)
    task = get_task("LaMP-2")
    for qid, question in questions.items():
        profile = question["profile"]
        ranking = bm25_ranking(task.retrieval_query(question["input"]), [task.retrieval_text(p) for p in profile])
        expected = rag_prompt(task, question["input"], [profile[i] for i in ranking[:3]], tok, 200)
        assert written["LaMP-2"][qid] == expected
        assert expected.count('the tag for the movie: "') == 3
    assert '"sci-fi"' in written["LaMP-2"]["q1"] and '"dystopia"' in written["LaMP-2"]["q1"]  # the robot plots
    assert len(tok(written["LaMP-2"]["q1"])["input_ids"]) <= 200


def test_cli_gives_what_the_rag_run_gives_the_llm_on_the_embedded_data(tmp_path, tiny_model_dirs):
    import json
    from dataset.retrieval.__main__ import main
    from trainers.builder import load_datasets, retrieval_augmented
    settings = [f"--llm={tiny_model_dirs / 'llama'}", f"--encoder={tiny_model_dirs / 'bert'}",
                f"--cache_dir={tmp_path / 'cache'}", "--max_eval_examples=3"]
    out = tmp_path / "embedded.json"
    assert main(["--data_dir=embedded", "--tasks=LaMP-1", "--split=dev", "--out", str(out), *settings]) == 0
    written = json.loads(out.read_text())["LaMP-1"]
    cfg = TrainConfig(model="rag", data_dir="embedded", llm=str(tiny_model_dirs / "llama"),
                      encoder=str(tiny_model_dirs / "bert"), cache_dir=str(tmp_path / "cache"))
    tok = PreTrainedTokenizerFast.from_pretrained(tiny_model_dirs / "llama")
    dataset, _ = retrieval_augmented(cfg, load_datasets(cfg, "dev", 3), tok)["LaMP-1"]
    assert written == {example.id: example.input for example in dataset.examples}
    assert all(text.count('", and "') >= 3 for text in written.values()), "four titles written in"


def test_cli_reports_a_missing_data_folder(tmp_path, capsys):
    from dataset.retrieval.__main__ import main
    assert main([f"--data_dir={tmp_path / 'nowhere'}", "--tasks=LaMP-2", "--out", str(tmp_path / "x.json")]) == 2
    assert "data_dir" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def test_rag_ranks_the_whole_profile_where_the_history_readers_keep_its_last_items(tmp_path, tiny_model_dirs):
    from trainers.builder import load_datasets, retrieval_augmented
    tok = PreTrainedTokenizerFast.from_pretrained(tiny_model_dirs / "llama")

    def read(max_history: int):  # -> the examples as loaded, and rag's rewritten inputs
        cfg = TrainConfig(model="rag", data_dir="embedded", llm=str(tiny_model_dirs / "llama"),
                          encoder=str(tiny_model_dirs / "bert"), cache_dir=str(tmp_path / "cache"), max_history=max_history)
        sets = load_datasets(cfg, "dev", 3)
        dataset, _ = retrieval_augmented(cfg, sets, tok)["LaMP-1"]
        return sets["LaMP-1"][0].examples, dataset.examples

    last, rag_from_last = read(max_history=1)
    whole, rag_from_whole = read(max_history=0)
    assert all(len(example.profile) == 1 for example in last) and all(len(example.profile) > 4 for example in whole)
    assert [e.input for e in rag_from_last] == [e.input for e in rag_from_whole], "max_history does not limit what rag ranks"
    assert [e.input for e in rag_from_last] != [e.input for e in last]
    # What the rag run keeps is its inputs, not the whole profiles it ranked: its examples are
    # still read lazily, with the profile cut that every history reader sees.
    assert isinstance(rag_from_last, LaMPSplit)
    assert [(e.id, e.profile, e.output) for e in rag_from_last] == [(e.id, e.profile, e.output) for e in last]
