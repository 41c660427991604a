"""Config layering (defaults <- YAML <- --key=value) and validation that reports everything."""

import dataclasses
import json

import pytest

from trainers import config as config_lib
from trainers.preflight import preflight
import train


def test_layers_override_in_order(tmp_path):
    yaml_file = tmp_path / "exp.yaml"
    yaml_file.write_text("lr: 3.0e-4\nnum_queries: 16\ntasks: [LaMP-1, LaMP-3]\n")
    cfg = config_lib.resolve_config({"lr": 1e-4, "batch_size": 2}, str(yaml_file), {"num_queries": "4"})
    assert (cfg.lr, cfg.batch_size, cfg.num_queries, cfg.tasks) == (3e-4, 2, 4, ["LaMP-1", "LaMP-3"])


def test_command_line_parsing_and_types():
    config_file, overrides = config_lib.parse_overrides(["--config", "x.yaml", "--tasks=LaMP-1,LaMP-2",
                                                         "--controls=false", "--max-history=5"])
    assert config_file == "x.yaml"
    cfg = config_lib.resolve_config(None, None, overrides)
    assert cfg.tasks == ["LaMP-1", "LaMP-2"] and cfg.controls is False and cfg.max_history == 5
    with pytest.raises(config_lib.ConfigError, match="expected --key=value"):
        config_lib.parse_overrides(["lr=3"])


def test_every_problem_is_reported_at_once():
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.resolve_config(None, None, {"lr": "fast", "num_queries": "0", "mode": "train", "bogus": "1",
                                               "warmup_ratio": "2", "controls": "maybe", "llm_attention": "flash",
                                               "input_dropout": "1"})
    message = str(info.value)
    for fragment in ("lr", "num_queries", "mode", "'bogus'", "warmup_ratio", "controls", "llm_attention",
                     "input_dropout: must be -1"):
        assert fragment in message, fragment


def test_eval_only_needs_a_checkpoint_and_paths_must_exist(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="resume_from"):
        config_lib.resolve_config(None, None, {"mode": "eval_only"})
    # Settings validate themselves; what needs the disk is the pre-flight step's.
    cfg = config_lib.resolve_config(None, None, {"data_dir": str(tmp_path / "nowhere"),
                                                 "resume_from": str(tmp_path / "no-run")})
    with pytest.raises(config_lib.ConfigError) as info:
        preflight(cfg)
    assert "data_dir" in str(info.value) and "resume_from" in str(info.value)


def test_a_resumed_run_keeps_its_own_settings_unless_told_otherwise(tmp_path):
    run = tmp_path / "saved" / "lamp7"
    run.mkdir(parents=True)
    saved = config_lib.TrainConfig(tasks=["LaMP-7"], lr=1e-4, word_prompts=4, run_name="lamp7", seeds=1,
                                   out_dir=str(tmp_path / "saved"), cache_dir=str(tmp_path / "old-cache"))
    (run / "config.json").write_text(config_lib.to_json(saved))
    header = {"tasks": ["LaMP-1"], "lr": 3e-4, "epochs": 2}  # what train.py's block says now
    cfg = config_lib.resolve_config(header, None, {"mode": "eval_only", "resume_from": str(run), "lr": "2e-4"})
    # The run's task and method settings, not train.py's; the command line still wins.
    assert (cfg.tasks, cfg.word_prompts, cfg.lr, cfg.mode) == (["LaMP-7"], 4, 2e-4, "eval_only")
    # Where this invocation writes is its own: a new run folder, the default caches.
    assert (cfg.run_name, cfg.out_dir, cfg.cache_dir) == ("", "saved", "")
    # A folder without a readable config.json adds nothing (loading the checkpoint says why).
    assert config_lib.resolve_config(header, None, {"resume_from": str(tmp_path / "nothing")}).tasks == ["LaMP-1"]


def test_bad_yaml_files_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("lr: [1,\n")
    with pytest.raises(config_lib.ConfigError, match="broken.yaml"):
        config_lib.resolve_config(None, str(broken), None)
    with pytest.raises(config_lib.ConfigError, match="does not exist"):
        config_lib.resolve_config(None, str(tmp_path / "missing.yaml"), None)


def test_every_field_is_documented_and_json_round_trips():
    docs = config_lib.field_docs()
    assert set(docs) == set(config_lib.FIELDS) and all(docs.values())
    cfg = config_lib.TrainConfig(num_queries=3)
    assert config_lib.from_json(config_lib.to_json(cfg), "x") == cfg
    with pytest.raises(config_lib.ConfigError, match="unknown settings"):
        config_lib.from_json(json.dumps({**dataclasses.asdict(cfg), "old_field": 1}), "x")


def test_train_py_top_block_feeds_the_config_and_bad_flags_exit_2(capsys):
    assert train.main(["--num_queries=0", "--mode=nope"]) == 2
    err = capsys.readouterr().err
    assert "num_queries" in err and "mode" in err
    assert train.main(["--help"]) == 0
    out = capsys.readouterr().out
    # --help shows what `python train.py` runs: train.py's own block over the dataclass defaults.
    assert "--warmup_ratio=0.05" in out and f"--llm_dtype={train.llm_dtype!r}" in out
    assert train.llm_dtype != config_lib.TrainConfig().llm_dtype


def test_train_py_names_only_configs_that_exist():
    import re
    from pathlib import Path
    root = Path(train.__file__).resolve().parent
    named = re.findall(r"config/\S+\.yaml", train.__doc__)
    assert named and all((root / name).is_file() for name in named), named


def test_choice_settings_and_the_model_share_one_list_of_values():
    from model import FrozenLLM, QFormer
    message = "qformer_init: 'rand' is not one of 'aligned', 'random'"
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.resolve_config(None, None, {"qformer_init": "rand"})
    with pytest.raises(ValueError, match=message):
        QFormer(32, heads=4, init="rand")
    with pytest.raises(ValueError, match="prompt_position: 'middle' is not one of 'before_input', 'after_input'"):
        FrozenLLM(None, None, "decoder", "", prompt_position="middle")
    assert {"mode", "pooling", "llm_dtype", "prompt_position", "qformer_init"} <= set(config_lib.CHOICE_FIELDS)
    assert config_lib.choices(config_lib.CHOICE_FIELDS["pooling"]) == ("", "cls", "mean")
