"""DuckDB extensions from their PyPI wheels, never from DuckDB's extension server.

`duckdb-extension-ducklake`, `-sqlite`, `-postgres` and `-httpfs` ship the compiled
`.duckdb_extension` file inside the wheel; their version must equal DuckDB's (pinned in
pyproject.toml). `INSTALL '<file>'` copies it into DuckDB's extension directory under its
canonical name, `LOAD` then finds it there. Autoinstall stays off, so a missing wheel is a
clear error here instead of a download attempt at run time.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import duckdb

# extension -> the wheel's Python package
WHEELS = {
    "ducklake": "duckdb_extension_ducklake",
    "sqlite": "duckdb_extension_sqlite",
    "postgres": "duckdb_extension_postgres",
    "httpfs": "duckdb_extension_httpfs",
}

OFFLINE_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


class ExtensionMissing(RuntimeError):
    """An extension's wheel is not installed, or was built for another DuckDB version."""


@cache
def extension_file(name: str) -> Path:
    """The `.duckdb_extension` file inside the extension's wheel, for this DuckDB version."""
    package = WHEELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionMissing(
            f"DuckDB extension {name!r} needs the PyPI package {package.replace('_', '-')}=={duckdb.__version__}"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    wanted = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if wanted.exists():
        return wanted
    found = sorted(root.glob(f"extensions/*/{name}.duckdb_extension"))
    raise ExtensionMissing(
        f"{package.replace('_', '-')} ships {', '.join(p.parent.name for p in found) or 'no extension'}, "
        f"but DuckDB is {duckdb.__version__}: pin both to the same version"
    )


def load_extensions(conn: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    for name in names:
        conn.execute(f"INSTALL '{extension_file(name)}'")
        conn.execute(f"LOAD {name}")
