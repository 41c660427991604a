"""bench.inference_cost on tiny models: what it measures and reports (never how fast it is)."""

import json

from bench import inference_cost


def test_inference_bench_answers_the_same_examples_with_each_method(tmp_path, tiny_model_dirs, lamp_dir, capsys):
    out = tmp_path / "inference.json"
    report = inference_cost.main([
        "--device", "cpu", "--examples", "3", "--repeats", "1", "--out", str(out),
        f"--encoder={tiny_model_dirs / 'bert'}", f"--llm={tiny_model_dirs / 'llama'}", f"--data_dir={lamp_dir}",
        f"--cache_dir={tmp_path / 'cache'}", "--qformer_heads=4", "--num_queries=4", "--max_history=6"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    methods = report["methods"]
    assert list(methods) == ["none", "twin", "pplug", "rag"]
    assert all(len(m["latency_s"]) == 3 and min(m["latency_s"]) > 0 for m in methods.values())
    # One pass reads the input and gives the first token; LaMP-1's budget is 4 new tokens.
    assert all(1 <= m["llm_passes_per_answer"] <= 4 for m in methods.values())
    assert report["llm_dtype"] == "bfloat16", "the benchmark runs what train.py runs by default"
    tokens = {name: m["median_llm_input_tokens"] for name, m in methods.items()}
    # Soft prompts add a fixed number of positions; retrieval adds profile text.
    assert tokens["twin"] == tokens["none"] + 4 and tokens["pplug"] == tokens["none"] + 2
    assert tokens["rag"] > tokens["twin"]
    assert report["latency_ratio_twin_vs_none"] == methods["twin"]["median_latency_s"] / \
        methods["none"]["median_latency_s"]
    assert "latency_ratio_twin_vs_rag" in capsys.readouterr().out


def test_methods_take_turns_on_each_example_and_each_goes_first_in_turn():
    import itertools
    calls = []
    answers = {name: (lambda i, name=name: calls.append((name, i))) for name in ("a", "b", "c")}
    ticks = itertools.count()  # every clock reading is one later: each timed answer takes 1
    medians = inference_cost.measure(answers, [0, 1], repeats=2, clock=lambda: next(ticks))
    assert calls[:9] == [("a", 0), ("b", 0), ("c", 0)] * 3  # one untimed round, then 2 timed ones
    assert calls[9:] == [("b", 1), ("c", 1), ("a", 1)] * 3
    assert medians == {"a": [1, 1], "b": [1, 1], "c": [1, 1]}
