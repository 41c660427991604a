"""bench.train_throughput on tiny models: what it times and reports (never how fast it is).

The `tiny_model_dirs` fixture is in conftest.py.
"""

import json

import pytest

from bench import train_throughput
from dataset.embedded.lamp1 import generate_embedded_lamp1


@pytest.mark.parametrize("dtype, mixed_precision, steps, warmup, same_loss",
                         [("float32", "no", 2, 1, 1e-5), ("bfloat16", "bf16", 1, 0, 2e-2)])
def test_bench_times_each_history_source_on_the_same_batches_and_reports_them(
        tmp_path, tiny_model_dirs, capsys, dtype, mixed_precision, steps, warmup, same_loss):
    data = generate_embedded_lamp1(tmp_path / "data", seed=3, n_train=12, n_dev=2, n_test=2)
    out = tmp_path / "bench.json"
    report = train_throughput.main([
        "--device", "cpu", "--steps", str(steps), "--warmup", str(warmup), "--out", str(out), "--batch_size=2",
        "--results", str(tmp_path / "RESULTS.md"),
        f"--llm_dtype={dtype}", f"--mixed_precision={mixed_precision}",
        f"--encoder={tiny_model_dirs / 'bert'}", f"--llm={tiny_model_dirs / 'llama'}",
        f"--data_dir={data}", f"--cache_dir={tmp_path / 'cache'}", "--qformer_heads=4", "--max_item_tokens=32",
        "--max_history=4"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    variants = report["variants"]
    assert set(variants) == {"store", "store_prefix_recomputed", "uncached", "seed_style", "llm_only"}
    for name, v in variants.items():
        assert len(v["step_s"]) == len(v["history_s"]) == steps, "one history-encoder call per timed step"
        assert all(0 < h < s for h, s in zip(v["history_s"], v["step_s"])) or name == "llm_only"
    assert variants["llm_only"]["history_s"] == [0.0] * steps and all(s > 0 for s in variants["llm_only"]["step_s"])
    assert report["limit_ratio"] == pytest.approx(
        variants["llm_only"]["median_step_s"] / variants["store"]["median_step_s"])
    # Leaf prompts at the LLM's scale instead of the model's: another loss, but the same LLM on the same targets.
    assert variants["llm_only"]["first_batch_loss"] > 0
    # The twin's own parts, timed inside its steps (never for llm_only, which has none of them).
    for name in ("store", "uncached"):
        for part in ("optimizer", "input_encoder_forward", "qformer_forward", "projection_forward",
                     "input_encoder_backward", "qformer_backward", "projection_backward"):
            assert 0 < variants[name][f"median_{part}_s"] < variants[name]["median_step_s"], (name, part)
    assert "median_optimizer_s" not in variants["llm_only"]
    # The store and encoding on the fly give the model the same embeddings (bf16: up to rounding).
    # Recomputing the LLM's prefix instead of reading its cached keys and values changes nothing either.
    for other in ("uncached", "store_prefix_recomputed"):
        assert variants["store"]["first_batch_loss"] == pytest.approx(variants[other]["first_batch_loss"],
                                                                      rel=same_loss)
    assert report["speedup_store_vs_uncached"] == pytest.approx(
        variants["uncached"]["median_step_s"] / variants["store"]["median_step_s"])
    assert report["speedup_prefix_cache"] == pytest.approx(
        variants["store_prefix_recomputed"]["median_step_s"] / variants["store"]["median_step_s"])
    # The fill pass encoded each distinct history text of the batches.
    assert report["store_fill"]["texts"] >= report["distinct_history_items_per_batch"] > 0
    assert report["machine"]["torch"] and report["device"] == "cpu"
    assert (report["llm_dtype"], report["mixed_precision"], report["batch_size"]) == (dtype, mixed_precision, 2)
    printed = capsys.readouterr().out
    assert "| seed style (encoded every step, padded to 512) |" in printed and "speedup_store_vs_uncached" in printed
    assert "| LLM only (leaf soft prompts; the limit) |" in printed and "limit_ratio" in printed
    assert "| optimizer (clipping, AdamW step) |" in printed and "| input_encoder backward |" in printed
    results = (tmp_path / "RESULTS.md").read_text()
    assert "## Training step: history sources and the LLM-only limit" in results and "limit_ratio" in results


def test_benchmarks_default_to_the_run_that_train_py_makes():
    import train
    from bench.common import default_config
    cfg = default_config([])
    assert {name: getattr(cfg, name) for name in train.header_defaults()} == train.header_defaults()
    assert default_config(["--batch_size=4"]).batch_size == 4


def test_bench_without_a_prefix_to_cache_times_three_variants(tmp_path, tiny_model_dirs, capsys):
    data = generate_embedded_lamp1(tmp_path / "data", seed=3, n_train=12, n_dev=2, n_test=2)
    report = train_throughput.main([
        "--device", "cpu", "--steps", "1", "--warmup", "0", "--out", str(tmp_path / "bench.json"), "--batch_size=2",
        "--results", "", f"--encoder={tiny_model_dirs / 'bert'}", f"--llm={tiny_model_dirs / 't5'}", f"--data_dir={data}",
        f"--cache_dir={tmp_path / 'cache'}", "--qformer_heads=4", "--max_item_tokens=32", "--max_history=4"])
    assert set(report["variants"]) == {"store", "uncached", "seed_style", "llm_only"}, "T5: no shared prefix to cache"
    assert report["speedup_prefix_cache"] is None
    assert "speedup_prefix_cache nan" in capsys.readouterr().out


def test_bench_times_only_the_variants_asked_for_and_always_the_store_and_the_limit(tmp_path, tiny_model_dirs):
    data = generate_embedded_lamp1(tmp_path / "data", seed=3, n_train=12, n_dev=2, n_test=2)
    common = ["--device", "cpu", "--steps", "1", "--warmup", "0", "--out", str(tmp_path / "bench.json"),
              "--batch_size=2", "--results", "", f"--encoder={tiny_model_dirs / 'bert'}",
              f"--llm={tiny_model_dirs / 'llama'}", f"--data_dir={data}", f"--cache_dir={tmp_path / 'cache'}",
              "--qformer_heads=4", "--max_item_tokens=32", "--max_history=4"]
    report = train_throughput.main([*common, "--variants=uncached"])
    assert set(report["variants"]) == {"store", "uncached", "llm_only"}
    assert report["speedup_store_vs_seed_style"] is None and report["speedup_store_vs_uncached"] > 0
    with pytest.raises(SystemExit):
        train_throughput.main([*common, "--variants=stored"])


def test_a_frozen_input_encoder_is_timed_with_its_states_kept_and_a_named_section_leaves_the_full_table(
        tmp_path, tiny_model_dirs):
    data = generate_embedded_lamp1(tmp_path / "data", seed=3, n_train=12, n_dev=2, n_test=2)
    results = tmp_path / "RESULTS.md"
    results.write_text("<!-- results:train_throughput -->\nthe full table\n<!-- /results:train_throughput -->\n")
    common = ["--device", "cpu", "--steps", "2", "--warmup", "0", "--out", str(tmp_path / "bench.json"),
              "--batch_size=2", f"--encoder={tiny_model_dirs / 'bert'}", "--variants=store",
              f"--llm={tiny_model_dirs / 'llama'}", f"--data_dir={data}", f"--cache_dir={tmp_path / 'cache'}",
              "--qformer_heads=4", "--max_item_tokens=32", "--max_history=4"]
    tuned = train_throughput.main([*common, "--results", ""])
    assert tuned["store_fill"]["input_states_kept"] == 0, "an input encoder that trains keeps nothing"
    assert tuned["variants"]["store"]["median_input_encoder_backward_s"] > 0
    frozen = train_throughput.main([*common, "--tune_layers=0", "--results", str(results),
                                    "--section=train_throughput-limit-tune0"])
    # 2 steps of 2 examples: every input of the timed batches was kept before timing
    assert frozen["store_fill"]["input_states_kept"] == 4
    assert frozen["variants"]["store"]["median_input_encoder_backward_s"] == 0, "no backward through frozen layers"
    text = results.read_text()
    assert "the full table" in text and "## Training step: history sources and the LLM-only limit, " \
        "train_throughput-limit-tune0" in text
