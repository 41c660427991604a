"""What every benchmark script shares: the embedded default's settings, the machine it ran
on, a GPU-aware clock, the --threads option, writing its JSON report and its section of
RESULTS.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import torch

from dataset.atomic import atomic_write_text
from trainers import config as config_lib
from trainers.distributed import bf16_matrix_unit, read_cpuinfo

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def default_config(settings: list[str]) -> config_lib.TrainConfig:
    """What `python train.py` runs given the same `--config FILE` and `--key=value` settings:
    train.py's defaults (with none given, the embedded default), the file, then the settings."""
    import train  # the editable defaults at the top of train.py
    from trainers.preflight import preflight
    config_file, overrides = config_lib.parse_overrides(settings)
    cfg = config_lib.resolve_config(train.header_defaults(), config_file, overrides)
    preflight(cfg)
    return cfg


def autocast(cfg: config_lib.TrainConfig, device: torch.device):
    """The autocast context training runs its steps in: accelerate's, from `mixed_precision`."""
    dtype = AUTOCAST_DTYPES.get(cfg.mixed_precision)
    return torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def each_first_in_turn(names: list[str], turn: int) -> list[str]:
    """`names` rotated so that names[turn % len(names)] goes first: over a run every variant
    leads equally often, so a drift in the machine's load does not favour one of them."""
    k = turn % len(names)
    return names[k:] + names[:k]


def machine_info(device: torch.device) -> dict:
    cpu, cpuinfo = platform.processor() or platform.machine(), read_cpuinfo()
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    cpu, unit = names[0] if names else cpu, bf16_matrix_unit(cpuinfo)
    return {"cpu": cpu, "cpu_bf16_unit": unit, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "python": platform.python_version()}


class Clock:
    """Wall clock that first waits for the GPU, so a reading covers the work queued before it."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0 = torch's default); on a shared machine 1 is often faster")


def apply_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def write_report(report: dict, path: str | os.PathLike) -> None:
    """Write `report` as JSON to `path` (folders created) and say where."""
    out = Path(path)
    atomic_write_text(out, json.dumps(report, indent=2))
    print(f"wrote {out}")


RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"
# Where write_results_section writes when given no path: tests point it at a file of their
# own (conftest.py), so no test run ever rewrites the repository's RESULTS.md.
RESULTS_ENV = "BEHAVIORAL_TWIN_RESULTS"
RESULTS_HEADER = ("# Results\n\nEvery section below is written by the script it names, replaced whole "
                  "when that script runs again; none is edited by hand.\n")


def machine_line(device: torch.device | None = None) -> str:
    info = machine_info(device or torch.device("cpu"))
    where = info["gpu"] or (f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} threads, "
                            f"bf16 matrix unit: {info['cpu_bf16_unit'] or 'none'})")
    return f"{where}, torch {info['torch']}, python {info['python']}"


def invocation() -> str:
    """This process's command line as a user would type it (`python -m bench.NAME ...`)."""
    script = Path(sys.argv[0])
    head = f"python -m {script.parent.name}.{script.stem}" if script.parent.name == "bench" else f"python {script.name}"
    return " ".join([head, *map(shlex.quote, sys.argv[1:])])


def add_results_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default=None,
                        help=f"the RESULTS.md to write this script's section of (default: the repository's, or "
                             f"${RESULTS_ENV}); '' = none")


def write_results_section(key: str, title: str, body: str, command: str | None = None,
                          device: torch.device | None = None, path: str | os.PathLike | None = None) -> None:
    """Replace (or append) the section `key` of RESULTS.md with `body` (markdown), headed by the
    command that produced it (default: this process's own command line), the machine and the date.

    Sections are delimited by `<!-- results:KEY -->` markers, so a rerun replaces only its own.
    `path`: the file (None: $BEHAVIORAL_TWIN_RESULTS, else the repository's RESULTS.md; '' = write none)."""
    if path == "":
        return
    path = path or os.environ.get(RESULTS_ENV) or RESULTS
    command = command or invocation()
    begin, end = f"<!-- results:{key} -->", f"<!-- /results:{key} -->"
    section = (f"{begin}\n## {title}\n\n`{command}`, on {machine_line(device)}, {date.today().isoformat()}\n\n"
               f"{body.strip()}\n{end}")
    out = Path(path)
    text = out.read_text() if out.exists() else RESULTS_HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
    atomic_write_text(out, text)
    print(f"wrote the section '{title}' of {out}")
