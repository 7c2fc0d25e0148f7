"""Grid geometry: parsing ``RxC``/``auto`` grid shapes and putting points and cells in one box.

Grid assignment minimises squared distances between points and cell centres, so both must
live in the same coordinate frame; this module owns that frame: grid units, where cell
``(row, col)`` has its centre at ``(col + 0.5, row + 0.5)`` (x to the right, y = row downwards).
"""
import math
import re

import numpy as np

_SHAPE_RE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_grid(spec):
    """``"32x24"`` -> ``(32, 24)`` (rows, cols); ``"auto"``/``None`` -> ``None``.

    Raises
    ------
    ValueError
        When ``spec`` is neither ``auto`` nor ``RxC`` with positive integers.
    """
    if spec is None:
        return None
    if isinstance(spec, (tuple, list)):
        if len(spec) != 2:
            raise ValueError(f"grid must be (rows, cols), got {spec!r}")
        rows, cols = (int(v) for v in spec)
    else:
        text = str(spec).strip().lower()
        if text == "auto":
            return None
        match = _SHAPE_RE.match(text)
        if not match:
            raise ValueError(f"grid must be 'auto' or ROWSxCOLS such as '32x32', got {spec!r}")
        rows, cols = int(match.group(1)), int(match.group(2))
    if rows <= 0 or cols <= 0:
        raise ValueError(f"grid rows and columns must be positive, got {spec!r}")
    return rows, cols


def auto_grid(n):
    """The smallest near-square grid with at least ``n`` cells: ``cols = ceil(sqrt(n))``.

    Rows are then ``ceil(n / cols)``, so at most one row is partly empty and the grid is
    square or one row shorter than wide (e.g. 1,000 -> 32x32, 1,024 -> 32x32, 990 -> 31x32).
    """
    if n <= 0:
        raise ValueError(f"cannot size a grid for {n!r} images")
    cols = math.isqrt(n - 1) + 1 if n > 1 else 1
    rows = -(-n // cols)
    return rows, cols


def resolve_grid(spec, n):
    """The (rows, cols) to use for ``n`` images: ``spec`` parsed, or :func:`auto_grid`."""
    shape = parse_grid(spec)
    return auto_grid(n) if shape is None else shape


def to_grid_units(xy, shape, reference=None):
    """Scale 2-D points so that they span the cell centres of a ``shape`` grid.

    Each axis is min-max scaled independently (as in the original gridded t-SNE recipe), x to
    ``[0.5, cols - 0.5]`` and y to ``[0.5, rows - 0.5]``: the extreme points then land exactly on
    the outermost cell centres, which keeps the squared cost free of a border offset.
    With ``reference`` (other points of the same map, e.g. the old images when new ones are
    added), the scaling is the one of ``reference``, so both sets share one frame.

    Returns a float64 array of shape (n, 2) with columns (x, y) in grid units.
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"points must have shape (n, 2), got {xy.shape!r}")
    ref = xy if reference is None else np.asarray(reference, dtype=np.float64)
    if ref.ndim != 2 or ref.shape[1] != 2 or len(ref) == 0:
        raise ValueError(f"reference points must have shape (n, 2), got {ref.shape!r}")
    rows, cols = shape
    lo = ref.min(axis=0)
    span = ref.max(axis=0) - lo
    span[span == 0] = 1.0
    unit = (xy - lo) / span
    out = np.empty_like(unit)
    out[:, 0] = 0.5 + unit[:, 0] * (cols - 1)
    out[:, 1] = 0.5 + unit[:, 1] * (rows - 1)
    return out


def cell_centres(shape, cells=None):
    """Centres (x, y) in grid units of the flat cell indices ``cells`` (all cells by default)."""
    rows, cols = shape
    cells = np.arange(rows * cols) if cells is None else np.asarray(cells)
    r, c = np.divmod(cells, cols)
    return np.stack([c + 0.5, r + 0.5], axis=1).astype(np.float64)
