"""SYNTH_ASSETS_DUCKDB_MEMORY_LIMIT bounds the process's DuckDB buffer pool (the lever that
keeps a 1M-document ingest under its memory target: sorts and joins spill beyond it)."""

from resources.warehouse import Warehouse
from resources.warehouse.lake import MEMORY_LIMIT_ENV_VAR


def memory_limit(warehouse: Warehouse) -> str:
    return warehouse.query("SELECT current_setting('memory_limit') AS m")["m"][0]


def test_the_env_var_sets_duckdbs_memory_limit_and_unset_keeps_its_default(tmp_path, monkeypatch):
    default = memory_limit(Warehouse(path=str(tmp_path / "default")))
    monkeypatch.setenv(MEMORY_LIMIT_ENV_VAR, "1GB")
    limited = memory_limit(Warehouse(path=str(tmp_path / "limited")))
    assert limited in ("953.6 MiB", "1.0 GiB", "1.0 GB") and default != limited
