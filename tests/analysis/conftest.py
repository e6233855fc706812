"""Fixtures of the analysis tests: a small runs folder written fresh for each test."""

import pytest
from analysis_fixture import build_fixture


@pytest.fixture
def fixture(tmp_path):
    """Three studies (replicate: 3 smoke seeds, ablation: full with a failed trial, grid-dropout)."""
    return build_fixture(tmp_path)
