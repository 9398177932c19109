"""PNG plots of benchmark rows (matplotlib, imported only when plotting)."""
from pathlib import Path
from typing import List

from fastswin.optional import require


def _pyplot():
    require("matplotlib", "plotting").use("Agg")
    return require("matplotlib.pyplot", "plotting")


def speedup_plot(rows: List[dict], path: Path, title: str) -> Path:
    """One horizontal bar per (op, case, mode, dtype, baseline): fastswin's speedup over that baseline."""
    plt = _pyplot()
    labels = [f"{r['op']} {r['case']} {r['mode']} {r['dtype']} vs {r['baseline']}" for r in rows]
    speedups = [r["speedup"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.5))
    bars = ax.barh(range(len(rows)), speedups, color=["tab:green" if s >= 1 else "tab:red" for s in speedups])
    ax.bar_label(bars, labels=[f"{s:.2f}x" for s in speedups], padding=2, fontsize=7)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speedup over baseline (higher is better)")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def throughput_plot(rows: List[dict], path: Path, title: str) -> Path:
    """Images/s per (model, mode): the baseline next to the patched model."""
    plt = _pyplot()
    labels = [f"{r['case']} {r['mode']}" for r in rows]
    patched = [r["images_per_s"] for r in rows]
    baseline = [p / r["speedup"] for p, r in zip(patched, rows)]
    y = range(len(rows))
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1.5))
    ax.barh([i - 0.2 for i in y], baseline, height=0.4, label=rows[0]["baseline"], color="tab:gray")
    bars = ax.barh([i + 0.2 for i in y], patched, height=0.4, label="+ fastswin", color="tab:green")
    ax.bar_label(bars, labels=[f"{r['speedup']:.2f}x" for r in rows], padding=2, fontsize=7)
    ax.set_yticks(list(y), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images / s (higher is better)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
