"""Learning-curve PNGs (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from training.train import History


def learning_curve(hist: History, title: str, path: Path) -> None:
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(9, 3.4))
    steps = range(1, len(hist.train_loss) + 1)
    ax_loss.plot(steps, hist.train_loss, label="train")
    ax_loss.plot(steps, hist.val_loss, label="validation")
    ax_loss.set_xlabel(hist.x_label)
    ax_loss.set_ylabel("loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    ax_metric.plot(steps, hist.val_metric, color="tab:green")
    ax_metric.axvline(hist.best_epoch + 1, color="grey", linestyle=":", label="kept")
    ax_metric.set_xlabel(hist.x_label)
    ax_metric.set_ylabel(hist.metric_name)
    ax_metric.legend()
    ax_metric.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
