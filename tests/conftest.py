"""Shared fixtures. Module-specific fixtures live in the test module that uses them."""

from __future__ import annotations

import os

import pytest

# Tests run on throwaway Dagster instances (materialize() makes an ephemeral one; the UI
# test makes its own home). A DAGSTER_HOME left in the shell must not leak into them.
os.environ.pop("DAGSTER_HOME", None)

from resources.warehouse import Warehouse


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    """A real DuckDB file in the test's temporary folder."""
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"))
