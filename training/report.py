"""The training report: JSON facts plus a PNG with loss curves and the score histogram."""

from __future__ import annotations

import io
import json

import numpy as np


REPORT_JSON, REPORT_PNG = "training_report.json", "training_report.png"


def render_report(report: dict) -> dict[str, bytes]:
    """The report files, by name: training_report.json and training_report.png."""
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    png = io.BytesIO()
    plot_report(report, png)
    return {REPORT_JSON: (json.dumps(public, indent=2) + "\n").encode(), REPORT_PNG: png.getvalue()}


def plot_report(report: dict, out) -> None:
    """Draw the loss curves and the validation score histogram into a PNG file or stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = report["history"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    epochs = [h["epoch"] for h in history]
    left.plot(epochs, [h["loss"] for h in history], label="training loss")
    left.plot(epochs, [h["val_loss"] for h in history], label="validation loss")
    best = report["summary"]["best_epoch"]
    left.axvline(best, color="grey", linestyle=":", label=f"best epoch ({best})")
    left.set_xlabel("epoch")
    left.set_ylabel("-ELBO per observed cell")
    left.set_title("Loss")
    left.legend()
    scores = np.asarray(report.get("_calibration_scores", []))
    threshold = report["threshold"]["value"]
    if scores.size:
        right.hist(scores, bins=min(60, max(10, scores.size // 20)), color="tab:blue", alpha=0.8)
    right.axvline(threshold, color="tab:red", label=f"threshold {threshold:.4g} ({report['threshold']['method']})")
    right.set_xlabel("window score")
    right.set_ylabel("validation windows")
    right.set_title("Validation scores the threshold is fitted to")
    right.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100, format="png")
    plt.close(fig)
