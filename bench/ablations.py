"""The ablation grid: which part of the design earns the gain.

    python -m bench.ablations [--key=value ...]              # the embedded default, every cell a full run
    python -m bench.ablations --max_train_examples=32 --max_eval_examples=40   # a quick, reduced grid

One factor at a time around the default (train.py's defaults: embedded LaMP-1, MiniLM,
SmolLM2-135M, 8 queries, top 4 input-encoder layers tuned, Q-Former, token-level input):

    num_queries   1, 4, 8, 16, 32
    tune_layers   0, 2, 4            (input encoder frozen vs top 2 / 4 layers tuned)
    aggregator    Q-Former vs mean of the history embeddings (model=mean)
    input         token states vs one pooled vector (input_output=pooled)

Each cell is a full, ordinary train + eval run (trainers.run) in saved/ablations/<cell>/;
every --key=value is passed to every run, so --max_train_examples, --max_eval_examples,
--epochs, --llm, --encoder ... shrink or change them all alike. Options of the grid itself:
--only=cell,cell (names below), --run_dir=, --bench_dir=, --threads=N (torch CPU threads). A cell whose run folder
already holds metrics.json is reused; delete it (or pass --run_dir elsewhere) to rerun.
Writes saved/bench/ablations.{json,md,png}.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from bench.common import write_results_section
from dataset.atomic import atomic_write, atomic_write_text
from trainers import config as config_lib
import train

# (cell name, axis, setting shown in the table, overrides). The default cell appears once
# and is the reference row of every axis.
DEFAULT = ("default", "default", "8 queries, 4 layers tuned, Q-Former, tokens", {})
CELLS = [DEFAULT] + [
    (f"queries-{q}", "num_queries", str(q), {"num_queries": q}) for q in (1, 4, 16, 32)
] + [
    (f"tune-{n}", "tune_layers", str(n), {"tune_layers": n}) for n in (0, 2)
] + [
    ("mean", "aggregator", "mean of history embeddings", {"model": "mean"}),
    ("pooled", "input", "pooled input vector", {"input_output": "pooled"}),
]
# The default's value on each axis, for the table and the plot.
DEFAULT_SETTING = {"num_queries": "8", "tune_layers": "4", "aggregator": "Q-Former", "input": "token states"}


def parse(argv: list[str]) -> tuple[dict, Path, Path, list[str], str | None]:
    """-> (run overrides, run folder, bench folder, cells to run, RESULTS.md to write (None: the default))."""
    overrides, run_dir, bench_dir, only = {}, Path("saved/ablations"), Path("saved/bench"), [c[0] for c in CELLS]
    rest, results = [], None
    for arg in argv:
        if arg.startswith("--results="):
            results = arg.split("=", 1)[1]
        elif arg.startswith("--run_dir="):
            run_dir = Path(arg.split("=", 1)[1])
        elif arg.startswith("--bench_dir="):
            bench_dir = Path(arg.split("=", 1)[1])
        elif arg.startswith("--only="):
            only = arg.split("=", 1)[1].split(",")
        elif arg.startswith("--threads="):  # torch CPU threads; on a shared machine 1 is often faster
            import torch
            torch.set_num_threads(int(arg.split("=", 1)[1]))
        else:
            rest.append(arg)
    config_file, overrides = config_lib.parse_overrides(rest)
    if config_file:
        raise config_lib.ConfigError("--config is not supported here; pass settings as --key=value")
    return overrides, run_dir, bench_dir, only, results


def run_cell(name: str, cell_overrides: dict, overrides: dict, run_dir: Path) -> tuple[dict, float, bool]:
    """One full train + eval run -> (final dev metrics, seconds, reused)."""
    folder = run_dir / name
    if (folder / "metrics.json").exists():
        print(f"reusing {folder} (delete it to run it again)")
        return json.loads((folder / "metrics.json").read_text()), 0.0, True
    from trainers.run import run
    values = {"controls": "false", **overrides, **{k: str(v) for k, v in cell_overrides.items()}}
    cfg = config_lib.resolve_config(train.header_defaults(), None, values)
    cfg = dataclasses.replace(cfg, out_dir=str(run_dir), run_name=name)
    print(f"\n=== ablation cell {name}: {cell_overrides or 'the default'} ===", flush=True)
    started = time.time()
    metrics = run(cfg)
    return metrics, time.time() - started, False


def markdown(rows: list[dict], command: str) -> str:
    metrics = [m for m in rows[0]["metrics"]]
    lines = [f"    {command}", "", "| axis | setting | " + " | ".join(metrics) + " | seconds |",
             "|---" * (len(metrics) + 3) + "|"]
    for row in rows:
        values = " | ".join(f"{row['metrics'][m]:.4f}" for m in metrics)
        seconds = "reused" if row["reused"] else f"{row['seconds']:.0f}"
        lines.append(f"| {row['axis']} | {row['setting']} | {values} | {seconds} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], metric: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = next((r for r in rows if r["axis"] == "default"), None)
    axes_names = [a for a in DEFAULT_SETTING if any(r["axis"] == a for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(axes_names)), figsize=(3.2 * max(1, len(axes_names)), 3.4),
                             squeeze=False, sharey=True)
    for ax, axis in zip(axes[0], axes_names):
        cells = [(r["setting"], r["metrics"][metric], "tab:gray") for r in rows if r["axis"] == axis]
        if default is not None:  # the default is every axis's reference bar
            cells.append((DEFAULT_SETTING[axis], default["metrics"][metric], "tab:blue"))
        if axis in ("num_queries", "tune_layers"):
            cells.sort(key=lambda cell: int(cell[0]))
        bars = ax.bar([c[0] for c in cells], [c[1] for c in cells], color=[c[2] for c in cells])
        ax.bar_label(bars, fmt="%.3f", fontsize=8)  # a bar at 0 is still visible as a number
        if metric in ("accuracy", "f1"):
            ax.set_ylim(0, 1.05)
        ax.set_title(axis)
        ax.tick_params(axis="x", rotation=30)
    axes[0][0].set_ylabel(f"dev {metric}")
    fig.tight_layout()
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=120))
    plt.close(fig)


def main(argv: list[str]) -> int:
    try:
        overrides, run_dir, bench_dir, only, results = parse(argv)
    except config_lib.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = []
    for name, axis, setting, cell_overrides in CELLS:
        if name not in only:
            continue
        metrics, seconds, reused = run_cell(name, cell_overrides, overrides, run_dir)
        task = next(iter(metrics))
        rows.append({"cell": name, "axis": axis, "setting": setting, "task": task, "metrics": metrics[task],
                     "seconds": seconds, "reused": reused, "overrides": cell_overrides})
    command = " ".join(["python -m bench.ablations", *map(shlex.quote, argv)])
    bench_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(bench_dir / "ablations.json", json.dumps({"command": command, "rows": rows}, indent=2))
    table = markdown(rows, command)
    atomic_write_text(bench_dir / "ablations.md", table)
    plot(rows, next(iter(rows[0]["metrics"])), bench_dir / "ablations.png")
    print(f"\n{rows[0]['task']} dev results:\n{table}\nwrote {bench_dir}/ablations.{{json,md,png}}")
    write_results_section("ablations", "Ablation grid: which part of the design earns the gain",
                          f"{rows[0]['task']} dev results, one factor at a time around the default.\n\n{table}",
                          command=command, path=results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
