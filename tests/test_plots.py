"""The figures draw the expected bars and lines and write non-empty PNGs into images_dir()."""

from __future__ import annotations

import pytest
from matplotlib.patches import Rectangle

from tutorlib import paths, plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _bars(ax):
    return [p for container in ax.containers for p in container if isinstance(p, Rectangle)]


def _assert_png(name):
    path = paths.images_dir() / name
    assert path.is_file()
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def _records():
    def rec(configuration, total, customer, agent, two, failed=None):
        scores = (
            {} if failed else {"total": total, "customer": customer, "agent": agent, "two_sentences": two}
        )
        return {
            "configuration": configuration,
            "scores": scores,
            "judge": "offline proxy",
            "profile": "smoke",
            "failed": failed,
        }

    return [
        rec("DistilGPT2 base", 2, 0, 0, 2),
        rec("DistilGPT2 full fine-tune", 67, 11, 13, 43),
        rec("Llama-2-7B full fine-tune", None, None, None, None, failed="OOM"),
        rec("Llama-2-7B LoRA", 131, 45, 40, 46),
    ]


def test_figure1_draws_totals_on_top_and_criteria_below():
    fig = plots.figure1(_records(), save="figure1_test.png")
    top, bottom = fig.axes[:2]
    assert len(_bars(top)) == 4
    assert len(_bars(bottom)) == 12
    assert [b.get_height() for b in _bars(top)] == [2, 67, 150, 131]  # the failed bar spans the axis
    failed_bar = _bars(top)[2]
    assert not failed_bar.get_fill()
    assert any("failed (OOM)" in t.get_text() for t in top.texts)
    assert [t.get_text() for t in top.get_xticklabels()][2] == "Llama-2-7B full fine-tune"
    assert "judge: offline proxy" in fig.get_suptitle()
    assert "profile: smoke" in fig.get_suptitle()
    _assert_png("figure1_test.png")


def test_figure1_reads_results_records_and_refuses_missing_scores():
    records = [
        {
            "experiment": "lora",
            "scores": {"total": 10, "customer": 3, "agent": 3, "two_sentences": 4},
            "judge": "gpt-4o",
            "profile": "full",
            "extra": {"configuration": "LoRA"},
        },
        {
            "experiment": "full",
            "scores": {},
            "judge": "gpt-4o",
            "profile": "full",
            "extra": {"failed": "OOM"},
        },
    ]
    fig = plots.figure1(records)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["LoRA", "full"]
    assert "judge: gpt-4o" in fig.get_suptitle()
    with pytest.raises(ValueError, match="no score 'agent'"):
        plots.figure1([{"configuration": "x", "scores": {"total": 1, "customer": 1, "two_sentences": 1}}])
    with pytest.raises(ValueError, match="at least one record"):
        plots.figure1([])


def test_loss_curves_draw_one_line_per_logged_loss():
    history = [
        {"loss": 2.0, "step": 1},
        {"loss": 1.5, "step": 2},
        {"eval_loss": 1.7, "step": 2},
        {"train_runtime": 3.0, "step": 2},  # the final summary entry has no loss
    ]
    fig = plots.loss_curves(history, save="loss_test.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_ydata()) == [2.0, 1.5]
    _assert_png("loss_test.png")
    assert len(plots.loss_curves(history[:2]).axes[0].lines) == 1
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.loss_curves([{"train_runtime": 1.0, "step": 1}])


def test_bars_label_every_value():
    fig = plots.bars(
        {"full": 1200.0, "LoRA": 972.0, "QLoRA": 864.0},
        ylabel="peak MB",
        title="memory",
        save="bars_test.png",
    )
    ax = fig.axes[0]
    assert [b.get_height() for b in _bars(ax)] == [1200.0, 972.0, 864.0]
    assert [t.get_text() for t in ax.texts] == ["1200", "972", "864"]
    _assert_png("bars_test.png")


def test_save_takes_a_png_file_name_only():
    with pytest.raises(ValueError, match="PNG file name"):
        plots.bars({"a": 1.0}, ylabel="s", title="t", save="../outside.png")
    with pytest.raises(ValueError, match="PNG file name"):
        plots.bars({"a": 1.0}, ylabel="s", title="t", save="figure.jpg")


def test_histogram_draws_one_series_per_name_and_rejects_empty():
    fig = plots.histogram(
        {"a": [1, 2, 2, 3], "b": [5, 6]}, xlabel="tokens", title="t", bins=4, save="hist.png"
    )
    ax = fig.axes[0]
    assert len(ax.containers) == 2 and all(len(c) == 4 for c in ax.containers)
    assert (paths.images_dir() / "hist.png").stat().st_size > 0
    with pytest.raises(ValueError, match="non-empty series"):
        plots.histogram({"a": []}, xlabel="x", title="t")


def test_bars_draws_reference_line():
    fig = plots.bars({"full": 104.0, "qlora": 7.9}, ylabel="GB", title="t", line=(16, "16 GB V100"))
    ax = fig.axes[0]
    assert len(ax.containers[0]) == 2
    assert [tuple(line.get_ydata()) for line in ax.get_lines()] == [(16, 16)]
