"""Shared fixtures. Module-specific fixtures live in the test module that uses them."""

from __future__ import annotations

import os
import re
import shutil
import sysconfig
from collections.abc import Callable
from pathlib import Path

import pytest

# Tests run on throwaway Dagster instances (materialize() makes an ephemeral one; the UI
# test makes its own home). A DAGSTER_HOME left in the shell must not leak into them.
os.environ.pop("DAGSTER_HOME", None)

from resources.warehouse import Warehouse


@pytest.fixture
def warehouse(tmp_path) -> Warehouse:
    """A real DuckLake (SQLite catalog + Parquet files) in the test's temporary folder."""
    return Warehouse(path=str(tmp_path / "lake"))


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


# --------------------------------------------------------------------------- small real corpora

# A module "teaches classes" when a class statement is within its first 1000 characters
# (the UI test's grader double sees the first 1200): those and modules that never say
# "class" are the two halves of a small corpus, so an LLM double that grades by it gives
# the classifier two balanced, learnable classes.
CLASS_STATEMENT = re.compile(r"^class \w", re.MULTILINE)
_SKIPPED_DIRS = {"test", "tests", "site-packages", "idlelib", "lib2to3", "__pycache__", "turtledemo", "ensurepip"}


def _stdlib_modules(min_bytes: int = 1_500, max_bytes: int = 20_000) -> tuple[list[Path], list[Path]]:
    """(modules with an early class statement, modules without any), both sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    with_class, without_class = [], []
    for path in sorted(root.rglob("*.py")):
        if _SKIPPED_DIRS & set(path.relative_to(root).parts[:-1]) or not min_bytes <= path.stat().st_size <= max_bytes:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if CLASS_STATEMENT.search(text[:1000]):
            with_class.append(path)
        elif "class" not in text:
            without_class.append(path)
    return with_class, without_class


@pytest.fixture(scope="session")
def stdlib_corpus(tmp_path_factory) -> Callable[[int], Path]:
    """`stdlib_corpus(n)`: a fresh folder holding n real standard-library modules (the
    interpreter's own files, nobody here wrote them), half with an early class statement
    and half without any, copied with their relative paths. The folder is named `stdlib`,
    so raw_stack_plus names the source as it names the default corpus (a known source)."""
    root = Path(sysconfig.get_paths()["stdlib"])

    def make(n_files: int) -> Path:
        with_class, without_class = _stdlib_modules()
        picked = with_class[: n_files // 2] + without_class[: n_files - n_files // 2]
        if len(picked) < n_files:
            raise RuntimeError(f"only {len(picked)} suitable standard-library modules for a {n_files}-file corpus")
        corpus = tmp_path_factory.mktemp("corpus") / "stdlib"
        for path in picked:
            target = corpus / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        return corpus

    return make


@pytest.fixture(scope="module")
def local_cluster():
    """One real local Ray cluster (2 CPUs) for the module that asks for it (~5 s to start),
    joined by `Compute(ray_address="local")` in the module's tests; shut down after them."""
    ray = pytest.importorskip("ray")
    from resources.compute import Compute

    from tests.openai_double import TEST_KEY, TEST_KEY_ENV

    # the test double's key in every process of the cluster (workers, the LLM relay actor),
    # as a user sets OPENAI_API_KEY on every node
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {TEST_KEY_ENV: TEST_KEY}})
    yield Compute(ray_address="local", num_cpus=2)
    ray.shutdown()
