"""The bench's plot: throughput against size, one line per peer, one subplot per dtype (matplotlib,
the optional extra fastdropout[plot])."""
from __future__ import annotations

import textwrap
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
    # Ten colours and eleven markers: no two of the first 110 lines look alike.
    return {"color": f"C{index % 10}", "marker": "osD^v<>ph*X"[index % 11],
            "linestyle": "-" if family == FASTDROP_FAMILY else ":"}


# The legend's columns per subplot, and the height of one of its rows, in inches.
LEGEND_COLUMNS_PER_SUBPLOT = 2
LEGEND_ROW_INCHES = 0.22


def figure(records: Sequence[Record], title: str = ""):
    """Throughput against size, one line per peer, one subplot per dtype, as a matplotlib Figure
    on the Agg canvas (without pyplot, so the global backend is untouched).  The figure grows
    with the number of peers so that the legend below the subplots and the title, wrapped to the
    figure's width, fit inside it.

    Parameters
    ----------
    records : sequence of Record
        The main table, as in `fastdrop.bench.Results.records`.
    title : str, optional
        The figure's title (e.g. the machine line).

    Returns
    -------
    matplotlib.figure.Figure

    Raises
    ------
    ImportError
        When matplotlib is not installed (``pip install "fastdropout[plot]"``).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dtypes = list(dict.fromkeys(record.dtype for record in records))
    names = list(dict.fromkeys(record.peer for record in records))
    subplots = max(len(dtypes), 1)
    columns = LEGEND_COLUMNS_PER_SUBPLOT * subplots
    legend_rows = -(-len(names) // columns)
    width = 6.5 * subplots
    result = Figure(figsize=(width, 6.0 + LEGEND_ROW_INCHES * legend_rows), layout="constrained")
    FigureCanvasAgg(result)
    axes = result.subplots(1, subplots, sharey=True, squeeze=False)[0]
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
    # Every peer once, in the registry's order, whichever subplot drew it (some run on one
    # dtype only).
    lines = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            lines.setdefault(label, handle)
    order = list(registry())
    labels = sorted(lines, key=lambda name: order.index(name) if name in order else len(order))
    result.legend([lines[name] for name in labels], labels, loc="outside lower center",
                  ncol=columns, fontsize="small")
    if title:
        result.suptitle(textwrap.fill(title, width=int(12 * width)), fontsize="small")
    return result


def plot(records: Sequence[Record], path: str, title: str = "") -> None:
    """Write `figure` (throughput against size, one line per peer, one subplot per dtype) to
    `path` as a PNG.

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
    figure(records, title).savefig(path, format="png", dpi=100)
