"""Training curves: a run's metrics.jsonl drawn as RUN/curves.png, and `instructerc plot` for several runs.

Three panels share the optimizer-step axis: the loss of each task, the learning rate, and the
dev score after each epoch (ERC weighted-F1; the speaker warm-up's accuracy) with the selected
(best) epoch marked.

    instructerc plot RUN [RUN ...] [--out FILE]     (default: RUN/curves.png for one run, else curves.png)
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

from instructerc.errors import UserError
from instructerc.fileio import atomic_path

TASK_STYLE = {"erc": "-", "predict": "--", "speaker": ":"}
# the dev scores train logs, one per epoch: ERC stages' weighted-F1, the speaker warm-up's accuracy
SCORE_NAMES = {"dev_weighted_f1": "dev weighted-F1", "dev_speaker_accuracy": "dev speaker accuracy"}


@dataclass
class RunCurves:
    name: str
    steps: list[int] = field(default_factory=list)
    losses: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # task -> (step, loss)
    lr: list[tuple[int, float]] = field(default_factory=list)
    dev: list[tuple[int, int, float]] = field(default_factory=list)  # (step, epoch, dev score)
    dev_score: str = "dev_weighted_f1"  # which of SCORE_NAMES
    best_epoch: int | None = None


def read_run(run: str | Path, name: str | None = None) -> RunCurves:
    """The curves of a run folder (one written by `instructerc train`), named `name` or the folder's name."""
    run = Path(run)
    path = run / "metrics.jsonl"
    if not path.is_file():
        raise UserError("not a training run folder (no metrics.jsonl)", path=run)
    curves = RunCurves(name or run.name)
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise UserError("not a JSON line (a damaged metrics.jsonl?)", path=path, row=lineno) from None
        score = next((k for k in SCORE_NAMES if k in row), None)
        if score:
            curves.dev.append((row["step"], row["epoch"], row[score]))
            curves.dev_score = score
            continue
        curves.lr.append((row["step"], row["lr"]))
        for key, value in row.items():
            if key.startswith("loss_") and value is not None:
                curves.losses.setdefault(key[5:], []).append((row["step"], value))
    if curves.dev:
        curves.best_epoch = max(curves.dev, key=lambda d: (d[2], -d[1]))[1]  # the first of equal bests, as train keeps
    return curves


def draw(runs: list[RunCurves], out: str | Path) -> None:
    """One figure, every run on the same axes, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss_ax, lr_ax, dev_ax) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        color = colors[i % len(colors)]
        label = (lambda what: f"{run.name}: {what}") if len(runs) > 1 else (lambda what: what)
        for task, points in run.losses.items():
            loss_ax.plot(*zip(*points), TASK_STYLE.get(task, "-"), color=color, label=label(f"loss {task}"))
        if run.lr:
            lr_ax.plot(*zip(*run.lr), color=color, label=label("lr"))
        if run.dev:
            steps, epochs, scores = zip(*run.dev)
            dev_ax.plot(steps, [s * 100 for s in scores], "o-", color=color, label=label(SCORE_NAMES[run.dev_score]))
            best = next(d for d in run.dev if d[1] == run.best_epoch)
            dev_ax.plot(best[0], best[2] * 100, "*", color=color, markersize=16, markeredgecolor="black",
                        label=label(f"selected: epoch {best[1]}"))
    loss_ax.set_ylabel("training loss (mean per example)")
    lr_ax.set_ylabel("learning rate")
    scored = {SCORE_NAMES[r.dev_score] for r in runs if r.dev}
    dev_ax.set_ylabel(f"{scored.pop() if len(scored) == 1 else 'dev score'} (%)")
    dev_ax.set_xlabel("optimizer step")
    for ax in (loss_ax, lr_ax, dev_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    loss_ax.set_title(", ".join(r.name for r in runs))
    fig.tight_layout()
    save_png(fig, out)


def save_png(fig, out: Path) -> None:
    """A matplotlib figure written atomically as PNG, then closed."""
    import matplotlib.pyplot as plt

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN", help="run folders written by `instructerc train`")
    parser.add_argument("--out", metavar="FILE.png", help="default: RUN/curves.png for one run, curves.png for several")


def distinct_names(runs: list[str]) -> list[str]:
    """The fewest trailing path parts that tell the runs apart: the stages of two rows are both `joint`,
    and a legend of `joint` and `joint` says nothing."""
    parts = [Path(r).resolve().parts for r in runs]
    depth = 1  # at full depth the names are the absolute paths: the loop ends there at the latest
    while len({p[-depth:] for p in parts}) < len(set(parts)):  # a folder given twice keeps one name
        depth += 1
    return [Path(*p[-depth:]).as_posix() for p in parts]


def run(args) -> int:
    runs = [read_run(r, name) for r, name in zip(args.runs, distinct_names(args.runs))]
    out = Path(args.out) if args.out else (Path(args.runs[0]) / "curves.png" if len(runs) == 1 else Path("curves.png"))
    if out.suffix.lower() != ".png":
        raise UserError("--out must end in .png", path=out)
    draw(runs, out)
    print(f"curves of {len(runs)} run(s) -> {out}")
    return 0
