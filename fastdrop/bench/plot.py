"""The bench's plot: throughput against size, one line per peer, one subplot per dtype (matplotlib,
the optional extra fastdropout[plot])."""
from __future__ import annotations

from typing import Optional, Sequence

from .peers import FASTDROP_FAMILY, FLOOR_FAMILY, registry
from .records import Record

PLOT_INSTALL_HINT = 'pip install "fastdropout[plot]"'


def plot_available() -> Optional[str]:
    """Whether `plot` can draw here.

    Returns
    -------
    str or None
        None when matplotlib and its Agg backend import, else why not.
    """
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as error:
        return f"matplotlib is not importable ({error})"
    return None


def line_style(name: str, index: int) -> dict:
    """matplotlib's style for peer `name`, the `index`-th line: floors black and dashed,
    fastdrop's peers solid, the others dotted, each in a colour and marker of its own.

    Parameters
    ----------
    name : str
    index : int

    Returns
    -------
    dict
        Keyword arguments for ``Axes.plot``.
    """
    peer = registry().get(name)
    family = None if peer is None else peer.family
    if family == FLOOR_FAMILY:
        return {"color": "black", "linestyle": "--" if index % 2 == 0 else "-.", "marker": "s"}
    return {"color": f"C{index % 10}", "marker": "osD^v<>ph*"[index % 10],
            "linestyle": "-" if family == FASTDROP_FAMILY else ":"}


def plot(records: Sequence[Record], path: str, title: str = "") -> None:
    """Draw throughput against size, one line per peer, one subplot per dtype, as a PNG.

    Uses matplotlib's Agg canvas directly, without pyplot, so the global backend is untouched.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `fastdrop.bench.Results.records`.
    path : str
        Where to write the PNG.
    title : str, optional
        The figure's title (e.g. the machine line).

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install "fastdropout[plot]"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dtypes = list(dict.fromkeys(record.dtype for record in records))
    names = list(dict.fromkeys(record.peer for record in records))
    figure = Figure(figsize=(6.5 * max(len(dtypes), 1), 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, max(len(dtypes), 1), sharey=True, squeeze=False)[0]
    for ax, dtype in zip(axes, dtypes):
        for k, name in enumerate(names):
            points = sorted((r.size, r.gb_per_s) for r in records
                            if r.dtype == dtype and r.peer == name)
            if not points:
                continue
            ax.plot([p[0] for p in points], [p[1] for p in points], label=name, linewidth=1.6,
                    markersize=5, **line_style(name, k))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(dtype)
        ax.set_xlabel("elements per array")
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.15)
    axes[0].set_ylabel("throughput, GB/s (bytes read + written)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize="small")
    if title:
        figure.suptitle(title, fontsize="small")
    figure.savefig(path, format="png", dpi=100)
