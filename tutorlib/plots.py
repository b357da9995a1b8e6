"""The course's figures: rubric scores by configuration (the TWEETSUMM document's Figure 1), loss curves, bars.

Every function draws from data (results records, a trainer's log history), returns the matplotlib
Figure and, given `save="name.png"`, writes it to `paths.images_dir()`. Figures are closed in
pyplot before they are returned: a notebook then shows each one once, as the cell's value, and a
script that draws many does not pile them up in memory.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

# Headless (CI, `make run`): pick Agg before pyplot loads. Jupyter's inline backend and an explicit
# MPLBACKEND are left alone.
_HAS_DISPLAY = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
if sys.platform.startswith("linux") and not (
    _HAS_DISPLAY or os.environ.get("MPLBACKEND") or "ipykernel" in sys.modules
):
    matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402

from tutorlib import paths, results  # noqa: E402

_FAILED_STYLE = {"fill": False, "linestyle": "--", "edgecolor": "0.55"}


def _finish(fig: Figure, save: str | None) -> Figure:
    """Lay out, write `images/<save>` when asked, and release the figure from pyplot."""
    fig.tight_layout()
    if save is not None:
        if Path(save).name != save or not save.lower().endswith(".png"):
            raise ValueError(f"save must be a plain PNG file name like 'figure1.png'; got {save!r}")
        folder = paths.images_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(folder / save, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


def _distinct(records: Sequence[Mapping[str, Any]], name: str) -> str:
    values = (results.field(r, name) for r in records)
    return " / ".join(dict.fromkeys(str(v) for v in values if v is not None))


def _mark_failed(ax: Any, containers: Sequence[Any], failed: Sequence[str | None], height: float) -> None:
    """Turn the bars of failed runs into empty dashed outlines of full height, with the reason written inside."""
    for container in containers:
        for bar, reason in zip(container, failed, strict=True):
            if reason:
                bar.set_height(height)
                bar.set(**_FAILED_STYLE)
    for x, reason in enumerate(failed):  # bars of configuration x are centred on x
        if reason:
            ax.text(x, height / 2, reason, rotation=90, ha="center", va="center", fontsize=8, color="0.4")


def figure1(
    records: Sequence[Mapping[str, Any]],
    *,
    rubric_criteria: Sequence[str] = ("customer", "agent", "two_sentences"),
    max_total: float = 150,
    title: str = "Summary scores by configuration",
    save: str | None = None,
) -> Figure:
    """Rubric scores per configuration: totals on top, the criteria as grouped bars below (the TWEETSUMM Figure 1).

    `records` are dicts with `configuration`, `scores` (the total and each criterion), `judge`,
    `profile` and `failed` (a reason such as "OOM", or falsy); results records with those keys in
    `extra` work too. Bars keep the order given; a failed run is an empty dashed bar labelled with
    its failure. The judge and the profile the numbers come from are written under the title.
    """
    if not records:
        raise ValueError("figure1 needs at least one record; got none")
    if not rubric_criteria:
        raise ValueError("rubric_criteria must name at least one criterion")
    labels = [str(results.field(r, "configuration") or results.field(r, "experiment")) for r in records]
    failed = [results.failure(r) for r in records]
    # A criterion scores one point per summary, so its maximum is the number of summaries graded.
    per_criterion_max = max_total / len(rubric_criteria)

    def score(record: Mapping[str, Any], name: str, is_failed: str | None) -> float:
        if is_failed:
            return 0.0
        value = results.field(record, name)
        if value is None:
            raise ValueError(f"record {results.field(record, 'configuration')!r} has no score {name!r}")
        return float(value)

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.3 * len(records) + 2), 7.5))
    x = range(len(records))
    totals = [score(r, "total", f) for r, f in zip(records, failed, strict=True)]
    bars = top.bar(x, totals, color="tab:blue")
    top.bar_label(
        bars, labels=["" if f else f"{t:g}" for t, f in zip(totals, failed, strict=True)], padding=2
    )
    _mark_failed(top, [bars], failed, max_total)
    top.set_ylim(0, max_total * 1.08)
    top.set_ylabel(f"total score (/{max_total:g})")

    width = 0.8 / len(rubric_criteria)
    groups = []
    for i, criterion in enumerate(rubric_criteria):
        offsets = [j - 0.4 + width * (i + 0.5) for j in x]
        values = [score(r, criterion, f) for r, f in zip(records, failed, strict=True)]
        groups.append(bottom.bar(offsets, values, width, label=criterion.replace("_", " ")))
    _mark_failed(bottom, groups, failed, per_criterion_max)
    bottom.set_ylim(0, per_criterion_max * 1.08)
    bottom.set_ylabel(f"points per criterion (/{per_criterion_max:g})")
    bottom.legend(ncols=len(rubric_criteria), fontsize=8, loc="upper left")
    for ax in (top, bottom):
        ax.set_xticks(list(x), labels, rotation=20, ha="right", fontsize=8)

    caption = ", ".join(
        f"{name}: {value}" for name in ("judge", "profile") if (value := _distinct(records, name))
    )
    fig.suptitle(f"{title}\n({caption})" if caption else title, fontsize=11)
    return _finish(fig, save)


def loss_curves(
    history: Sequence[Mapping[str, Any]],
    *,
    title: str = "Training and validation loss",
    save: str | None = None,
) -> Figure:
    """Training `loss` and, when logged, `eval_loss` against `step`, from `trainer.state.log_history`."""
    train = [(e["step"], e["loss"]) for e in history if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in history if "eval_loss" in e and "step" in e]
    if not train and not evals:
        raise ValueError("the history holds no 'loss' or 'eval_loss' entries with a 'step'; nothing to plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label, style in ((train, "training loss", "-"), (evals, "validation loss", "o-")):
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=label, markersize=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(fig, save)


def bars(
    values: Mapping[str, float],
    *,
    ylabel: str,
    title: str,
    line: tuple[float, str] | None = None,
    save: str | None = None,
) -> Figure:
    """Labelled bars with their values written on top, for memory and time comparisons.

    `line=(value, label)` draws a dashed horizontal reference, e.g. a GPU's memory.
    """
    if not values:
        raise ValueError("bars needs at least one value; got an empty mapping")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(values) + 2), 4))
    container = ax.bar(list(values), [float(v) for v in values.values()], color="tab:green")
    ax.bar_label(container, fmt="%.4g", padding=2)
    if line is not None:
        ax.axhline(line[0], color="tab:red", linestyle="--", linewidth=1)
        ax.text(
            len(values) - 0.5, line[0], f" {line[1]}", color="tab:red", va="bottom", ha="right", fontsize=8
        )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", labelrotation=20)
    ax.margins(y=0.15)
    return _finish(fig, save)


def histogram(
    values: Mapping[str, Sequence[float]],
    *,
    xlabel: str,
    title: str,
    bins: int = 30,
    save: str | None = None,
) -> Figure:
    """Overlaid histograms, one per named series (e.g. prompt length in tokens per dataset)."""
    series = {name: list(v) for name, v in values.items() if len(v)}
    if not series:
        raise ValueError("histogram needs at least one non-empty series; got none")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, data in series.items():
        ax.hist(
            data,
            bins=bins,
            alpha=0.55,
            label=f"{name} (n={len(data)}, median {sorted(data)[len(data) // 2]:g})",
        )
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    return _finish(fig, save)
