"""Fixtures of the data tests; helpers live in data_test_helpers.py."""

import pytest
from data_test_helpers import paths_config


@pytest.fixture
def paths(tmp_path):
    """The `paths` config group pointed at tmp_path."""
    return paths_config(tmp_path)
