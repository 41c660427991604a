"""How a run is distributed, whether its CPU runs bfloat16 natively, and the training state
a DeepSpeed engine keeps sharded.

Without DeepSpeed every rank holds the full trainable weights and AdamW state, so a
checkpoint reads them from any rank. Under ZeRO they live in the engine: ZeRO-2 keeps the
fp32 master weights and the AdamW moments as one flat partition per rank and parameter
group, ZeRO-3 partitions the parameters themselves too (and may offload all of it to the
CPU). The functions here gather them, per parameter and in full, into the same layout a
plain torch AdamW has, and scatter them back, through DeepSpeed's own accessors
(`deepspeed.utils.safe_*`, ZeRO 1-3 alike). So a checkpoint is the same files whatever
wrote it, and either engine resumes the other's.

Gathering and scattering are collective: every rank calls them, in the same order.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin, InitProcessGroupKwargs

ADAM_MOMENTS = ("exp_avg", "exp_avg_sq")
BF16_MATRIX_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags, the faster first


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text; "" where there is none (not Linux)."""
    path = Path("/proc/cpuinfo")
    return path.read_text() if path.exists() else ""


def bf16_matrix_unit(cpuinfo: str) -> str | None:
    """The first of BF16_MATRIX_FLAGS that /proc/cpuinfo's text lists, or None. It sets how
    fast a bfloat16 LLM runs on the CPU beside the float32 modules; a virtual machine's CPU
    name ("Intel(R) Xeon(R) Processor") does not tell."""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return next((flag for flag in BF16_MATRIX_FLAGS if flag in flags), None)


def emulated_bf16_warning(llm_dtype: str, setup: dict, cpuinfo: str) -> str | None:
    """A warning when bfloat16 would run on a Linux CPU without a bf16 matrix unit: PyTorch
    then emulates it, and the step takes many times as long as in float32. `setup` is
    describe()'s, whose mixed_precision is DeepSpeed's own under DeepSpeed."""
    fixes = {}  # the setting that asks for bfloat16 -> the one to pass instead
    if llm_dtype == "bfloat16":
        fixes["llm_dtype=bfloat16"] = "--llm_dtype=float32"
    if setup["mixed_precision"].startswith("bf16"):
        deepspeed = setup["type"] == DistributedType.DEEPSPEED.value  # its precision is in its config file
        fixes[f"mixed precision {setup['mixed_precision']}"] = ("a DeepSpeed config without bf16" if deepspeed
                                                                 else "--mixed_precision=no")
    if setup["device"] != "cpu" or not fixes or not cpuinfo or bf16_matrix_unit(cpuinfo):
        return None
    return (f"warning: {' and '.join(fixes)} on a CPU whose flags list none of {', '.join(BF16_MATRIX_FLAGS)}: "
            f"bfloat16 runs emulated there, many times slower than float32; pass {' '.join(fixes.values())}")


def make_accelerator(mixed_precision: str, grad_accum: int = 1) -> Accelerator:
    """The run's Accelerator; mixed_precision '' takes the launcher's. Under DeepSpeed an
    'auto' gradient_accumulation_steps becomes `grad_accum` (the engine accumulates).

    DeepSpeed on a machine without GPUs runs on its CPU accelerator (gloo). accelerate then
    finds no process-group backend of its own and counts one process per rank, while the
    engine counts them all; naming DeepSpeed's backend makes both count the same.
    """
    handlers, deepspeed = [], os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true"
    if deepspeed and not torch.cuda.is_available():
        from deepspeed.accelerator import get_accelerator
        if get_accelerator().device_name() == "cpu":
            handlers.append(InitProcessGroupKwargs(backend=get_accelerator().communication_backend_name()))
    # Without DeepSpeed the trainer accumulates itself; accelerate's own count stays 1. (A
    # plugin, not the count: accelerate would parse the launcher's 'auto' as an int.)
    accelerator = Accelerator(mixed_precision=mixed_precision or None, kwargs_handlers=handlers,
                              gradient_accumulation_plugin=GradientAccumulationPlugin(
                                  num_steps=grad_accum if deepspeed else 1))
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        ds = accelerator.state.deepspeed_plugin.deepspeed_config
        if ds.get("gradient_accumulation_steps") == "auto":
            ds["gradient_accumulation_steps"] = grad_accum
        if _enabled(ds.get("bf16")):
            # DeepSpeed's bf16 casts the whole model to bf16, but its frozen parts keep their own
            # dtypes (the LLM in llm_dtype, the history store's fp32 rows) and the trainable ones
            # train in fp32: bf16 runs as autocast, as it does without DeepSpeed.
            ds["bf16"] = {"enabled": False}
            ds["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return accelerator


@contextlib.contextmanager
def whole_model_loading(accelerator):
    """Models built inside load whole, for the engine to partition when it is built.

    accelerate registers a ZeRO-3 config with transformers, which then partitions each model
    as from_pretrained loads it (deepspeed.zero.Init) even with zero3_init_flag false; the
    model's constructors read their weights (shapes, the embedding table's scale), so they
    need them whole. Registered again afterwards: generate() reads it to keep ZeRO-3 ranks
    in step (synced_gpus).
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None or not plugin.hf_ds_config.is_zero3():
        yield
        return
    from transformers.integrations.deepspeed import set_hf_deepspeed_config, unset_hf_deepspeed_config
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(plugin.hf_ds_config)


def _enabled(section) -> bool:
    return isinstance(section, dict) and str(section.get("enabled", False)).lower() == "true"


def describe(accelerator) -> dict:
    """The run's distribution, e.g. {"type": "DEEPSPEED", "processes": 2, "zero_stage": 2, ...}."""
    state = accelerator.state
    info = {"type": state.distributed_type.value, "processes": state.num_processes,
            "backend": state.backend or "none", "device": accelerator.device.type,
            "mixed_precision": state.mixed_precision}
    if state.distributed_type == DistributedType.DEEPSPEED:
        ds = state.deepspeed_plugin.deepspeed_config
        zero = ds.get("zero_optimization", {})
        # accelerate keeps mixed precision in the DeepSpeed config (its own state says "no").
        precision = next((name for name in ("bf16", "fp16") if _enabled(ds.get(name))), "no")
        if _enabled(ds.get("torch_autocast")):
            precision = {"bfloat16": "bf16", "float16": "fp16"}.get(ds["torch_autocast"]["dtype"], "") + " autocast"
        info.update(mixed_precision=precision, zero_stage=int(zero.get("stage", 0)),
                    offload_optimizer=zero.get("offload_optimizer", {}).get("device", "none"),
                    offload_param=zero.get("offload_param", {}).get("device", "none"),
                    gradient_accumulation_steps=ds.get("gradient_accumulation_steps"),
                    gradient_clipping=ds.get("gradient_clipping"))
    return info


def summary(info: dict) -> str:
    """One line: 'distributed: DEEPSPEED, 2 processes, ZeRO stage 2, bf16 (backend gloo, device cpu)'."""
    parts = [info["type"], f"{info['processes']} process{'es' if info['processes'] != 1 else ''}"]
    if "zero_stage" in info:
        parts.append(f"ZeRO stage {info['zero_stage']}")
        offload = [f"{what} offload to {info[key]}" for what, key in
                   (("optimizer", "offload_optimizer"), ("parameter", "offload_param")) if info[key] != "none"]
        parts += offload
    parts.append("fp32" if info["mixed_precision"] == "no" else info["mixed_precision"])
    return f"distributed: {', '.join(parts)} (backend {info['backend']}, device {info['device']})"


def gather_persistent(engine) -> None:
    """ZeRO-3 keeps the parameters below its persistence threshold whole on every rank, and
    gathers them after each optimizer step; gather them as well when the engine is built or
    its weights are set. The model reads some of them outside their module's forward (the
    Q-Former's query count), and a resumed run must start from what the step left."""
    persistent = getattr(engine.optimizer, "persistent_parameters", None)
    if persistent:
        persistent[0].all_gather(persistent)


def _numel(p: torch.nn.Parameter) -> int:
    return getattr(p, "ds_numel", p.numel())  # ZeRO-3 leaves an empty placeholder in the module


def engine_summary(engine, model: torch.nn.Module) -> str:
    """What the engine optimizes, read from ZeRO's own parameter groups: the trainable tensors
    only, the frozen LLM and encoders outside its optimizer state."""
    zero = engine.optimizer
    groups = zero.fp16_groups if hasattr(zero, "fp16_groups") else zero.bit16_groups
    optimized = [p for group in groups for p in group]
    frozen_inside = sum(not p.requires_grad for p in optimized)
    frozen = sum(_numel(p) for p in model.parameters() if not p.requires_grad)
    return (f"DeepSpeed engine: {type(engine).__name__}, {type(zero).__name__} over {type(zero.optimizer).__name__}, "
            f"ZeRO stage {engine.zero_optimization_stage()}; its optimizer holds {len(optimized)} tensors "
            f"({sum(map(_numel, optimized)):,} parameters, {frozen_inside} of them frozen); "
            f"{frozen:,} frozen parameters are outside it")


def _base_optimizer(engine) -> torch.optim.Optimizer:
    """The optimizer that steps ZeRO's flat fp32 partitions (torch AdamW, or DeepSpeedCPUAdam when offloaded)."""
    return engine.optimizer.optimizer


def _flat_partitions(engine) -> list[torch.Tensor]:
    """This rank's flat fp32 partitions, the tensors the base optimizer keeps its state for."""
    zero = engine.optimizer
    if hasattr(zero, "fp32_partitioned_groups_flat"):  # ZeRO-3: one per sub-group
        return list(zero.fp32_partitioned_groups_flat)
    return list(zero.single_partition_of_fp32_groups)  # ZeRO-1/2: one per parameter group


def _steps(engine) -> float:
    """AdamW's step count; every flat partition steps together."""
    for state in _base_optimizer(engine).state.values():
        if "step" in state:
            return float(state["step"])
    return 0.0


def full_weights(named_params: dict[str, torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """name -> the full fp32 master weight (what the optimizer steps), on the CPU."""
    from deepspeed.utils import safe_get_full_fp32_param
    return {name: safe_get_full_fp32_param(p).detach().float().cpu().contiguous() for name, p in named_params.items()}


def full_optimizer_state(engine, params: list[torch.nn.Parameter], groups: list[dict]) -> dict:
    """The AdamW state as torch's Optimizer.state_dict() would give it for an AdamW over
    `params` (their order is the index) with param groups `groups` (hyperparameters
    and the parameter indices). Empty before the first step."""
    from deepspeed.utils import safe_get_full_optimizer_state
    live = _base_optimizer(engine).param_groups
    param_groups = [{**group, "lr": live_group["lr"], "initial_lr": live_group.get("initial_lr", group["lr"])}
                    for group, live_group in zip(groups, live)]
    if not _base_optimizer(engine).state:
        return {"state": {}, "param_groups": param_groups}
    _link_moments(engine)
    step = torch.tensor(_steps(engine))
    state = {i: {"step": step.clone(), **{key: safe_get_full_optimizer_state(p, key).detach().float().cpu()
                                          for key in ADAM_MOMENTS}}
             for i, p in enumerate(params)}
    return {"state": state, "param_groups": param_groups}


def load_full_weights(named_params: dict[str, torch.nn.Parameter], weights: dict[str, torch.Tensor]) -> None:
    """Set the fp32 master weights. The module's own (maybe bf16) copies must already hold
    the same values, rounded: load them before the engine is built."""
    from deepspeed.utils import safe_set_full_fp32_param
    for name, p in named_params.items():
        safe_set_full_fp32_param(p, weights[name].float())


def load_optimizer_state(engine, params: list[torch.nn.Parameter], saved: dict) -> None:
    """Restore an AdamW state in torch's state_dict layout (see full_optimizer_state); an
    empty one restarts AdamW, as a new optimizer would (sequential mode's next phase)."""
    from deepspeed.utils import safe_set_full_optimizer_state
    base, zero = _base_optimizer(engine), engine.optimizer
    base.state.clear()  # AdamW builds zeroed moments at its next step
    if hasattr(zero, "_hp_optimizer_states_linked"):  # ZeRO-1/2: link the new ones after that step
        zero._hp_optimizer_states_linked = False
    for group, saved_group in zip(base.param_groups, saved.get("param_groups", [])):
        group["lr"], group["initial_lr"] = saved_group["lr"], saved_group.get("initial_lr", saved_group["lr"])
    if not saved.get("state"):
        return
    step = max(float(s["step"]) for s in saved["state"].values())
    for flat in _flat_partitions(engine):
        base.state[flat] = {"step": _step_like(base, step),
                            **{key: torch.zeros_like(flat, memory_format=torch.preserve_format) for key in ADAM_MOMENTS}}
    _link_moments(engine)
    for i, p in enumerate(params):
        if i not in saved["state"]:
            continue
        for key in ADAM_MOMENTS:
            value = saved["state"][i][key]
            if value.numel() != getattr(p, "ds_numel", p.numel()):
                raise ValueError(f"state.{i}.{key} has shape {tuple(value.shape)}, the parameter "
                                 f"{tuple(getattr(p, 'ds_shape', p.shape))}")
            safe_set_full_optimizer_state(p, value.float(), key)


def _link_moments(engine) -> None:
    """Point every parameter at its slice of the AdamW moments, which safe_*_optimizer_state read.
    ZeRO-1/2 does it once, after the first parameter group's first step, so the parameters of
    later groups (ours: those without weight decay) stay unlinked (DeepSpeed 0.19.8); ZeRO-3
    reads the moments directly."""
    zero = engine.optimizer
    if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):
        zero._hp_optimizer_states_linked = False
        zero._lazy_init_hp_params_optimizer_state()


def _step_like(base: torch.optim.Optimizer, step: float):
    """The step counter in the type the base optimizer keeps it: torch's AdamW a float32
    tensor, DeepSpeedCPUAdam an int."""
    return torch.tensor(step, dtype=torch.float32) if isinstance(base, torch.optim.AdamW) else int(step)
