"""The k nearest benchmark problems per exercise from a score matrix: what every
similarity signal hands the functional signal as its candidates."""

from __future__ import annotations

import numpy as np


def top_positions(scores: np.ndarray, k: int) -> list[tuple[int, ...]]:
    """Per row of a (rows x problems) score matrix, the positions of its k highest
    scores, best first (rows of all-zero scores give none)."""
    if k <= 0 or not scores.size:
        return [()] * len(scores)
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(scores, part, axis=1).argsort(axis=1)[:, ::-1]
    ranked = np.take_along_axis(part, order, axis=1)
    return [tuple(int(j) for j in row if scores[r, j] > 0) for r, row in enumerate(ranked)]
