"""What the `rag` baseline's LLM reads, question by question, for auditing prompts.

    python -m dataset.retrieval --data_dir=DIR --tasks=LaMP-2 --split=dev --out FILE [--key=value ...]

writes `{"<task>": {"<question id>": "<text>"}}`: each question rewritten with its user's top
`rag_k` profile items exactly as `python train.py --model=rag` gives it to the LLM (cut to
`max_input_tokens` as LaMP cuts it; the LLM's own frame, a chat template or T5's `</s>`, goes
around it). Any train.py setting applies (`--rag_k`, `--max_input_tokens`, `--retriever`,
`--llm`, `--max_eval_examples` for the first N questions, `--config FILE`); `--data_dir=embedded`
reads the generated tasks. Only the LLM's tokenizer is loaded, not its weights.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from transformers import AutoTokenizer

from bench.common import default_config
from dataset.atomic import atomic_write_text
from dataset.lamp import LaMPFormatError
from trainers import model_registry
from trainers.builder import load_datasets, retrieval_augmented
from trainers.config import ConfigError


def rag_inputs(cfg, split: str) -> dict[str, dict[str, str]]:
    """task -> question id -> the rag baseline's LLM input text, for `split` of cfg.tasks."""
    cfg = dataclasses.replace(cfg, model="rag", models=[])
    path = model_registry.resolve_model_path(cfg.llm, cfg.resolved_cache_dir())
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=cfg.trust_remote_code, local_files_only=True)
    rewritten = retrieval_augmented(cfg, load_datasets(cfg, split, cfg.max_eval_examples), tokenizer)
    return {dataset.task.name: {example.id: example.input for example in dataset.examples}
            for dataset, _ in rewritten.values()}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m dataset.retrieval", description=__doc__.splitlines()[0],
                                     epilog="Other arguments are train.py settings (--key=value, --config FILE).")
    parser.add_argument("--split", default="", help="the split to read (default: the eval_split setting)")
    parser.add_argument("--out", required=True, help="the JSON file to write")
    args, settings = parser.parse_known_args(argv)
    try:
        cfg = default_config(settings)
        inputs = rag_inputs(cfg, args.split or cfg.eval_split)
    except (ConfigError, LaMPFormatError, model_registry.ModelNotFoundError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    atomic_write_text(args.out, json.dumps(inputs, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {sum(map(len, inputs.values()))} prompts ({', '.join(inputs)}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
