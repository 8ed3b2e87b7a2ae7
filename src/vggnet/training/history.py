"""A run's history: metrics.jsonl, metrics.csv and curves.png, rewritten after every epoch."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..evaluation.report import pyplot
from ..io import atomic_write

log = logging.getLogger("vggnet")


def plot_curves(history: list[dict], path: Path) -> Path:
    plt = pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["train_loss"] for h in history], label="train")
    ax1.plot(epochs, [h["test_loss"] for h in history], label="test")
    ax1.set_xlabel("epoch"); ax1.set_ylabel("loss"); ax1.legend(); ax1.grid(alpha=0.3)
    ax2.plot(epochs, [100 * h["train_acc"] for h in history], label="train")
    ax2.plot(epochs, [100 * h["test_top1"] for h in history], label="test top-1")
    ax2.set_xlabel("epoch"); ax2.set_ylabel("accuracy (%)"); ax2.legend(); ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_history(out: Path, history: list[dict]) -> None:
    """The per-epoch records as JSON lines, CSV and a plot (a plot must never stop a run)."""
    text = "".join(json.dumps(h) + "\n" for h in history)
    atomic_write(out / "metrics.jsonl", lambda p: p.write_text(text))
    keys = list(history[0])
    csv = ",".join(keys) + "\n" + "".join(",".join(str(h[k]) for k in keys) + "\n" for h in history)
    atomic_write(out / "metrics.csv", lambda p: p.write_text(csv))
    try:
        plot_curves(history, out / "curves.png")
    except Exception as exc:  # matplotlib's errors are many; the run goes on without the plot
        log.warning(f"could not draw curves.png: {exc}")
