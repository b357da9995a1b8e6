"""The figures draw the expected bars and lines and write PNGs into images_dir()."""

import pytest
from matplotlib.figure import Figure

from tutorlib import paths, plots, results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _own_images_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTORLIB_IMAGES", str(tmp_path / "images"))


def _assert_png(name):
    data = (paths.images_dir() / name).read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 1000


def _rec(configuration, total=None, customer=None, agent=None, two=None, failed=None, n=50):
    """A results record as `results.load_records` returns it (only the keys the figures read):
    `n` summaries graded, one point per criterion each."""
    scores = {"total": total, "customer": customer, "agent": agent, "two_sentences": two}
    scores |= {"max_total": 3 * n, "graded": n}
    extra = {"configuration": configuration, **({"failed": failed} if failed else {})}
    name = configuration.lower().replace(" ", "_")
    return {
        "experiment": name,
        "scores": {} if failed else scores,
        "extra": extra,
        "judge": "offline proxy",
        "profile": "smoke",
    }


def _records():
    return [
        _rec("DistilGPT2 base", 2, 0, 0, 2),
        _rec("DistilGPT2 full fine-tune", 67, 11, 13, 43),
        _rec("Llama-2-7B full fine-tune", failed="OOM"),
        _rec("Llama-2-7B LoRA", 131, 45, 40, 46),
    ]


def _by_label(ax, label):
    (container,) = [c for c in ax.containers if c.get_label() == label]
    return list(container)


def test_figure1_draws_totals_on_top_and_criteria_below_with_the_failed_run_dashed():
    fig = plots.figure1(_records(), title="TWEETSUMM", save="figure1_test.png")
    assert isinstance(fig, Figure)
    top, bottom = fig.axes[:2]
    run = _by_label(top, "this run")
    assert len(run) == 4 and len(top.containers) == 1  # no reference: this run's bars only
    assert sum(len(c) for c in bottom.containers) == 12
    heights = [b.get_height() for b in run]  # shares of 150 points; the failed run spans the axis
    assert heights == pytest.approx([100 * 2 / 150, 100 * 67 / 150, 100, 100 * 131 / 150])
    assert not run[2].get_fill() and run[2].get_linestyle() == "--"
    assert run[1].get_fill() and run[1].get_linestyle() != "--"
    assert [list(c)[2].get_linestyle() for c in bottom.containers] == ["--"] * 3  # every criterion
    assert any(t.get_text() == "failed (OOM)" for t in top.texts)
    written = [t.get_text() for t in top.texts]
    assert "67 of 150" in written and "131 of 150" in written  # the raw points on each bar
    assert [t.get_text() for t in top.get_xticklabels()][2] == "Llama-2-7B full fine-tune"
    assert "judge: offline proxy" in fig.get_suptitle() and "profile: smoke" in fig.get_suptitle()
    _assert_png("figure1_test.png")


def test_a_perfect_run_draws_as_high_as_a_perfect_document():
    # The bug this guards against: this run's 12 of 12 drawn on the document's axis of 150.
    reference = results.reference("000", "Table 1").copy()
    reference.loc[reference.metric == "total", "value"] = 150.0
    perfect = [_rec(c, 12, 4, 4, 4, n=4) for c in reference.configuration.unique()]
    top = plots.figure1(perfect, reference, title="t").axes[0]
    doc, run = _by_label(top, "document"), _by_label(top, "this run")
    assert [b.get_height() for b in run] == [b.get_height() for b in doc] == [100.0] * len(doc)
    assert "12 of 12" in [t.get_text() for t in top.texts]
    assert "150 of 150" in [t.get_text() for t in top.texts]


def test_figure1_draws_the_documents_totals_beside_this_runs():
    small = [  # a smoke run grades a few summaries: its totals are out of 24, the document's 150
        _rec("DistilGPT2 base", 1, 0, 0, 1, n=8),
        _rec("DistilGPT2 full fine-tune", 9, 2, 3, 4, n=8),
        _rec("Llama-2-7B full fine-tune", failed="OOM"),
    ]
    fig = plots.figure1(small, results.reference("000"), title="TWEETSUMM")
    top, bottom = fig.axes[:2]
    names = [t.get_text() for t in top.get_xticklabels()]
    # The whole document: its Table 1 and 2 configurations, not the prose's repeats or its aside.
    assert len(names) == 8 and not any("20 epochs" in n for n in names)
    doc, run = _by_label(top, "document"), _by_label(top, "this run")
    assert len(doc) == len(run) == len(names)  # twice the bars: the document's beside this run's
    assert all(not b.get_fill() for b in doc)  # hollow: the document's, not this run's
    heights = dict(zip(names, [b.get_height() for b in doc], strict=True))
    assert heights["DistilGPT2 LoRA\n(no record)"] == pytest.approx(100 * 58 / 150)
    assert heights["Llama-2-7B LoRA\n(no record)"] == pytest.approx(100 * 131 / 150)
    assert run[names.index("DistilGPT2 LoRA\n(no record)")].get_height() == 0
    assert run[names.index("DistilGPT2 full fine-tune")].get_height() == pytest.approx(100 * 9 / 24)
    failed = names.index("Llama-2-7B full fine-tune")
    assert doc[failed].get_linestyle() == run[failed].get_linestyle() == "--"  # failed in both
    assert doc[0].get_x() < run[0].get_x()  # side by side, the document's first
    # The criteria below: the document's published points per criterion (43 of 50 two-sentence
    # summaries for the full fine-tune) as the same share as this run's.
    written = [t.get_text() for t in bottom.texts]
    assert "43 of 50" in written and "4 of 8" in written


def test_figure1_refuses_a_record_without_a_criterion_and_an_empty_figure():
    incomplete = _rec("x", 1, 1, None, 1)
    with pytest.raises(ValueError, match="no score 'agent'"):
        plots.figure1([incomplete], title="t")
    with pytest.raises(ValueError, match="at least one record"):
        plots.figure1([], title="t")


def test_loss_curves_draw_this_runs_losses_solid_and_the_reference_dashed():
    history = [
        {"loss": 2.0, "step": 1},
        {"loss": 1.5, "step": 2},
        {"eval_loss": 1.7, "step": 2},
        {"train_runtime": 3.0, "step": 2},  # the final summary entry has no loss
    ]
    fig = plots.loss_curves(history, title="t", save="loss_test.png")
    ax = fig.axes[0]
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_ydata()) == [2.0, 1.5]
    _assert_png("loss_test.png")
    with_ref = plots.loss_curves(
        history, [{"loss": 3.0, "step": 1}, {"loss": 2.5, "step": 2}], title="t"
    )
    assert [line.get_linestyle() for line in with_ref.axes[0].lines] == ["-", "-", "--"]
    document = plots.loss_curves(history, results.reference("003", "Training log"), title="t").axes[
        0
    ]
    dashed = [line for line in document.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 2 and all(len(line.get_xdata()) == 40 for line in dashed)
    assert list(dashed[1].get_xdata()[:2]) == [25, 50]
    with pytest.raises(ValueError, match="no 'loss'"):
        plots.loss_curves([{"train_runtime": 1.0, "step": 1}], title="t")


def test_bars_label_every_value_and_draw_a_reference_line():
    fig = plots.bars(
        {"full": 104.0, "LoRA": 9.7, "QLoRA": 7.9},
        ylabel="GB",
        title="memory",
        line=(16, "16 GB V100"),
        save="bars_test.png",
    )
    ax = fig.axes[0]
    assert [b.get_height() for b in ax.containers[0]] == [104.0, 9.7, 7.9]
    assert [t.get_text() for t in ax.texts][:3] == ["104", "9.7", "7.9"]
    assert [tuple(line.get_ydata()) for line in ax.get_lines()] == [(16, 16)]
    _assert_png("bars_test.png")
    with pytest.raises(ValueError, match="at least one value"):
        plots.bars({}, ylabel="s", title="t")


def test_save_takes_a_png_file_name_only():
    with pytest.raises(ValueError, match="PNG file name"):
        plots.bars({"a": 1.0}, ylabel="s", title="t", save="../outside.png")
    with pytest.raises(ValueError, match="PNG file name"):
        plots.bars({"a": 1.0}, ylabel="s", title="t", save="figure.jpg")
