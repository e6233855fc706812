"""Train/val/test assignment of natural-sorted files by the official S4 rule (contiguous slices).

Counts only; never reorders or shuffles files, and never returns an empty split silently.

Rule, for N files and fractions f = (f_train, f_val, f_test), as the official loader computes it:
  boundary_1 = int(N * f_train),  boundary_2 = int(N * (f_train + (1 - f_train) * f_val / (f_val + f_test)))
  train = files[0 : boundary_1], val = files[boundary_1 : boundary_2], test = files[boundary_2 : N]
With f_val = f_test this is the official files[int(ratio_min * N) : int(ratio_max * N)] with ratio_max of
val = train_percentage + (1 - train_percentage) / 2, float for float (no rounding, so N = 2150 gives the
official 1892 / 128 / 130). For 88/6/6 and the 241 YouTubeMix files: 212 / 14 / 15.
"""

import math

from study.data import DataError
from study.data.settings import SPLIT_NAMES


def split_counts(file_count: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """Files per split (train, val, test) for `file_count` files; may contain zeros."""
    train, val, test = fractions
    rest = val + test
    val_end = train + (1 - train) * val / rest if rest > 0 else 1.0
    boundaries = [min(file_count, int(file_count * train)), min(file_count, int(file_count * val_end))]
    edges = [0, *boundaries, file_count]
    return tuple(edges[k + 1] - edges[k] for k in range(len(fractions)))


def minimum_files(fractions: tuple[float, ...]) -> int | None:
    """Smallest N such that every file count >= N gives each split at least one file (None: never)."""
    smallest = min(fractions)
    if smallest <= 0:
        return None
    # From N >= 1/min(f) on, floor(a) - floor(b) >= floor(a - b) >= 1 for every split.
    guaranteed = math.ceil(1 / smallest - 1e-9)
    lowest = guaranteed
    while lowest > 1 and min(split_counts(lowest - 1, fractions)) >= 1:
        lowest -= 1
    return lowest


def describe(fractions: tuple[float, ...]) -> str:
    """'88/6/6' for (0.88, 0.06, 0.06)."""
    return "/".join(f"{fraction * 100:g}" for fraction in fractions)


def checked_split_counts(file_count: int, fractions: tuple[float, ...]) -> tuple[int, ...]:
    """split_counts, or a DataError naming the empty split, the file count and the fix."""
    counts = split_counts(file_count, fractions)
    for name, count in zip(SPLIT_NAMES, counts):
        if count == 0:
            needed = minimum_files(fractions)
            need = (f"the {describe(fractions)} split needs at least {needed}" if needed is not None
                    else f"the {describe(fractions)} split gives it a zero fraction")
            raise DataError(
                f"{name} split has 0 files: {file_count} usable files found, {need}; "
                f"add files or set data.split=[0.6,0.2,0.2] (train, val, test fractions)"
            )
    return counts
