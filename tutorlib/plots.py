"""The course's figures; each returns the Figure and, given `save="name.png"`, writes it to images_dir()."""

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # without a display matplotlib picks the Agg backend by itself
import pandas as pd
from matplotlib.figure import Figure

from tutorlib import paths

_CRITERIA = ("customer", "agent", "two_sentences")  # the TWEETSUMM rubric: one point each per summary
_CURVES = (("loss", "training loss", "tab:blue", None), ("eval_loss", "validation loss", "tab:orange", "o"))


def _finish(fig: Figure, save: str | None) -> Figure:
    """Lay out, write `images/<save>` when asked, and close it in pyplot so a notebook shows it once."""
    fig.tight_layout()
    if save is not None:
        if Path(save).name != save or not save.lower().endswith(".png"):
            raise ValueError(f"save must be a plain PNG file name like 'figure1.png'; got {save!r}")
        paths.images_dir().mkdir(parents=True, exist_ok=True)
        fig.savefig(paths.images_dir() / save, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


def _failed(rec: Mapping[str, Any]) -> str:
    reason = (rec.get("extra") or {}).get("failed")
    return "" if not reason else "failed" if reason is True else f"failed ({reason})"


def _draw(ax: Any, x: list, heights: list, texts: list, top: float, say: bool = True, **style: Any) -> None:
    """Bars labelled with their values (None: no bar); a bar with a text is a dashed empty outline."""
    pairs = list(zip(heights, texts, strict=True))
    bars = ax.bar(x, [top if t else h or 0 for h, t in pairs], **style)
    ax.bar_label(bars, labels=["" if t or h is None else f"{h:g}" for h, t in pairs], fontsize=8)
    for bar, xi, text in zip(bars, x, texts, strict=True):
        if text:
            bar.set(fill=False, linestyle="--", edgecolor="0.5")
            if say:
                ax.text(xi, top / 2, text, rotation=90, ha="center", va="center", fontsize=8, color="0.4")


def _score(rec: Mapping[str, Any] | None, name: str) -> float | None:
    if rec is not None and not _failed(rec) and rec["scores"].get(name) is None:
        raise ValueError(f"record {rec['experiment']!r} has no score {name!r}; Figure 1 needs {_CRITERIA}")
    return None if rec is None or _failed(rec) else float(rec["scores"][name])


def figure1(
    records: Sequence, reference: Any = None, *, max_total: float, title: str, save: str | None = None
) -> Figure:
    """Figure 1: totals on top (`reference`'s hollow and grey beside this run's), criteria below.

    `reference`: `results.reference` rows (of a whole document, its numbered tables), each on its own scale.
    """
    totals = None if reference is None else reference[reference.metric == "total"]
    if totals is not None and totals.table.str.startswith("Table").any():
        totals = totals[totals.table.str.startswith("Table")]  # the prose repeats some of the tables' numbers
    rows = [] if totals is None else totals.itertuples()  # a missing total's note says why: "failed (OOM)"
    doc = {r.configuration: (None, r.note) if pd.isna(r.value) else (r.value, "") for r in rows}
    ceiling = max([max_total, *(value for value, _ in doc.values() if value is not None)])
    runs = {(r.get("extra") or {}).get("configuration") or r["experiment"]: r for r in records}
    names = list(dict.fromkeys([*doc, *runs]))
    if not names:
        raise ValueError("figure1 needs at least one record or a reference table with 'total' rows")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.4 * len(names) + 2), 7.5))
    x, width = range(len(names)), 0.4 if doc else 0.6
    failed = [_failed(runs[n]) if n in runs else "" for n in names]
    if doc:
        values, notes = zip(*(doc.get(n, (None, "")) for n in names), strict=True)
        style = {"fill": False, "edgecolor": "0.5", "hatch": "//", "label": "document"}
        _draw(top, [i - width / 2 for i in x], values, notes, ceiling, width=width, **style)
    xs = [i + width / 2 if doc else i for i in x]
    scores = [_score(runs.get(n), "total") for n in names]
    _draw(top, xs, scores, failed, ceiling, width=width, color="tab:blue", label="this run")
    top.set(ylim=(0, ceiling * 1.1), ylabel=f"total score (this run: /{max_total:g})")
    each, step = max_total / len(_CRITERIA), 0.8 / len(_CRITERIA)
    for k, crit in enumerate(_CRITERIA):
        points = [_score(runs.get(n), crit) for n in names]
        offsets = [i - 0.4 + step * (k + 0.5) for i in x]
        _draw(bottom, offsets, points, failed, each, say=k == 1, width=step, label=crit.replace("_", " "))
    bottom.set(ylim=(0, each * 1.1), ylabel=f"points per criterion (/{each:g})")
    ticks = [n if n in runs else f"{n}\n(no record)" for n in names]
    for ax in (top, bottom):
        ax.set_xticks(list(x), ticks, rotation=20, ha="right")
        ax.legend(ncols=3, fontsize=8, loc="upper left")
    seen = [(k, dict.fromkeys(str(r[k]) for r in records if r.get(k))) for k in ("profile", "judge")]
    caption = ", ".join(f"{k}: {' / '.join(v)}" for k, v in seen if v)
    fig.suptitle(f"{title}\n(this run: {caption})" if caption else title, fontsize=11)
    return _finish(fig, save)


def _losses(history: Any, key: str) -> list[tuple[int, float]]:
    if isinstance(history, pd.DataFrame):  # results.reference("003", "Training log"): metric "loss@25"
        pairs = [(r.metric.split("@"), r.value) for r in history.itertuples()]
        history = [{"step": int(step), name: value} for (name, step), value in pairs]
    return [(e["step"], e[key]) for e in history if key in e and "step" in e]


def loss_curves(
    history: Sequence[Mapping], reference: Any = None, *, title: str, save: str | None = None
) -> Figure:
    """Loss and eval loss by step from `trainer.state.log_history`; `reference` (a log or CSV rows) dashed."""
    if not _losses(history, "loss") and not _losses(history, "eval_loss"):
        raise ValueError("the history holds no 'loss' or 'eval_loss' entries with a 'step'; nothing to plot")
    fig, ax = plt.subplots(figsize=(7, 4))
    sources = ((history, "this run", "-"), (reference, "document", "--"))
    for (source, who, style), (key, name, color, marker) in itertools.product(sources, _CURVES):
        if source is not None and (points := _losses(source, key)):
            ax.plot(*zip(*points, strict=True), style, c=color, marker=marker, ms=3, label=f"{who}: {name}")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    return _finish(fig, save)


def bars(
    values: Mapping, *, ylabel: str, title: str, line: tuple | None = None, save: str | None = None
) -> Figure:
    """Labelled bars (memory, time); `line=(value, label)` draws a dashed reference such as a GPU's memory."""
    if not values:
        raise ValueError("bars needs at least one value; got an empty mapping")
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(values) + 2), 4))
    drawn = ax.bar(list(values), [float(v) for v in values.values()], color="tab:green")
    ax.bar_label(drawn, fmt="%.4g", padding=2)
    if line is not None:
        ax.axhline(line[0], color="tab:red", linestyle="--", linewidth=1)
        ax.text(len(values) - 0.5, line[0], f" {line[1]}", color="tab:red", va="bottom", ha="right")
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", labelrotation=20)
    ax.margins(y=0.15)
    return _finish(fig, save)


def histogram(lengths: Mapping[str, Sequence], *, xlabel: str, title: str, save: str | None = None) -> Figure:
    """Overlaid histograms, one per named series (e.g. dialogue length in tokens per dataset)."""
    series = {name: sorted(v) for name, v in lengths.items() if len(v)}
    if not series:
        raise ValueError("histogram needs at least one non-empty series; got none")
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, data in series.items():
        ax.hist(data, bins=30, alpha=0.55, label=f"{name} (n={len(data)}, median {data[len(data) // 2]:g})")
    ax.set(xlabel=xlabel, ylabel="count", title=title)
    ax.legend()
    return _finish(fig, save)
