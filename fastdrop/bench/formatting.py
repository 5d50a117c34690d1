"""How the bench writes its numbers: sizes, shapes, byte counts and three-digit figures."""
from __future__ import annotations

from typing import Sequence

from .peers import Shape, as_shape


def format_size(size: int) -> str:
    """`size` compactly: ``10000`` as "1e4", ``64000000`` as "6.4e7", ``1234`` as "1234".

    Parameters
    ----------
    size : int

    Returns
    -------
    str
    """
    mantissa, _, exponent = f"{size:.3g}".partition("e")
    if not exponent or float(f"{size:.3g}") != size:
        return str(size)
    return f"{mantissa}e{int(exponent)}"


def format_shape(shape: Shape) -> str:
    """`shape` as "64x64x56x56" (a 1-d shape as its `format_size`)."""
    shape = as_shape(shape)
    return format_size(shape[0]) if len(shape) == 1 else "x".join(str(n) for n in shape)


def format_bytes(nbytes: float) -> str:
    """`nbytes` in decimal units, one decimal: "1.3 GB"."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes / 1e3:.1f} kB"


def number(value: float) -> str:
    """Three significant digits, without an exponent."""
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def align(header: Sequence[str], rows: Sequence[Sequence[str]], left: int,
          groups: Sequence[object] = ()) -> list:
    """`header` and `rows` in columns two spaces apart: the first `left` columns left-aligned,
    the others right-aligned; a blank line wherever `groups` (one key per row, when given)
    changes.

    Returns
    -------
    list of str
    """
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(row):
        cells = [cell.ljust(w) if k < left else cell.rjust(w)
                 for k, (cell, w) in enumerate(zip(row, widths))]
        return "  ".join(cells).rstrip()

    lines = [line(header)]
    for k, row in enumerate(rows):
        if groups and k and groups[k] != groups[k - 1]:
            lines.append("")
        lines.append(line(row))
    return lines
