"""The comparison table of train.py, written into RESULTS.md.

    python -m bench.comparison --models=twin,pplug,rag,none,prompt_tuning,mean,profile_rule,input_rule --seeds=3
    python -m bench.comparison --tasks=LaMP-7 --models=twin,prompt_tuning,none,input_rule,profile_rule \
        --seeds=3 --word_prompts=4 --prompt_position=after_input --max_eval_examples=300 \
        --run_name=comparison-LaMP-7-after-input

Any train.py setting works (`--config FILE`, `--key=value`); it runs exactly what
`python train.py --models=...` runs (trainers/compare.py), in saved/<run_name>/ (default
`comparison-<tasks>`, so a stopped comparison continues where it left off), and writes
its comparison.md as the RESULTS.md section of that run name, so a variant run under
another `--run_name` gets a section of its own:

    python -m bench.comparison --models=pplug --pplug_augment=10 --run_name=comparison-LaMP-1-pplug-augment-10
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from bench.common import add_results_option, default_config, write_results_section
from trainers.compare import compare


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_results_option(parser)
    args, settings = parser.parse_known_args(argv)
    cfg = default_config(settings)
    if not cfg.models:
        parser.error("name the methods to compare: --models=twin,pplug,...")
    tasks = "-".join(cfg.tasks)
    if not cfg.run_name:
        cfg = dataclasses.replace(cfg, run_name=f"comparison-{tasks}")
    table = compare(cfg)
    report = (Path(cfg.out_dir) / cfg.run_name / "comparison.md").read_text()  # names the same run as a train.py command
    write_results_section(cfg.run_name, f"Comparison on {', '.join(cfg.tasks)} ({cfg.data_dir} data), {cfg.run_name}",
                          report, path=args.results)
    return table


if __name__ == "__main__":
    main()
