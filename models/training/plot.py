"""Loss and accuracy per epoch as a PNG, from metrics.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def plot_metrics(metrics_path: Path, png_path: Path) -> None:
    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    epochs = [r["epoch"] for r in rows]
    fig, loss_ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    loss_ax.plot(epochs, [r["loss"] for r in rows], "o-", color="tab:blue", label="train loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    if any("val_top1" in r for r in rows):
        acc_ax = loss_ax.twinx()
        acc_ax.plot(
            [r["epoch"] for r in rows if "val_top1" in r],
            [r["val_top1"] for r in rows if "val_top1" in r],
            "s--",
            color="tab:orange",
            label="val top-1",
        )
        acc_ax.set_ylabel("top-1")
        acc_ax.set_ylim(0, 1)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
