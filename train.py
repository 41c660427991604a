"""Train and evaluate Behavioral Twin.

    python train.py                                     # the embedded offline default
    python train.py --config config/lamp/LaMP-1.yaml --lr=3e-4
    accelerate launch --config_file config/ds_config.yaml train.py --config config/lamp/LaMP-1.yaml
    python train.py --mode=eval_only --resume_from=saved/<run>
    python train.py --models=twin,pplug,rag,none,profile_rule,input_rule --seeds=3  # comparison table
    python train.py --help                              # every setting with its meaning

Every run writes saved/<run>/: config.json, distributed.json (processes, DeepSpeed ZeRO stage,
precision), metrics.json, controls.json, references.json (the untrained rules on the same data),
metrics_history.json, predictions/<task>_<split>.json (LaMP's official format), results.md and
checkpoints/.
"""

import sys

# -----------------------------------------------------------------------------
# Defaults. Edit them here, or override: --config FILE.yaml, then --key=value.
# Every other setting (and its meaning) is in trainers/config.py's TrainConfig.
mode = "sequential"      # sequential | joint | eval_only
resume_from = ""         # saved/<run> or saved/<run>/checkpoints/step-N
tasks = ["LaMP-1"]
data_dir = "embedded"    # a folder in LaMP's layout, or the generated offline task
encoder = "minilm"       # BAAI/bge-base-en-v1.5 on a cluster
llm = "smollm2-135m"     # google/flan-t5-xxl or Qwen/... on a cluster
llm_dtype = "bfloat16"   # frozen LLM weights; use "float32" on a CPU without native bf16 (emulated, slow)
model = "twin"           # twin | pplug | none | rag | prompt_tuning | mean | profile_rule | input_rule
models = []              # several, e.g. ["twin", "pplug", "rag"]: one comparison table
answer = "choices"       # classification: the label the LLM scores highest; "generate" decodes (LaMP's protocol)
lr = 3e-4
warmup_ratio = 0.05
num_queries = 8
label_loss = 1.0         # weight of the Q-Former's label-prediction loss (classification tasks; 0 = off)
batch_size = 8           # 4 for Flan-T5-XXL
epochs = 2
# -----------------------------------------------------------------------------


def header_defaults() -> dict:
    """The settings of the block above, by TrainConfig field name: what `python train.py` runs."""
    from trainers import config as config_lib
    return {k: v for k, v in globals().items() if k in config_lib.FIELDS}


def main(argv: list[str]) -> int:
    from trainers import config as config_lib
    from trainers.preflight import preflight

    if "--help" in argv or "-h" in argv:
        print(__doc__)
        defaults = config_lib.TrainConfig(**header_defaults())  # what `python train.py` runs
        for name, doc in config_lib.field_docs().items():
            print(f"  --{name}={getattr(defaults, name)!r}\n      {doc}")
        return 0
    try:
        config_file, overrides = config_lib.parse_overrides(argv)
        cfg = config_lib.resolve_config(header_defaults(), config_file, overrides)
        preflight(cfg)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from trainers.compare import compare
    from trainers.run import run, USER_ERRORS
    try:
        compare(cfg) if cfg.models else run(cfg)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
