"""Pixel maps onto a patch grid, and back: pure numpy, no model.

A grid of `rows` x `cols` cuts an H x W map along the edges

    y_i = floor(i * H / rows)  (i = 0..rows)      x_j = floor(j * W / cols)  (j = 0..cols)

so every pixel lies in exactly one cell and cells differ by at most one pixel when H or W is not
divisible by the grid. `aggregate` sums the pixels of each cell, so the cell scores add up to the
pixel total exactly (up to float rounding): Integrated Gradients' completeness survives. `spread`
is its inverse for display: a cell's score shared evenly among its pixels (aggregate(spread(s)) == s).

Units are named row-major: "r0c0", "r0c1", ..., "r{rows-1}c{cols-1}".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from core.errors import UserError


def as_grid(grid: int | Sequence[int], height: int, width: int) -> tuple[int, int]:
    """(rows, cols) from an int (square grid) or a pair; UserError unless 1 <= rows <= H and 1 <= cols <= W."""
    if isinstance(grid, (int, np.integer)) and not isinstance(grid, bool):
        rows = cols = int(grid)
    else:
        try:
            rows, cols = (int(value) for value in grid)
        except (TypeError, ValueError):
            raise UserError(f"The patch grid must be a number or a pair (rows, cols), not {grid!r}.") from None
    if not (1 <= rows <= height and 1 <= cols <= width):
        raise UserError(
            f"The patch grid must have between 1 and {height} rows and 1 and {width} columns for a "
            f"{width}x{height} model input (got {rows}x{cols})."
        )
    return rows, cols


def edges(size: int, parts: int) -> np.ndarray:
    """The parts + 1 cut positions along one side: floor(i * size / parts)."""
    return (np.arange(parts + 1) * size) // parts


def cell_boxes(height: int, width: int, grid: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Each cell's [x0, y0, x1, y1] (end exclusive) in the map's pixels, row-major."""
    ys, xs = edges(height, grid[0]), edges(width, grid[1])
    return [(int(xs[c]), int(ys[r]), int(xs[c + 1]), int(ys[r + 1])) for r in range(grid[0]) for c in range(grid[1])]


def unit_names(grid: tuple[int, int]) -> list[str]:
    return [f"r{r}c{c}" for r in range(grid[0]) for c in range(grid[1])]


def aggregate(pixel_map: np.ndarray, grid: int | Sequence[int]) -> np.ndarray:
    """Sum an (H, W) map — or (C, H, W) / (1, C, H, W), channels summed first — into a (rows, cols) grid.

    Uses cumulative sums at the cell edges, so each cell is the exact sum of its pixels and
    aggregate(m).sum() == m.sum() up to float64 rounding.
    """
    values = np.asarray(pixel_map, dtype=np.float64)
    while values.ndim > 2:
        values = values.sum(axis=0)
    if values.ndim != 2:
        raise ValueError(f"a pixel map must be 2-D (H, W) after summing channels, got shape {np.shape(pixel_map)}")
    height, width = values.shape
    rows, cols = as_grid(grid, height, width)
    ys, xs = edges(height, rows), edges(width, cols)
    # np.add.reduceat sums the slices between consecutive edges (each edge is strictly increasing here).
    return np.add.reduceat(np.add.reduceat(values, ys[:-1], axis=0), xs[:-1], axis=1)


def spread(scores: np.ndarray | Sequence[float], grid: Sequence[int], height: int, width: int) -> np.ndarray:
    """An (H, W) map in which each cell's pixels share its score evenly (the inverse of `aggregate`)."""
    rows, cols = as_grid(grid, height, width)
    cells = np.asarray(scores, dtype=np.float64).reshape(rows, cols)
    ys, xs = edges(height, rows), edges(width, cols)
    area = np.outer(np.diff(ys), np.diff(xs))
    return np.repeat(np.repeat(cells / area, np.diff(ys), axis=0), np.diff(xs), axis=1)


def cell_mask(height: int, width: int, grid: Sequence[int]) -> np.ndarray:
    """(H, W) int map of each pixel's cell index (row-major): Captum's `feature_mask` for one feature per cell."""
    rows, cols = as_grid(grid, height, width)
    row_of = np.repeat(np.arange(rows), np.diff(edges(height, rows)))
    col_of = np.repeat(np.arange(cols), np.diff(edges(width, cols)))
    return row_of[:, None] * cols + col_of[None, :]


def boxes_intersect(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two [x0, y0, x1, y1] boxes (end exclusive) share any area."""
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


__all__ = ["aggregate", "as_grid", "boxes_intersect", "cell_boxes", "cell_mask", "edges", "spread", "unit_names"]
