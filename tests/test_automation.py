"""Sensors, schedules and jobs: the corpus fingerprint, the corpus sensor's ticks, the daily
cost report schedule and job, and the automation-condition sensor's settings."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone

import dagster as dg
import pytest

from resources.compute import Compute
from synth_assets.automation import automation_sensor
from synth_assets.definitions import defs as project_defs
from synth_assets.ingest.corpus_sensor import corpus_change_sensor, corpus_fingerprint, watched_corpus_paths
from synth_assets.ingest.raw_stack_plus import CORPUS_PATHS_ENV
from synth_assets.reports.schedules import cost_report_job, daily_cost_report_schedule
from synth_assets.reports.cost_report import cost_report
from synth_assets.ingest.sources import stdlib_path


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "a.py").write_text("def a():\n    return 1\n")
    (root / "b.jsonl").write_text('{"content": "x = 1"}\n')
    (root / "notes.txt").write_text("not read by the ingest")
    (root / "__pycache__").mkdir()
    (root / "tests").mkdir()
    (root / "tests" / "test_a.py").write_text("pruned by the ingest")
    return root


def test_fingerprint_changes_only_for_files_the_ingest_reads(corpus):
    paths = [str(corpus)]
    first = corpus_fingerprint(paths)
    assert first.files == 2 and first.missing == ()
    assert corpus_fingerprint(paths) == first

    # files the ingest ignores: other suffixes, bytecode caches, pruned directories
    (corpus / "notes.txt").write_text("edited")
    (corpus / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\x00bytecode")
    (corpus / "tests" / "test_a.py").write_text("edited, still pruned")
    assert corpus_fingerprint(paths) == first

    (corpus / "pkg" / "new.py").write_text("x = 2\n")
    added = corpus_fingerprint(paths)
    assert added.digest != first.digest and added.files == 3

    a = corpus / "pkg" / "a.py"
    a.write_text("def a():\n    return 2\n")  # same size, new mtime
    stat = a.stat()
    os.utime(a, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    modified = corpus_fingerprint(paths)
    assert modified.digest != added.digest and modified.files == 3

    (corpus / "pkg" / "new.py").unlink()
    assert corpus_fingerprint(paths).digest not in {added.digest, modified.digest}


def test_fingerprint_of_a_missing_path_is_recorded(tmp_path):
    missing = str(tmp_path / "nowhere")
    fingerprint = corpus_fingerprint([missing])
    assert fingerprint.missing == (missing,) and fingerprint.files == 0
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "a.py").write_text("x = 1\n")
    assert corpus_fingerprint([missing]).digest != fingerprint.digest


def test_watched_paths_come_from_the_env_or_default_to_the_stdlib(monkeypatch, tmp_path):
    monkeypatch.delenv(CORPUS_PATHS_ENV, raising=False)
    assert watched_corpus_paths() == [stdlib_path()]
    monkeypatch.setenv(CORPUS_PATHS_ENV, os.pathsep.join([str(tmp_path / "a"), "", str(tmp_path / "b")]))
    assert watched_corpus_paths() == [str(tmp_path / "a"), str(tmp_path / "b")]


def tick(instance, cursor=None) -> dg.SensorResult:
    return corpus_change_sensor(dg.build_sensor_context(instance=instance, cursor=cursor))


def test_corpus_sensor_registers_shards_and_requests_only_changed_ones(monkeypatch, corpus):
    monkeypatch.setenv(CORPUS_PATHS_ENV, str(corpus))
    shards = dg.AssetKey("corpus_shards")
    with dg.instance_for_test() as instance:
        # never materialized: the first tick registers the shard and asks for the first ingest
        first = tick(instance)
        assert [r.asset_selection for r in first.run_requests] == [[dg.AssetKey("raw_stack_plus")]]
        (added,) = first.dynamic_partitions_requests
        assert added.partitions_def_name == "corpus_shard" and added.partition_keys == ["corpus:tree-0000-of-0001"]
        instance.add_dynamic_partitions("corpus_shard", added.partition_keys)

        instance.report_runless_asset_event(dg.AssetMaterialization("raw_stack_plus"))
        # materialized before: the first tick only records the fingerprints
        recorded = tick(instance)
        assert not recorded.run_requests and not recorded.dynamic_partitions_requests
        assert "first tick" in recorded.skip_reason.skip_message
        state = json.loads(recorded.cursor)
        assert state["digest"] == corpus_fingerprint([str(corpus)]).digest and state["files"] == 2
        assert list(state["shards"]) == ["corpus:tree-0000-of-0001"]

        unchanged = tick(instance, recorded.cursor)
        assert not unchanged.run_requests and "unchanged" in unchanged.skip_reason.skip_message

        (corpus / "pkg" / "new.py").write_text("x = 2\n")
        changed = tick(instance, unchanged.cursor)
        (request,) = changed.run_requests  # the changed shard, not the whole corpus
        assert request.asset_selection == [shards] and request.partition_key == "corpus:tree-0000-of-0001"
        assert request.tags["synth_assets/trigger"] == "corpus_change"
        assert json.loads(changed.cursor)["files"] == 3

        assert not tick(instance, changed.cursor).run_requests

        # changing back is a change too, and gets its own run key
        (corpus / "pkg" / "new.py").unlink()
        reverted = tick(instance, changed.cursor)
        (again,) = reverted.run_requests
        assert again.run_key != request.run_key and again.partition_key == request.partition_key
        assert json.loads(reverted.cursor)["digest"] == state["digest"]

        # a shard whose files are gone is removed from the partitions, and the corpus re-deduplicated
        instance.add_dynamic_partitions("corpus_shard", ["gone:tree-0000-of-0001"])
        removed = tick(instance, json.dumps({**json.loads(reverted.cursor), "digest": "old",
                                             "shards": {**state["shards"], "gone:tree-0000-of-0001": "x"}}))
        (deleted,) = removed.dynamic_partitions_requests
        assert deleted.partition_keys == ["gone:tree-0000-of-0001"]
        assert [r.asset_selection for r in removed.run_requests] == [[dg.AssetKey("raw_stack_plus")]]


def test_corpus_sensor_survives_a_missing_path_and_a_bad_cursor(monkeypatch, tmp_path):
    monkeypatch.setenv(CORPUS_PATHS_ENV, str(tmp_path / "not-yet"))
    with dg.instance_for_test() as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("raw_stack_plus"))
        result = tick(instance, cursor="not json")
        assert not result.run_requests and json.loads(result.cursor)["files"] == 0


def test_daily_schedule_materializes_cost_report(warehouse, tmp_path):
    assert daily_cost_report_schedule.cron_schedule == "0 6 * * *"
    assert daily_cost_report_schedule.execution_timezone == "UTC"
    defs = dg.Definitions(
        assets=[cost_report],
        jobs=[cost_report_job],
        schedules=[daily_cost_report_schedule],
        # corpus_change_sensor targets corpus_shards and raw_stack_plus, which this code location does not hold
        sensors=[automation_sensor],
        resources={"compute": Compute(), "warehouse": warehouse},
    )
    dg.Definitions.validate_loadable(defs)

    schedule = defs.resolve_schedule_def("daily_cost_report_schedule")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 1, 2, 6, 0, tzinfo=timezone.utc)
        )
        (request,) = schedule.evaluate_tick(context).run_requests
        assert schedule.job_name == "cost_report_job"

        job = defs.resolve_job_def("cost_report_job")
        assert job.asset_layer.selected_asset_keys == {dg.AssetKey("cost_report")}
        run_config = {"ops": {"cost_report": {"config": {"report_path": str(tmp_path / "report.html")}}}}
        result = job.execute_in_process(instance=instance, run_config=run_config, tags=request.tags)
        assert result.success
    assert (tmp_path / "report.html").exists()
    assert warehouse.table_exists("cost_report")


def test_automation_sensor_targets_everything_and_runs_by_default():
    assert automation_sensor.name == "automation_sensor"
    assert automation_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert automation_sensor.minimum_interval_seconds == 30
    assert corpus_change_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {s.name for s in project_defs.sensors} == {"automation_sensor", "corpus_change_sensor"}
