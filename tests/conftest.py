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


@pytest.fixture(autouse=True)
def _no_persistent_dagster_home(monkeypatch):
    """`dg.instance_for_test()` points DAGSTER_HOME at a temporary folder it deletes on
    exit; make sure no test inherits a home that another test left behind."""
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    # Dagster 1.13 keeps the entered instance's defs-state storage in a ContextVar; when a
    # test instance is closed out of order the variable keeps pointing at its deleted
    # sqlite folder and every later `materialize()` fails with "unable to open database
    # file". Start each test with no current storage, as a fresh process has.
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
