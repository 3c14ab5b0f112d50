"""PNG charts of how a cost grows with file size, for any area that wants one.

Figures are drawn on matplotlib's Agg canvas directly, not through pyplot:
no display is needed, and no global figure state leaks between areas.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator

from bench.common import MIB

# series: label -> [(file size in bytes, value), ...]
Series = dict[str, list[tuple[int, float]]]


def size_curves(path: Path, title: str, ylabel: str, series: Series, *, dashed: tuple[str, ...] = (),
                colors: dict[str, str] | None = None, limit: float | None = None, limit_label: str = "",
                logy: bool = False) -> Path:
    """One line per series against file size on a log2 x axis (sizes are
    powers of two, so equal steps read as equal ratios); ``dashed`` series are
    references (e.g. cp) rather than the thing measured; ``colors`` keeps a
    series the same colour across charts; ``limit`` draws a goal."""
    fig = Figure(figsize=(9, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    sizes = sorted({size for points in series.values() for size, _ in points})
    for label, points in series.items():
        points = sorted(points)
        ax.plot([s / MIB for s, _ in points], [v for _, v in points], marker="o",
                linestyle="--" if label in dashed else "-", label=label, color=(colors or {}).get(label))
    if limit is not None:
        ax.axhline(limit, color="grey", linestyle=":", linewidth=1, label=limit_label or None)
    ax.set_xscale("log", base=2)
    # Tick exactly the measured sizes: the reader wants "at 64 MiB", not 2^6.
    ax.set_xticks([s / MIB for s in sizes], [f"{s / MIB:g} MiB" for s in sizes])
    if logy:
        ax.set_yscale("log")
        # 20, 50, 100, 200 ... read better than bare powers of ten.
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.set_ylim(bottom=0)
    ax.minorticks_off()
    ax.set_xlabel("file size")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    # Beside the axes, so no point is hidden under it.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path)
    return path


def throughput(path: Path, series: Series, dashed: tuple[str, ...] = (),
               colors: dict[str, str] | None = None) -> Path:
    """MB/s against file size: a flat line means time grows linearly with
    size. Log y: a page-cache cp runs ~10x faster and would flatten the rest."""
    return size_curves(path, "Upload throughput vs file size (median of rounds)", "MB/s (1 MB = 10^6 bytes)",
                       series, dashed=dashed, colors=colors, logy=True)


def rss_growth(path: Path, series: Series, limit: float, dashed: tuple[str, ...] = (),
               colors: dict[str, str] | None = None) -> Path:
    """Peak-RSS growth in MiB (series values) against file size, with the goal
    as a line: a flat curve under it means memory does not scale with the upload."""
    return size_curves(path, "Gateway worker peak RSS growth vs file size (VmHWM over VmRSS after a 1 KiB upload)",
                       "peak RSS growth (MiB)", series, dashed=dashed, colors=colors, limit=limit,
                       limit_label=f"goal <= {limit:g} MiB")
