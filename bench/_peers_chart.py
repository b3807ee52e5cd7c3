"""The chart of bench/peers.py: tasks/s and latency of every system, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def short_label(label: str) -> str:
    text = label.replace("`", "").replace("Conveyor ", "Conveyor\n")
    return text.replace(", ", "\n").replace(" (", "\n(")


def render_chart(report: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [short_label(row["label"]) for row in rows]
    colors = ["#1f6feb" if row["key"].startswith("conveyor") else "#8b949e" for row in rows]
    figure, (left, right) = plt.subplots(1, 2, figsize=(15, 5.5))
    rates = [row["rate"] or 0 for row in rows]
    bars = left.bar(labels, rates, color=colors)
    for bar, row in zip(bars, rows, strict=True):
        text = "n/a" if row["rate"] is None else f"{row['rate']:,.0f}"
        if row["vs_dramatiq"] is not None:
            text += f"\n{row['vs_dramatiq']:.2f}x"
        left.annotate(
            text,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylabel("completed no-op tasks/s")
    left.set_title(
        f"Throughput, {report['settings']['tasks']:,} tasks, and the ratio to Dramatiq "
        "(higher is better)"
    )
    left.set_ylim(0, max([*rates, 1]) * 1.25)
    left.tick_params(axis="x", labelsize=7)

    positions = range(len(rows))
    width = 0.4
    p50 = [row["p50_ms"] or 0 for row in rows]
    p99 = [row["p99_ms"] or 0 for row in rows]
    right.bar([p - width / 2 for p in positions], p50, width, label="p50", color=colors)
    right.bar([p + width / 2 for p in positions], p99, width, label="p99", color=colors, alpha=0.45)
    for p, (low, high) in enumerate(zip(p50, p99, strict=True)):
        for x, value in ((p - width / 2, low), (p + width / 2, high)):
            if value:
                right.annotate(f"{value:.1f}", (x, value), ha="center", va="bottom", fontsize=7)
    right.set_xticks(list(positions), labels)
    right.tick_params(axis="x", labelsize=7)
    right.set_ylabel("submit-to-result latency, ms")
    right.set_title("Latency, one task in flight (p50 solid, p99 light; lower is better)")
    if max([*p99, 0]) > 20 * min([v for v in p50 if v] or [1]):
        right.set_yscale("log")
    machine = report["machine"]
    quick = "  QUICK RUN" if report["settings"]["quick"] else ""
    figure.suptitle(
        f"Conveyor vs Dramatiq, Celery, RQ, arq: {machine['cores']} cores, Python "
        f"{machine['python']}, Redis {machine['redis']['version']}, "
        f"N={report['settings']['workers']} worker threads{quick}",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
