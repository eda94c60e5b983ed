"""Shared fixtures. Module-specific fixtures live in the test module that uses them."""

from __future__ import annotations

import pytest

from resources.warehouse import Warehouse


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    """A real DuckDB file in the test's temporary folder."""
    return Warehouse(path=str(tmp_path / "warehouse.duckdb"))
