"""Two processes on CPU (gloo) through the accelerate path GPU runs take, and DeepSpeed start-up checks.

The 2-process run is `ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 train.py ...` with
probes.py watching each rank (weights, data seen, gathered ids, files written).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from trainers import config as config_lib
from trainers.distributed import emulated_bf16_warning
import train
from dataset.lamp import load_split
from tiny_models import CHILD_ENV, CHILD_TIMEOUT, ROOT, free_port, script_args

TRAIN_EXAMPLES, DEV_EXAMPLES = 16, 7  # 7 does not divide into 2 ranks x eval batch 2: the last batch is padded


def test_bfloat16_on_a_cpu_without_a_bf16_matrix_unit_is_warned_about_by_setting():
    cpuinfo = "processor\t: 0\nflags\t\t: fpu sse2 avx2{}\n"
    plain = cpuinfo.format("")
    cpu = lambda precision, kind="NO": {"type": kind, "device": "cpu", "mixed_precision": precision}  # noqa: E731
    warning = emulated_bf16_warning("bfloat16", cpu("bf16"), plain)
    assert "llm_dtype=bfloat16 and mixed precision bf16" in warning
    assert warning.endswith("pass --llm_dtype=float32 --mixed_precision=no")
    assert emulated_bf16_warning("bfloat16", cpu("no"), plain).endswith("pass --llm_dtype=float32")
    # DeepSpeed's autocast, as describe() reads it from the DeepSpeed config.
    assert emulated_bf16_warning("float32", cpu("bf16 autocast", "DEEPSPEED"), plain).endswith(
        "pass a DeepSpeed config without bf16")
    assert emulated_bf16_warning("bfloat16", cpu("bf16"), cpuinfo.format(" amx_bf16")) is None
    assert emulated_bf16_warning("float32", cpu("no"), plain) is None
    assert emulated_bf16_warning("bfloat16", {**cpu("bf16"), "device": "cuda"}, plain) is None
    assert emulated_bf16_warning("bfloat16", cpu("bf16"), "") is None  # no /proc/cpuinfo: nothing known


def run_child(args: list, log: Path, env: dict) -> None:
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=CHILD_TIMEOUT).returncode
    assert code == 0, log.read_text()[-5000:]


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory, tiny_model_dirs, lamp_dir):
    """Train and evaluate on 2 ranks, then evaluate the final checkpoint in 1 process."""
    tmp = tmp_path_factory.mktemp("ddp")
    probe = tmp / "probe"
    probe.mkdir()
    # out_dir is a folder of its own: the probe records every write under it, and the cache lives elsewhere.
    common = script_args(tmp, tiny_model_dirs, lamp_dir, f"--out_dir={tmp / 'runs'}", "--batch_size=2",
                         "--eval_batch_size=2",
                         f"--max_train_examples={TRAIN_EXAMPLES}", f"--max_eval_examples={DEV_EXAMPLES}",
                         "--save_every=2", "--controls=false", "--log_with=tensorboard")
    torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", free_port()]
    run_child([*torchrun, ROOT / "tests" / "probes.py", "rank-probe", probe, "--", *common, "--run_name=ddp"],
              tmp / "ddp.log", {**CHILD_ENV, "ACCELERATE_USE_CPU": "true"})
    run_child(["train.py", *common, "--run_name=single", "--mode=eval_only", f"--resume_from={tmp / 'runs' / 'ddp'}"],
              tmp / "single.log", CHILD_ENV)
    ranks = [json.loads((probe / f"rank{r}.json").read_text()) for r in (0, 1)]
    return tmp / "runs", probe, ranks


def test_accelerate_runs_two_cpu_processes_with_gloo(two_rank_run):
    _, probe, ranks = two_rank_run
    for r in (0, 1):
        assert ranks[r]["exit"] == 0
        assert json.loads((probe / f"rank{r}-accelerate.json").read_text()) == {
            "distributed_type": "DistributedType.MULTI_CPU", "num_processes": 2, "backend": "gloo"}


def test_ranks_see_disjoint_data_yet_end_with_identical_weights(two_rank_run, lamp_dir):
    _, probe, ranks = two_rank_run
    train_ids = [e.id for e in load_split(lamp_dir, "LaMP-1", "train")[:TRAIN_EXAMPLES]]
    seen = [ranks[r]["train_ids"] for r in (0, 1)]
    # Each rank trained on its own half: identical weights can only come from synchronized gradients.
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(train_ids)
    before = load_file(str(probe / "rank0-before.safetensors"))
    after = [load_file(str(probe / f"rank{r}-after.safetensors")) for r in (0, 1)]
    assert after[0].keys() == after[1].keys() == before.keys()
    assert all(torch.equal(after[0][k], after[1][k]) for k in before)
    assert not all(torch.equal(after[0][k], before[k]) for k in before), "no optimizer step changed the weights"


def test_only_rank_0_writes_checkpoints_and_results(two_rank_run):
    out, _, ranks = two_rank_run
    assert ranks[1]["writes"] == []
    written = {str(Path(p).resolve().relative_to(out.resolve())) for p in ranks[0]["writes"]}
    assert {"ddp/metrics.json", "ddp/predictions/LaMP-1_dev.json", "ddp/checkpoints/latest"} <= written  # seen
    # The tracker's files too: TensorBoard events and the learning curve, from rank 0 alone.
    assert {"ddp/learning_curve.png", "ddp/learning_curve.json"} <= written
    assert any(p.startswith("ddp/tensorboard/") and "tfevents" in p for p in written)
    assert {p.name for p in (out / "ddp" / "checkpoints").iterdir()} == {"latest", "step-00000002", "step-00000004"}


def test_two_rank_evaluation_equals_one_process_evaluation(two_rank_run, lamp_dir):
    out, _, ranks = two_rank_run
    dev_ids = [e.id for e in load_split(lamp_dir, "LaMP-1", "dev")[:DEV_EXAMPLES]]
    for r in (0, 1):  # every evaluation gathered each example exactly once, on both ranks
        assert ranks[r]["gathered"] and all(sorted(ids) == sorted(dev_ids) for ids in ranks[r]["gathered"])
    two = json.loads((out / "ddp" / "predictions" / "LaMP-1_dev.json").read_text())
    one = json.loads((out / "single" / "predictions" / "LaMP-1_dev.json").read_text())
    assert sorted(g["id"] for g in two["golds"]) == sorted(dev_ids)
    assert sorted(two["golds"], key=lambda g: g["id"]) == sorted(one["golds"], key=lambda g: g["id"])
    assert json.loads((out / "ddp" / "metrics.json").read_text()) == \
        json.loads((out / "single" / "metrics.json").read_text())


# --- DeepSpeed settings, checked before anything loads ---------------------------------------------------

DEEPSPEED = {"ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": "8"}


def accelerate_env(accelerate_yaml: Path) -> dict[str, str]:
    """The DeepSpeed variables `accelerate launch --config_file accelerate_yaml` gives each process."""
    launch = yaml.safe_load(accelerate_yaml.read_text())
    settings = launch["deepspeed_config"]
    env = {config_lib.DEEPSPEED_ENV[k]: str(v).lower() for k, v in settings.items() if k in config_lib.DEEPSPEED_ENV}
    return {**env, "ACCELERATE_USE_DEEPSPEED": "true", "WORLD_SIZE": str(launch["num_processes"])}


@pytest.mark.parametrize("accelerate_yaml", ["ds_config.yaml", "ds_zero3_offload.yaml"])
def test_shipped_deepspeed_configs_fit_the_shipped_experiments(accelerate_yaml, monkeypatch):
    env = accelerate_env(ROOT / "config" / accelerate_yaml)
    # The variable names are the ones accelerate itself reads:
    from accelerate.utils import DeepSpeedPlugin
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    plugin = DeepSpeedPlugin()
    launch = yaml.safe_load((ROOT / "config" / accelerate_yaml).read_text())["deepspeed_config"]
    assert (plugin.zero_stage, plugin.offload_optimizer_device, plugin.offload_param_device,
            plugin.gradient_accumulation_steps, plugin.gradient_clipping) == \
        (launch["zero_stage"], launch["offload_optimizer_device"], launch["offload_param_device"],
         launch["gradient_accumulation_steps"], launch["gradient_clipping"])
    experiments = sorted((ROOT / "config" / "lamp").glob("*.yaml"))
    assert len(experiments) == 6
    for experiment in experiments:
        cfg = config_lib.TrainConfig(**yaml.safe_load(experiment.read_text()))
        assert config_lib.launch_problems(cfg, env) == []


def ds_json(tmp_path: Path, **settings) -> dict[str, str]:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(settings))
    return {**DEEPSPEED, "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(path)}


BAD_DEEPSPEED = {
    "offload_param below ZeRO-3": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
                     "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "cpu"},
        "offload_param_device=cpu needs zero_stage 3"),
    "offload_optimizer without ZeRO": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "0",
                     "ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE": "cpu"},
        "offload_optimizer_device=cpu needs zero_stage 1, 2 or 3"),
    "ZeRO stage that does not exist": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "4"}, "zero_stage 4 does not exist"),
    "offload device that does not exist": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3",
                     "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "gpu"},
        "offload_param_device 'gpu' must be one of none, cpu, nvme"),
    "accumulation that differs from grad_accum": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "4"},
        "gradient_accumulation_steps is 4 but grad_accum is 1"),
    "clipping that differs from max_grad_norm": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_GRADIENT_CLIPPING": "0.5"},
        "gradient_clipping is 0.5 but max_grad_norm is 1"),
    "train_batch_size that is not the product": (
        lambda tmp: ds_json(tmp, train_batch_size=64, train_micro_batch_size_per_gpu=4,
                            gradient_accumulation_steps=1, zero_optimization={"stage": 2}),
        "train_batch_size is 64 but batch_size 4 x grad_accum 1 x 8 processes = 32"),
    "micro-batch that differs from batch_size": (
        lambda tmp: ds_json(tmp, train_micro_batch_size_per_gpu=2, zero_optimization={"stage": 2}),
        "train_micro_batch_size_per_gpu is 2 but batch_size is 4"),
    "DeepSpeed JSON file that cannot be read": (
        lambda tmp: {**DEEPSPEED, "ACCELERATE_DEEPSPEED_CONFIG_FILE": str(tmp / "missing.json")},
        "cannot read"),
}


@pytest.mark.parametrize("case", BAD_DEEPSPEED)
def test_bad_deepspeed_settings_are_named(case, tmp_path):
    make_env, fragment = BAD_DEEPSPEED[case]
    problems = config_lib.launch_problems(config_lib.TrainConfig(batch_size=4), make_env(tmp_path))
    assert len(problems) == 1 and fragment in problems[0], problems


def test_word_prompts_are_refused_under_zero3_only():
    word_prompts = config_lib.TrainConfig(batch_size=4, word_prompts=4)
    zero3 = config_lib.launch_problems(word_prompts, {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"})
    assert len(zero3) == 1 and "word_prompts=4 reads the LLM's whole embedding table" in zero3[0]
    assert config_lib.launch_problems(word_prompts, {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}) == []


def test_consistent_deepspeed_json_with_auto_values_passes(tmp_path):
    env = ds_json(tmp_path, train_batch_size="auto", train_micro_batch_size_per_gpu=4, gradient_accumulation_steps=2,
                  gradient_clipping=1.0, zero_optimization={"stage": 3, "offload_param": {"device": "cpu"}})
    assert config_lib.launch_problems(config_lib.TrainConfig(batch_size=4, grad_accum=2), env) == []
    assert config_lib.launch_problems(config_lib.TrainConfig(), {}) == []  # DeepSpeed off: nothing to check


def test_train_py_reports_every_deepspeed_problem_before_loading_anything(tmp_path, tiny_model_dirs, lamp_dir,
                                                                          monkeypatch, capsys):
    for name, value in {**DEEPSPEED, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2",
                        "ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE": "cpu",
                        "ACCELERATE_GRADIENT_ACCUMULATION_STEPS": "1"}.items():
        monkeypatch.setenv(name, value)
    # A missing model would be the first thing to fail if anything loaded before the check.
    assert train.main(script_args(tmp_path, tiny_model_dirs, lamp_dir, "--grad_accum=4",
                                  f"--llm={tmp_path / 'no-such-model'}")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration")
    assert "needs zero_stage 3" in err and "gradient_accumulation_steps is 1 but grad_accum is 4" in err
    assert not any(tmp_path.glob("*/config.json")), "no run folder may be started"
