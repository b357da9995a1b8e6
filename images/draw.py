"""Draw the figures a reader sees on GitHub without running anything: `python images/draw.py`.

- `lora.png`: a LoRA adapter beside a frozen weight matrix, with the shapes of DistilGPT2's c_attn;
- `memory_llama2_7b.png`: what fine-tuning Llama-2-7B needs per method, from `memory.estimate`.
Both are drawn from code and numbers in this repository, so they change when the code does.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from tutorlib import memory, models, plots  # noqa: E402

HERE = Path(__file__).resolve().parent


def _box(ax, x, y, w, h, label, color, sub=""):
    ax.add_patch(Rectangle((x, y), w, h, facecolor=color, edgecolor="black", linewidth=1.2))
    ax.text(x + w / 2, y + h * 0.62, label, ha="center", va="center", fontsize=13, weight="bold")
    ax.text(x + w / 2, y + h * 0.25, sub, ha="center", va="center", fontsize=8.5)


def _arrow(ax, start, end):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, linewidth=1.2))


def lora_diagram(path: Path) -> None:
    """x goes through the frozen W and, in parallel, through A (down to rank r) and B (back up)."""
    fig, ax = plt.subplots(figsize=(8, 4.2))
    _box(ax, 0.5, 1.0, 3.0, 3.0, "W", "#d9d9d9", "frozen: 768 × 2,304 = 1,769,472")
    _box(ax, 4.9, 2.9, 2.8, 0.9, "A", "#9ecae1", "trained: 768 × r")
    _box(ax, 4.9, 1.1, 2.8, 0.9, "B", "#fdae6b", "trained: r × 2,304, starts at 0")
    _arrow(ax, (2.0, 5.2), (2.0, 4.05))
    _arrow(ax, (2.0, 5.2), (6.3, 3.85))
    _arrow(ax, (6.3, 2.85), (6.3, 2.05))
    _arrow(ax, (2.0, 0.95), (4.1, 0.25))
    _arrow(ax, (6.3, 1.05), (4.3, 0.25))
    ax.text(2.0, 5.35, "x", ha="center", fontsize=14)
    ax.text(4.2, 0.0, "h = W·x + (alpha / r)·B·A·x", ha="center", va="top", fontsize=12)
    trained = "r = 16:\n16 × (768 + 2,304)\n= 49,152 trained\n(2.8 % of W)"
    ax.text(8.0, 2.4, trained, fontsize=10, va="center")
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.8, 5.8)
    ax.axis("off")
    ax.set_title("A LoRA adapter on DistilGPT2's attention projection c_attn")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def memory_bars(path: Path) -> None:
    """The estimate for document 000's Llama-2-7B run (fp16, batch 8 × 1,024 tokens) against a
    16 GB card."""
    doc = models.spec("llama-2-7b").training
    shape = {"batch_size": doc["per_device_train_batch_size"], "seq_len": doc["max_length"]}
    totals = {
        m: memory.estimate(
            "llama-2-7b",
            method=m,
            dtype=torch.float16,
            activation_checkpointing=m in models.QUANTIZED,
            **shape,
        ).total_gb
        for m in memory.METHODS
    }
    title = "Fine-tuning Llama-2-7B, fp16, batch 8 × 1,024 tokens (quantized: with checkpointing)"
    fig = plots.bars(totals, ylabel="GB (estimate)", line=(16, "16 GB card"), title=title)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    lora_diagram(HERE / "lora.png")
    memory_bars(HERE / "memory_llama2_7b.png")
    print("wrote", HERE / "lora.png", "and", HERE / "memory_llama2_7b.png")
