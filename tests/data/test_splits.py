"""Split rule: the official int(ratio * N) slices, minimum file counts, and the empty-split error."""

import math

import pytest

from study.data import DataError
from study.data.splits import checked_split_counts, minimum_files, split_counts

OFFICIAL = (0.88, 0.06, 0.06)


def official_slices(n: int) -> tuple[int, int, int]:
    """The official loader: files[int(ratio_min * N) : int(ratio_max * N)] with ratio_max of val
    train_percentage + (1 - train_percentage) / 2, as its QuantizedAutoregressiveAudio.setup writes it."""
    train_percentage = 0.88
    edges = [0, int(train_percentage * n), int((train_percentage + (1 - train_percentage) / 2) * n), n]
    return tuple(edges[k + 1] - edges[k] for k in range(3))


def test_youtubemix_241_files_split_212_14_15():
    assert split_counts(241, OFFICIAL) == (212, 14, 15)


def test_counts_match_the_official_slices_and_sum_to_n():
    for n in range(1, 5000):
        counts = split_counts(n, OFFICIAL)
        assert sum(counts) == n
        assert counts == official_slices(n), n


def test_2150_files_split_as_the_official_float_arithmetic_does():
    # 0.94 * 2150 = 2020.9999999999998: the official int() gives 2020, not 2021
    assert split_counts(2150, OFFICIAL) == (1892, 128, 130)


def test_toy_default_32_clips_have_val_and_test_files():
    assert split_counts(32, OFFICIAL) == (28, 2, 2)
    assert min(split_counts(24, OFFICIAL)) >= 1


@pytest.mark.parametrize("fractions", [OFFICIAL, (0.6, 0.2, 0.2), (0.8, 0.1, 0.1), (0.5, 0.25, 0.25)])
def test_minimum_files_is_the_smallest_count_from_which_every_split_is_nonempty(fractions):
    lowest = minimum_files(fractions)
    assert all(min(split_counts(n, fractions)) >= 1 for n in range(lowest, lowest + 500))
    assert min(split_counts(lowest - 1, fractions)) == 0
    assert lowest <= math.ceil(1 / min(fractions))


def test_empty_split_error_names_split_counts_and_fix():
    with pytest.raises(DataError) as caught:
        checked_split_counts(5, OFFICIAL)
    message = str(caught.value)
    assert "val split has 0 files" in message
    assert "5 usable files" in message
    assert "88/6/6 split needs at least 9" in message
    assert "data.split=" in message
    with pytest.raises(DataError, match="test split has 0 files"):
        checked_split_counts(4, (0.5, 0.5, 0.0))
