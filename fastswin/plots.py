"""PNG plots of benchmark rows (matplotlib, imported only when plotting)."""
from pathlib import Path
from typing import List


def speedup_plot(rows: List[dict], path: Path, title: str) -> Path:
    """One horizontal bar per (op, case, mode): fastswin's speedup over its baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['op']} {r['case']} {r['mode']}" for r in rows]
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
