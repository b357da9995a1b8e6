"""The course's figures: each returns the Figure; `save="name.png"` writes it to images_dir()."""

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt  # without a display matplotlib picks the Agg backend by itself
import pandas as pd
from matplotlib.figure import Figure

from tutorlib import paths, results

# the TWEETSUMM rubric, one point each per summary, and each criterion's colour
_CRITERIA = {"customer": "tab:blue", "agent": "tab:orange", "two_sentences": "tab:green"}
_CURVES = (
    ("loss", "training loss", "tab:blue", None),
    ("eval_loss", "validation loss", "tab:orange", "o"),
)


def _finish(fig: Figure, save: str | None) -> Figure:
    """Lay out, write `images/<save>` if asked, close it in pyplot so a notebook shows it once."""
    fig.tight_layout()
    if save is not None:
        if Path(save).name != save or not save.lower().endswith(".png"):
            raise ValueError(f"save must be a plain PNG file name like 'figure1.png'; got {save!r}")
        paths.images_dir().mkdir(parents=True, exist_ok=True)
        fig.savefig(paths.images_dir() / save, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return fig


def _out_of(unit: Any) -> float | None:
    """The maximum a reference unit names: 'points /150' -> 150."""
    found = re.search(r"/\s*(\d+(?:\.\d+)?)", str(unit))
    return float(found[1]) if found else None


def _document(reference: Any, metric: str) -> dict[str, tuple]:
    """{configuration: (points, out of, note)} of the document, for one metric."""
    if reference is None:
        return {}
    rows = reference[reference.metric == metric]
    if metric == "total" and rows.table.str.startswith("Table").any():
        rows = rows[rows.table.str.startswith("Table")]  # the prose repeats the tables' numbers
    out = {}
    for r in rows.itertuples():
        if pd.isna(r.value):
            out[r.configuration] = (None, None, r.note)
        else:
            out[r.configuration] = (r.value, _out_of(r.unit), "")
    return out


def _run(rec: Mapping[str, Any] | None, metric: str) -> tuple:
    """(points, out of, note) of this run's record: the total out of its own maximum, a criterion
    out of the summaries graded; a failed run or an all-failed grading is a note, never a 0."""
    if rec is None:
        return None, None, ""
    if why := results.failure(rec):
        return None, None, why
    scores = rec["scores"]
    if scores.get(metric) is None:
        raise ValueError(
            f"record {rec['experiment']!r} has no score {metric!r}; "
            f"Figure 1 needs {tuple(_CRITERIA)}"
        )
    out_of = scores.get("max_total") if metric == "total" else scores.get("graded")
    return (float(scores[metric]), float(out_of), "") if out_of else (None, None, "nothing graded")


def _bars(ax: Any, xs: list[float], points: list[tuple], width: float, **style: Any) -> None:
    """Bars at each value's share of its own maximum, labelled 'x of N'. A bar with a note (a
    failed run) is a dashed outline over the whole axis, the note written inside."""
    shares = [100 * v / n if v is not None and n else 0 for v, n, _ in points]
    heights = [100 if note else share for share, (*_, note) in zip(shares, points, strict=True)]
    drawn = ax.bar(xs, heights, width=width, **style)
    labels = ["" if note or v is None else f"{v:g} of {n:g}" for v, n, note in points]
    ax.bar_label(drawn, labels=labels, fontsize=7, rotation=90, padding=2)
    for bar, x, (*_, note) in zip(drawn, xs, points, strict=True):
        if note:
            bar.set(fill=False, linestyle="--", edgecolor="0.5")
            ax.text(x, 50, note, rotation=90, ha="center", va="center", fontsize=7, color="0.4")


def figure1(
    records: Sequence, reference: Any = None, *, title: str, save: str | None = None
) -> Figure:
    """Figure 1: each configuration's total (top) and points per criterion (bottom), the
    document's hollow beside this run's solid, each bar a share of its own maximum (the document's
    150, this run's 3 × summaries graded; ARCHITECTURE.md), labelled 'x of N'. `reference`:
    `results.reference` rows (of a whole document, its numbered tables)."""
    runs = {(r.get("extra") or {}).get("configuration") or r["experiment"]: r for r in records}
    totals = _document(reference, "total")
    names = list(dict.fromkeys([*totals, *runs]))
    if not names:
        raise ValueError("figure1 needs at least one record or a reference table with 'total' rows")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.5 * len(names) + 2), 8.5))
    x, width = list(range(len(names))), 0.4 if totals else 0.6
    if totals:
        hollow = {"fill": False, "edgecolor": "0.5", "hatch": "//", "label": "document"}
        points = [totals.get(n, (None, None, "")) for n in names]
        _bars(top, [i - width / 2 for i in x], points, width, **hollow)
    mine = [_run(runs.get(n), "total") for n in names]
    right = [i + width / 2 if totals else i for i in x]
    _bars(top, right, mine, width, color="tab:blue", label="this run")
    _criteria_panel(bottom, names, runs, reference)
    ticks = [n if n in runs else f"{n}\n(no record)" for n in names]
    for ax, what in ((top, "total score"), (bottom, "points per criterion")):
        ax.set(ylim=(0, 125), ylabel=f"{what}\n(% of its own maximum)")
        ax.set_xticks(x, ticks, rotation=20, ha="right")
        ax.legend(ncols=4, fontsize=7, loc="upper left")
    seen = [
        (k, dict.fromkeys(str(r[k]) for r in records if r.get(k))) for k in ("profile", "judge")
    ]
    caption = ", ".join(f"{k}: {' / '.join(v)}" for k, v in seen if v)
    fig.suptitle(f"{title}\n(this run: {caption})" if caption else title, fontsize=11)
    return _finish(fig, save)


def _criteria_panel(ax: Any, names: list[str], runs: Mapping, reference: Any) -> None:
    """Per configuration, each criterion's share: the document's (if published) and this run's."""
    step = 0.8 / (2 * len(_CRITERIA))
    for k, (crit, color) in enumerate(_CRITERIA.items()):
        published = _document(reference, crit)
        left = [i - 0.4 + step * (2 * k + 0.5) for i in range(len(names))]
        if published:
            points = [published.get(n, (None, None, "")) for n in names]
            _bars(ax, left, points, step, fill=False, edgecolor=color, hatch="//")
        points = [_run(runs.get(n), crit) for n in names]
        label = crit.replace("_", " ") + " (hollow: document)"
        _bars(ax, [v + step for v in left], points, step, color=color, label=label)


def _losses(history: Any, key: str) -> list[tuple[int, float]]:
    # results.reference("003", "Training log"): metric "loss@25"
    if isinstance(history, pd.DataFrame):
        pairs = [(r.metric.split("@"), r.value) for r in history.itertuples()]
        history = [{"step": int(step), name: value} for (name, step), value in pairs]
    return [(e["step"], e[key]) for e in history if key in e and "step" in e]


def loss_curves(
    history: Sequence[Mapping], reference: Any = None, *, title: str, save: str | None = None
) -> Figure:
    """Loss and eval loss by step from `trainer.state.log_history`, `reference` (a log or CSV
    rows) dashed."""
    if not _losses(history, "loss") and not _losses(history, "eval_loss"):
        raise ValueError(
            "the history holds no 'loss' or 'eval_loss' entries with a 'step'; nothing to plot"
        )
    fig, ax = plt.subplots(figsize=(7, 4))
    sources = ((history, "this run", "-"), (reference, "document", "--"))
    for (source, who, style), (key, name, color, marker) in itertools.product(sources, _CURVES):
        if source is not None and (points := _losses(source, key)):
            label = f"{who}: {name}"
            ax.plot(*zip(*points, strict=True), style, c=color, marker=marker, ms=3, label=label)
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend(fontsize=8)
    return _finish(fig, save)


def bars(
    values: Mapping, *, ylabel: str, title: str, line: tuple | None = None, save: str | None = None
) -> Figure:
    """Labelled bars (memory, time); `line=(value, label)` adds a dashed line (a GPU's memory)."""
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
