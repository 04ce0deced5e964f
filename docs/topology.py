"""Draws docs/topology.png, the README's picture of how recap-serve scales (`make topology`).

Generated, never hand-drawn: edit this file and run it again.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyBboxPatch

OUT = Path(__file__).resolve().parent / "topology.png"
BLUE, GREEN, GREY, ORANGE = "#dbe9f6", "#dff3e0", "#eeeeee", "#fde7cf"


def box(ax: Axes, xy: tuple[float, float], size: tuple[float, float], text: str, color: str) -> None:
    (x, y), (w, h) = xy, size
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=color, ec="#444444", lw=1))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=8.5)


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], label: str = "") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "#333333", "lw": 1})
    if label:
        ax.text((start[0] + end[0]) / 2 + 0.01, (start[1] + end[1]) / 2, label, fontsize=7, color="#333333")


def one_machine(ax: Axes) -> None:
    ax.set_title("One machine: nginx in front of replicas (compose `scale` profile)", fontsize=10)
    box(ax, (0.36, 0.86), (0.28, 0.09), "HTTP clients, Locust", GREY)
    box(
        ax, (0.30, 0.66), (0.40, 0.11), "nginx :8080\nleast_conn, keepalive, retries (non_idempotent)", ORANGE
    )
    arrow(ax, (0.5, 0.86), (0.5, 0.78))
    for i, x in enumerate((0.03, 0.36, 0.69)):
        box(ax, (x, 0.30), (0.28, 0.25), f"replica-{i + 1} :8000\nsupervisor\n+ N workers\n(--workers)", BLUE)
        arrow(ax, (0.5, 0.66), (x + 0.14, 0.56))
    box(ax, (0.20, 0.05), (0.26, 0.12), "models/ (read-only)\npoll: live swaps", GREEN)
    box(ax, (0.56, 0.05), (0.26, 0.12), "Prometheus\nscrapes :8002", GREY)
    for x in (0.17, 0.50, 0.83):
        arrow(ax, (x, 0.30), (0.33, 0.18))
        arrow(ax, (0.69, 0.18), (x, 0.30))


def kubernetes(ax: Axes) -> None:
    ax.set_title("Kubernetes (deploy/k8s) and KServe (deploy/kserve)", fontsize=10)
    box(ax, (0.30, 0.86), (0.40, 0.09), "Ingress / KServe (Knative) route", GREY)
    box(ax, (0.30, 0.67), (0.40, 0.10), "Service recap-serve\nhttp :8000, grpc :8001, metrics :8002", ORANGE)
    arrow(ax, (0.5, 0.86), (0.5, 0.78))
    for x in (0.03, 0.36, 0.69):
        box(
            ax, (x, 0.30), (0.28, 0.27), "Pod\nrecap-serve\nworkers = CPU limit\nprobes, preStop, drain", BLUE
        )
        arrow(ax, (0.5, 0.67), (x + 0.14, 0.58))
    box(ax, (0.03, 0.05), (0.28, 0.13), "HPA (CPU, or req/s\nvia prometheus-adapter)", GREY)
    box(ax, (0.36, 0.05), (0.28, 0.13), "Secret: API keys\n(rotated, no restart)", GREEN)
    box(ax, (0.69, 0.05), (0.28, 0.13), "PVC / storageUri:\nthe model repository", GREEN)
    arrow(ax, (0.17, 0.18), (0.17, 0.30), "scales")


def main(out: Path = OUT) -> int:
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.2))
    for ax in axes:
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.axis("off")
    one_machine(axes[0])
    kubernetes(axes[1])
    fig.tight_layout()
    fig.savefig(out, dpi=110, metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
